"""Exceptions raised by the codec. Every failure a user can cause maps to one of these, never a crash."""


class BitswapError(Exception):
    """Base class for every error the codec raises on purpose."""


class CorruptPayloadError(BitswapError):
    """The bytes are truncated, damaged, or decode to pixels whose checksum does not match."""


class UnsupportedFormatError(BitswapError):
    """Not a Bit-Swap container, or a container version / codec this build does not know."""


class ModelMismatchError(BitswapError):
    """The payload was coded with a model other than the one supplied or available."""


class ImageRefusedError(BitswapError):
    """The image cannot be coded losslessly (absurd size, unreadable data); nothing is written for it."""
