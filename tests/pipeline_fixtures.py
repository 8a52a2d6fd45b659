"""Fixtures and data makers for the pipeline tests (kept out of the shared conftest.py on purpose).

Test modules import what they use: `from pipeline_fixtures import ray_cluster, make_dataset, ...`
(pytest puts tests/ on sys.path). Every fixture here is cheap to share: one Ray local cluster and one
moto server per test session.
"""

from __future__ import annotations

import atexit
import io
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

VENV_BIN = Path(sys.executable).parent
MOTO_KEY = "AKIAPIPELINETEST0001"
MOTO_SECRET = "pipeline-test-secret-9f3b7c1e2d"  # searched for in every written file


def _image(mode: str, w: int, h: int, seed: int) -> Image.Image:
    """A smooth gradient with noise: compressible but not trivial, like a small photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = (x * 255 // max(w - 1, 1) + y * 128 // max(h - 1, 1)) % 256
    bands = {"RGB": 3, "RGBA": 4, "L": 1}[mode if mode in ("RGB", "RGBA", "L") else "RGB"]
    arr = np.stack([(base + 40 * c + rng.integers(0, 16, base.shape)) % 256 for c in range(bands)], -1)
    arr = arr.astype(np.uint8)
    if bands == 1:
        return Image.fromarray(arr[..., 0], "L")
    img = Image.fromarray(arr, "RGBA" if bands == 4 else "RGB")
    return img if mode in ("RGB", "RGBA") else img.convert(mode)


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


# key -> expected status. Sizes stay tiny: the learned codec runs on 2 shared CPU cores.
EXPECTED_STATUS = {
    "a/rgb.png": "ok",
    "a/gray.png": "ok",
    "a/rgba.png": "ok",
    "a/palette.png": "ok",
    "b/image.bmp": "ok",
    "b/image.tif": "ok",
    "b/image.ppm": "ok",
    "b/lossless.webp": "ok",
    "c/photo.jpg": "stored",
    "c/lossy.webp": "stored",
    "d/truncated.png": "error",
    "d/not-an-image.png": "error",
    "d/too-big.png": "error",
    "e/deep/nested/name with space.png": "ok",
}
TEST_MAX_PIXELS = 40_000  # d/too-big.png is 256x200 = 51,200 pixels


def make_dataset(root: Path) -> dict[str, bytes]:
    """Write the mixed test dataset under root; returns {key: file bytes}."""
    files: dict[str, bytes] = {
        "a/rgb.png": _save(_image("RGB", 40, 32, 1), "PNG"),
        "a/gray.png": _save(_image("L", 33, 17, 2), "PNG"),
        "a/rgba.png": _save(_image("RGBA", 24, 24, 3), "PNG"),
        "a/palette.png": _save(_image("P", 20, 20, 4), "PNG"),
        "b/image.bmp": _save(_image("RGB", 32, 32, 5), "BMP"),
        "b/image.tif": _save(_image("RGB", 31, 29, 6), "TIFF"),
        "b/image.ppm": _save(_image("RGB", 16, 40, 7), "PPM"),
        "b/lossless.webp": _save(_image("RGB", 32, 24, 8), "WEBP", lossless=True),
        "c/photo.jpg": _save(_image("RGB", 48, 32, 9), "JPEG", quality=85),
        "c/lossy.webp": _save(_image("RGB", 32, 32, 10), "WEBP", quality=80),
        "d/not-an-image.png": b"this is not a PNG file at all\n" * 4,
        "d/too-big.png": _save(Image.new("L", (256, 200), 7), "PNG"),
        "e/deep/nested/name with space.png": _save(_image("RGB", 24, 16, 11), "PNG"),
    }
    good = _save(_image("RGB", 40, 40, 12), "PNG")
    files["d/truncated.png"] = good[: len(good) // 2]
    for key, data in files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / ".hidden").mkdir(exist_ok=True)
    (root / ".hidden" / "skip.png").write_bytes(files["a/rgb.png"])
    (root / "README.txt").write_text("not an image, not included by default\n")
    assert set(files) == set(EXPECTED_STATUS)
    return files


def make_small_pngs(root: Path, n: int, size: tuple[int, int] = (32, 32)) -> dict[str, bytes]:
    """n small RGB PNGs named img-000.png ... (for resume and fault tests)."""
    out = {}
    for i in range(n):
        data = _save(_image("RGB", size[0], size[1], 100 + i), "PNG")
        (root / f"img-{i:03d}.png").write_bytes(data)
        out[f"img-{i:03d}.png"] = data
    root.mkdir(exist_ok=True)
    return out


# Session singletons: the fixtures below are imported into several test modules, and pytest makes one
# fixture definition per importing module, so the shared state lives here, created once per process.
_SESSION: dict[str, object] = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_moto() -> str | None:
    if "moto" in _SESSION:
        return _SESSION["moto"]  # type: ignore[return-value]
    exe = shutil.which("moto_server", path=str(VENV_BIN)) or shutil.which("moto_server")
    if exe is None:
        _SESSION["moto"] = None
        return None
    port = _free_port()
    proc = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    atexit.register(_stop, proc)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("moto_server did not start")
    _SESSION["moto"] = f"http://127.0.0.1:{port}"
    return _SESSION["moto"]  # type: ignore[return-value]


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def aws_vars(endpoint: str) -> dict[str, str]:
    """The standard AWS environment a user would export to reach an S3-compatible store."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": MOTO_KEY,
        "AWS_SECRET_ACCESS_KEY": MOTO_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }


@pytest.fixture(scope="session")
def moto_endpoint():
    """A real moto S3 server on 127.0.0.1, one per test session; yields its endpoint URL."""
    endpoint = _start_moto()
    if endpoint is None:
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    return endpoint


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster (2 CPUs) for the whole test session; returns its GCS address.

    Ray workers inherit the environment the cluster was started with, as on a user's machine where
    AWS_* are exported before `bitswap pipeline compress` starts a local cluster. So the AWS variables
    for the moto server are set only around ray.init: actors reach S3, this process stays clean.
    """
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
        endpoint = _start_moto()
        extra = aws_vars(endpoint) if endpoint else {}
        saved = {k: os.environ.get(k) for k in extra}
        os.environ.update(extra)
        try:
            ray.init(num_cpus=2, logging_level=logging.ERROR, include_dashboard=False, log_to_driver=False)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return ray.get_runtime_context().gcs_address


@pytest.fixture
def aws_env(moto_endpoint, monkeypatch):
    """This process gets the standard AWS environment pointing at the moto server."""
    for k, v in aws_vars(moto_endpoint).items():
        monkeypatch.setenv(k, v)
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return moto_endpoint
