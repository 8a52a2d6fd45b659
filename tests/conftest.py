"""Shared fixtures: a small random-weight model (the codec must be exact for any weights) and images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    from bitswap_core.model.config import PRESETS
    from bitswap_core.model.export import export_tensors
    from bitswap_core.model.float_model import BitSwapModel
    from bitswap_core.registry import save_model

    torch.manual_seed(0)
    model = BitSwapModel(PRESETS["tiny"]).eval()
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    save_model(path, model.cfg, export_tensors(model), {"purpose": "tests"})
    return path


@pytest.fixture(scope="session")
def tiny_model(tiny_model_path):
    from bitswap_core.registry import load_model

    return load_model(tiny_model_path)


def photo_crop(name: str = "usc-4.1.07.png", box=(0, 0, 70, 45)) -> Image.Image:
    return Image.open(SAMPLES / name).convert("RGB").crop(box)


def noise_image(h: int, w: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    c = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    arr = rng.integers(0, 256, (h, w, c), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if c == 1 else arr, mode)


def random_table(rng: np.random.Generator, n: int = 256, precision: int = 16):
    """A coder table of 5 shift-invariant rows of random steps >= 1 (any table the coder accepts will do)."""
    from bitswap_core.coding.rans import Table

    rows = []
    for _ in range(5):
        steps = rng.integers(1, 40, 2 * n)
        cdf = np.concatenate([[0], np.cumsum(steps)]).astype(np.float64)
        cdf = np.floor(cdf / cdf[-1] * ((1 << precision) - 2 * n)) + np.arange(2 * n + 1)
        rows.append(cdf.astype(np.uint32))
    return Table(np.stack(rows), n, precision)
