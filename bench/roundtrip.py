"""One timed, verified round trip through the public API: what the coded-size benchmarks share."""

from __future__ import annotations

import time
from collections.abc import Callable

from PIL import Image

from bitswap_core import api


def timed_round_trip(image: Image.Image, model, what: str, encode: Callable[..., bytes], *args, **kwargs
                     ) -> tuple[bytes, float, float]:
    """(container bytes, encode seconds, decode seconds) of encode(*args, **kwargs) and api.decompress with
    model; exits naming `what` if the image does not come back exactly."""
    t = time.perf_counter()
    data = encode(*args, **kwargs)
    enc = time.perf_counter() - t
    t = time.perf_counter()
    back = api.decompress(data, model)
    dec = time.perf_counter() - t
    if back.tobytes() != image.tobytes():
        raise SystemExit(f"{what} did not decode exactly")
    return data, enc, dec
