"""Bit-Swap lossless image codec: hierarchical latent-variable model + recursive bits-back ANS coding.

Public API (see api.py): compress, decompress, compress_batch. No Ray, no fsspec in this package.
"""

from bitswap_core.errors import (
    BitswapError,
    CorruptPayloadError,
    ImageRefusedError,
    ModelMismatchError,
    UnsupportedFormatError,
)

__version__ = "0.1.0"

__all__ = [
    "BitswapError",
    "CorruptPayloadError",
    "ImageRefusedError",
    "ModelMismatchError",
    "UnsupportedFormatError",
    "__version__",
    "compress",
    "compress_batch",
    "decompress",
    "decompress_batch",
]


def __getattr__(name: str):
    # api imports torch; keep `import bitswap_core` (and `bitswap --help`) light.
    if name in ("compress", "compress_batch", "decompress", "decompress_batch"):
        from bitswap_core import api

        return getattr(api, name)
    raise AttributeError(name)
