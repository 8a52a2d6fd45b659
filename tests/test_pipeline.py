"""The pipeline on a real local Ray cluster: CPU actors, a killed actor, an interrupted driver."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image
from pipeline_fixtures import (  # noqa: F401 - ray_cluster is a fixture, used through usefixtures
    EXPECTED_STATUS,
    TEST_MAX_PIXELS,
    make_dataset,
    make_small_pngs,
    ray_cluster,
)

from pipeline import shards
from pipeline.driver import compress
from pipeline.restore import restore

pytestmark = pytest.mark.usefixtures("ray_cluster")  # one local cluster for the whole session
REPO = Path(__file__).resolve().parents[1]


def _archived_keys(dst: Path) -> list[str]:
    """Every key in every shard file present (a duplicate or a lost image shows here)."""
    keys = []
    for f in sorted(dst.glob("shard-*.parquet")):
        keys += pq.read_table(f, columns=["key"]).column("key").to_pylist()
    return sorted(keys)


def _same_pixels(a: bytes, b: Path) -> bool:
    x, y = Image.open(io.BytesIO(a)), Image.open(b)
    return x.mode == y.mode and x.size == y.size and x.tobytes() == y.tobytes()


def test_compress_on_ray_actors_and_restore(tmp_path):
    src, dst, out = tmp_path / "src", tmp_path / "dst", tmp_path / "out"
    files = make_dataset(src)
    threads = []

    def actor_threads(result, handles):
        import ray

        threads.extend(ray.get([h.info.remote() for h in handles]))

    summary = compress(str(src), str(dst), actors=2, shard_size=4, max_pixels=TEST_MAX_PIXELS, progress=False,
        keep_smaller_originals=False, threads_per_actor=1, on_result=actor_threads)
    assert summary.actors == 2 and summary.shards_written == 4 and summary.manifest_written
    assert threads and {t["threads"] for t in threads} == {1}
    assert summary.stats.images == len(files) and summary.stats.error == 3 and summary.exit_code == 1
    assert _archived_keys(dst) == sorted(files)
    rows = {r["key"]: r for r in pq.read_table(str(dst), columns=list(shards.META_COLUMNS)).to_pylist()}
    assert {k: r["status"] for k, r in rows.items()} == EXPECTED_STATUS
    assert not (dst / shards.TMP_DIR).exists()
    result = restore(str(dst), str(out), progress=False)
    assert result.exit_code == 0 and result.restored == 11
    for key, status in EXPECTED_STATUS.items():
        if status == "stored":
            assert (out / key).read_bytes() == files[key]
        elif status == "ok":
            assert _same_pixels(files[key], out / key), key


def test_killed_actor_is_replaced_and_its_shard_redone(tmp_path):
    import ray

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    files = make_small_pngs(src, 6, (64, 48))
    results, killed = [], []

    def on_result(result, handles):
        results.append(result)
        if not killed:  # kill the other actor, which is in the middle of its first shard
            victim = next(h for h in handles if h._actor_id.hex() != result.actor_id)
            ray.kill(victim, no_restart=False)
            killed.append(victim._actor_id.hex())

    summary = compress(str(src), str(dst), actors=2, shard_size=1, progress=False, on_result=on_result)
    assert killed
    assert summary.exit_code == 0, summary.format()
    assert summary.shards_written == 6 and not summary.shards_failed
    assert len(results) == 6 and sorted(r.index for r in results) == list(range(6))
    victim_pids = {r.pid for r in results if r.actor_id == killed[0]}
    other_pids = {r.pid for r in results if r.actor_id != killed[0]}
    assert len(other_pids) == 1 and victim_pids  # the victim came back as a new process and coded shards
    assert _archived_keys(dst) == sorted(files)  # nothing lost, nothing twice
    assert not (dst / shards.TMP_DIR).exists()


def test_interrupted_driver_resumes_without_loss_or_duplicates(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    files = make_small_pngs(src, 8, (64, 48))
    import ray

    address = ray.get_runtime_context().gcs_address
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "jobs.cli", "pipeline", "compress", str(src), str(dst),
           "--address", address, "--actors", "1", "--shard-size", "1", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while not list(dst.glob("shard-*.parquet")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        output = proc.communicate(timeout=60)[0].decode(errors="replace")
    done_before = {p.name: p.stat().st_mtime_ns for p in dst.glob("shard-*.parquet")}
    assert done_before, output
    assert len(done_before) < 8, "the driver finished before it could be interrupted"
    assert not (dst / shards.MANIFEST_NAME).exists()  # an interrupted archive never looks complete

    summary = compress(str(src), str(dst), actors=1, shard_size=1, progress=False)
    assert summary.exit_code == 0, summary.format()
    # Shards finished before the kill are kept (the killed job's actor may finish one more meanwhile).
    assert summary.shards_skipped >= len(done_before)
    assert summary.shards_skipped + summary.shards_written == 8
    for name, mtime in done_before.items():
        assert (dst / name).stat().st_mtime_ns == mtime
    assert _archived_keys(dst) == sorted(files)
    assert (dst / shards.MANIFEST_NAME).exists()


@pytest.mark.parametrize("n_actors", [1])
def test_cli_on_local_cluster(tmp_path, n_actors, capsys):
    from jobs.cli import main

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    make_small_pngs(src, 3, (32, 32))
    argv = ["pipeline", "compress", str(src), str(dst), "--actors", str(n_actors), "--no-progress", "--always-code"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "images     3 (3 coded" in out and "manifest   written" in out
    assert main(["pipeline", "verify", str(dst), "--no-progress"]) == 0


GPU_CLUSTER_SCRIPT = """
import json, logging, sys
import ray
ray.init(num_cpus=2, num_gpus=1, logging_level=logging.ERROR, include_dashboard=False, log_to_driver=False)
from pipeline.driver import compress
s = compress(sys.argv[1], sys.argv[2], actors=int(sys.argv[3]), shard_size=1, progress=False)
print(json.dumps({"actors": s.actors, "cpus": s.cpus, "gpus": s.gpus, "written": s.shards_written,
                  "exit": s.exit_code}))
"""


def test_actors_share_a_gpu_cluster_and_all_start(tmp_path):
    """On a cluster with one (logical) GPU and two CPUs, three actors share both: GPU shares of 1/3 and
    CPU shares rounded down, so all three are scheduled and the job ends (shares rounded to nearest,
    3 x 0.67 CPUs, left one actor waiting forever). Without CUDA the actors fall back to the CPU; the
    bytes are the same on either device (docs/BENCHMARKS.md). Its own Ray cluster, in a subprocess."""
    src, dst, out = tmp_path / "src", tmp_path / "dst", tmp_path / "out"
    src.mkdir()
    files = make_small_pngs(src, 3, (32, 24))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               RAY_AUTH_MODE="disabled")
    proc = subprocess.run([sys.executable, "-c", GPU_CLUSTER_SCRIPT, str(src), str(dst), "3"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import json

    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["actors"] == 3 and got["written"] == 3 and got["exit"] == 0
    assert 0.99 <= got["gpus"] <= 1.0 and got["cpus"] <= 2.0
    assert restore(str(dst), str(out), progress=False).exit_code == 0
    for name, data in files.items():
        assert _same_pixels(data, out / name)
