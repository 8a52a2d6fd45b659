"""The worker that turns one shard plan into one Parquet shard: read, sort out, compress_batch, write.

Why a class held by a Ray actor (see docs/PIPELINE.md): loading a model costs far more than coding one
small image, so each actor loads it once in __init__ and then codes shard after shard. The class is
plain Python; the driver wraps it with ray.remote, and tests can call it directly.

Why the actor reads and writes itself: the driver only sends file names and receives counts, so image
bytes never pass through the driver or the object store, and shards are written in parallel.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import traceback
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from pipeline import shards
from pipeline.shards import CODEC_STORED, STATUS_ERROR, STATUS_OK, STATUS_STORED, ShardPlan, ShardStats
from pipeline.sources import UnsafeKeyError, check_key, is_process_local, open_fs, read_files

DEFAULT_MAX_PIXELS = 64_000_000
# Pixels handed to one compress_batch call: bounds the actor's memory on shards of large photos while
# still giving the network many blocks at once.
DEFAULT_BATCH_PIXELS = 16_000_000

# Formats whose pixels are the whole content and that Pillow writes back exactly: coded by pixels.
LOSSLESS_FORMATS = frozenset({"PNG", "BMP", "DIB", "TIFF", "PPM", "WEBP"})
# Writing arguments that keep a re-encoded file lossless (restore writes coded images back this way).
SAVE_OPTIONS: dict[str, dict[str, Any]] = {
    "PNG": {},
    "BMP": {},
    "DIB": {"format": "BMP"},
    "TIFF": {},
    "PPM": {},
    "WEBP": {"lossless": True, "quality": 100, "exact": True},
}
_BANDS_BYTES = {"I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "I": 4, "F": 4}


def raw_size(mode: str, width: int, height: int) -> int:
    """Bytes of the decoded pixels (what the compression ratio is measured against)."""
    if mode == "1":
        return (width + 7) // 8 * height
    per = _BANDS_BYTES.get(mode) or Image.getmodebands(mode)
    return per * width * height


def dims(mode: str, width: int, height: int) -> int:
    """Subpixels: the bits-per-dimension denominator."""
    return Image.getmodebands(mode) * width * height


def webp_is_lossless(data: bytes) -> bool:
    """True for a WebP whose image chunk is VP8L (lossless); lossy VP8 data is stored as bytes instead."""
    if len(data) < 16 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return False
    pos, seen_lossless = 12, False
    while pos + 8 <= len(data):
        tag = data[pos : pos + 4]
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if tag == b"VP8 ":
            return False
        if tag == b"VP8L":
            seen_lossless = True
        if tag == b"ANMF":  # animations are stored as bytes anyway
            return False
        pos += 8 + size + (size & 1)
    return seen_lossless


def pixel_digest_hex(image: Image.Image) -> str:
    """The container's pixel digest in hex (mode, size, palette and pixels)."""
    from bitswap_core.container import pixel_digest

    return pixel_digest(image).hex()


def encode_like(image: Image.Image, fmt: str) -> bytes:
    """The image as a file in format fmt with lossless settings (ICC profile kept where it can be)."""
    opts = dict(SAVE_OPTIONS.get(fmt, {}))
    fmt = opts.pop("format", fmt)
    icc = image.info.get("icc_profile")
    if icc and fmt in ("PNG", "TIFF", "WEBP"):
        opts["icc_profile"] = icc
    buf = io.BytesIO()
    image.save(buf, fmt, **opts)
    return buf.getvalue()


def open_limited(data: bytes, max_pixels: int) -> Image.Image:
    """Open image bytes, refusing before any pixel is decoded when the header declares too many pixels.

    Why: a few KB of PNG can declare gigapixels (decompression bomb). Pillow's own global limit is a
    warning at 89 MP; this checks our limit on the header, then decodes.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        im = Image.open(io.BytesIO(data))
    w, h = im.size
    if w * h > max_pixels:
        raise _TooLarge(im.format, w, h, max_pixels, im.mode)
    return im


class _TooLarge(Exception):
    def __init__(self, fmt: str | None, w: int, h: int, limit: int, mode: str) -> None:
        super().__init__(f"image is {w}x{h} = {w * h} pixels, above the limit of {limit}")
        self.fmt, self.w, self.h, self.mode = fmt, w, h, mode


@dataclass
class ShardResult:
    """What an actor reports for a shard: stats only, unless DST is process-local (then the bytes)."""

    index: int
    name: str
    stats: ShardStats
    seconds: float
    file_bytes: int = 0
    error: str | None = None  # the shard itself failed (nothing written)
    data: bytes | None = None  # Parquet bytes when the driver must write them itself
    model_id: str | None = None
    pid: int = 0  # the worker process (a restarted actor is a new process)
    actor_id: str = ""


@dataclass
class _Pending:
    """A row waiting for the codec."""

    row: dict[str, Any]
    image: Image.Image
    data: bytes  # the original file, stored instead if the codec refuses the image


class ShardCompressor:
    """Holds the model and compresses shards; one instance per Ray actor (or used directly in tests)."""

    def __init__(
        self,
        src_url: str,
        dst_url: str,
        *,
        codec: str = "bitswap",
        particles: int = 1,
        effort: int = 2,
        model: str | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        batch_pixels: int = DEFAULT_BATCH_PIXELS,
        row_group_bytes: int = shards.DEFAULT_ROW_GROUP_BYTES,
        storage_options: Mapping[str, Any] | None = None,
        threads: int | None = None,
        device: str = "cpu",
        keep_smaller_originals: bool = True,
        verify_writes: bool = True,
    ) -> None:
        import torch

        from bitswap_core import api, registry  # torch and the model load here, once per actor

        if threads:
            torch.set_num_threads(threads)
        if device.startswith("cuda") and not torch.cuda.is_available():
            device = "cpu"
        self._api = api
        self.codec, self.particles, self.effort = codec, particles, effort
        self.keep_smaller_originals = keep_smaller_originals
        self.verify_writes = verify_writes
        self.device = device
        self.model = registry.resolve(model, device=device)
        # Build the networks, coding tables and compiled coder loops now with one tiny image: the first
        # shard should not pay for it (and start-up is timed apart from coding).
        try:
            api.compress_batch([Image.new("RGB", (32, 32), (90, 120, 150))], self.model, codec=codec,
                               particles=particles, effort=effort)
        except Exception as exc:  # noqa: BLE001 - a real shard will report the problem per image
            warnings.warn(f"codec warm-up failed: {exc}", stacklevel=1)
        self.max_pixels = max_pixels
        self.batch_pixels = batch_pixels
        self.row_group_bytes = row_group_bytes
        self.src_fs, _ = open_fs(src_url, storage_options)
        self.dst_fs, self.dst_root = open_fs(dst_url, storage_options)
        self.dst_root = self.dst_root.rstrip("/")
        self.return_bytes = is_process_local(self.dst_fs)
        self.shards_done = 0

    def info(self) -> dict[str, Any]:
        """Process id, model id and torch threads (the driver records the model; tests use the pid to see
        restarts)."""
        import torch

        return {
            "pid": os.getpid(),
            "threads": torch.get_num_threads(),
            "model_id": self.model.id,
            "device": self.device,
            "shards_done": self.shards_done,
        }

    def compress_shard(self, plan: ShardPlan, settings: Mapping[str, Any] | None = None) -> ShardResult:
        """Code one shard and write it atomically. Never raises: a failed shard is reported, not thrown."""
        t0 = time.perf_counter()
        try:
            rows = self._rows(plan)
            stats = ShardStats()
            for row, d in rows:
                stats.add_row(row, d)
            meta = {
                "format": shards.ARCHIVE_FORMAT,
                "index": plan.index,
                "fingerprint": plan.fingerprint,
                "first_key": plan.first_key,
                "last_key": plan.last_key,
                "settings": dict(settings or {}),
                "model_id": self.model.id,
                "stats": stats.to_dict(),
            }
            data = shards.encode_shard([r for r, _ in rows], meta, self.row_group_bytes)
            if not self.return_bytes:
                shards.write_atomic(self.dst_fs, self.dst_root, plan.name, data)
            self.shards_done += 1
            return ShardResult(
                plan.index, plan.name, stats, time.perf_counter() - t0, len(data),
                data=data if self.return_bytes else None, model_id=self.model.id, pid=os.getpid(),
                actor_id=_actor_id(),
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - reported to the driver with the shard index
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            return ShardResult(plan.index, plan.name, ShardStats(), time.perf_counter() - t0, error=detail)

    __call__ = compress_shard

    # -- rows ---------------------------------------------------------------------------------------

    def _rows(self, plan: ShardPlan) -> list[tuple[dict[str, Any], int]]:
        contents = read_files(self.src_fs, [f.path for f in plan.files])
        out: list[tuple[dict[str, Any], int] | None] = []
        pending: list[tuple[int, _Pending]] = []
        for f in plan.files:
            data = contents.get(f.path)
            row, image = classify(f.key, data, self.max_pixels)
            if image is not None:
                pending.append((len(out), _Pending(row, image, data)))
                out.append(None)
            else:
                d = dims(row["mode"], row["width"], row["height"]) if row["status"] == STATUS_OK else 0
                out.append((row, d))
        for pos, row, d in self._code(pending):
            out[pos] = (row, d)
        return [r for r in out if r is not None]

    def _code(self, pending: Sequence[tuple[int, _Pending]]) -> list[tuple[int, dict[str, Any], int]]:
        """compress_batch over pixel-bounded batches; an image the codec refuses is stored as bytes."""
        results: list[tuple[int, dict[str, Any], int]] = []
        batch: list[tuple[int, _Pending]] = []
        pixels = 0
        for item in list(pending) + [None]:  # type: ignore[list-item]
            if item is not None:
                n = item[1].image.width * item[1].image.height
                if batch and pixels + n > self.batch_pixels:
                    results += self._code_batch(batch)
                    batch, pixels = [], 0
                batch.append(item)
                pixels += n
            elif batch:
                results += self._code_batch(batch)
        return results

    def _verified(self, payloads: Sequence[bytes]) -> list[bytes | BaseException]:
        """The payloads, each learned one decoded first (the container checks its pixel digest): one that
        does not decode back to its image becomes the error, so the row keeps the original file's bytes.
        Why: an archive must never hold a payload that cannot be restored, whatever a codec bug does; the
        classical codecs' payloads are already decoded and compared in bitswap_core.fallback."""
        from bitswap_core import container

        learned = [i for i, d in enumerate(payloads) if not container.unpack(d).codec.startswith("fallback:")]
        out: list[bytes | BaseException] = list(payloads)
        if not learned:
            return out
        try:
            self._api.decompress_batch([payloads[i] for i in learned], self.model, max_pixels=self.max_pixels)
            return out
        except Exception:  # noqa: BLE001 - find which payload fails by decoding them one by one
            pass
        for i in learned:
            try:
                self._api.decompress(payloads[i], self.model, max_pixels=self.max_pixels)
            except Exception as exc:  # noqa: BLE001
                out[i] = RuntimeError(f"its coded form did not decode back ({type(exc).__name__}: {exc})")
        return out

    def _code_batch(self, batch: Sequence[tuple[int, _Pending]]) -> list[tuple[int, dict[str, Any], int]]:
        images = [p.image for _, p in batch]
        t0 = time.perf_counter()
        try:
            payloads: list[bytes | BaseException] = list(
                self._api.compress_batch(images, self.model, codec=self.codec, max_pixels=self.max_pixels,
                                         particles=self.particles, effort=self.effort)
            )
            if len(payloads) != len(images):
                raise RuntimeError(f"compress_batch gave {len(payloads)} payloads for {len(images)} images")
            if self.verify_writes:
                payloads = self._verified(payloads)
            elapsed = time.perf_counter() - t0
            total = sum(im.width * im.height for im in images) or 1
            seconds = [elapsed * im.width * im.height / total for im in images]
        except Exception:  # noqa: BLE001 - find which image fails by coding them one by one
            payloads, seconds = [], []
            for im in images:
                t1 = time.perf_counter()
                try:
                    data = self._api.compress(im, self.model, codec=self.codec, max_pixels=self.max_pixels,
                                              particles=self.particles, effort=self.effort)
                    payloads += self._verified([data]) if self.verify_writes else [data]
                except Exception as exc:  # noqa: BLE001
                    payloads.append(exc)
                seconds.append(time.perf_counter() - t1)
        out = []
        for (pos, p), payload, secs in zip(batch, payloads, seconds):
            row = p.row
            if isinstance(payload, BaseException):
                reason = f"codec refused it: {type(payload).__name__}: {payload}"
                out.append((pos, _stored(row, p.data, reason), 0))
            elif self.keep_smaller_originals and len(payload) >= len(p.data):  # never grow a file: keep it
                reason = f"the original file ({len(p.data)} bytes) is smaller than its coded form ({len(payload)})"
                out.append((pos, _stored(row, p.data, reason), 0))
            else:
                out.append((pos, self._coded(row, p.image, payload, secs), dims(p.image.mode, *p.image.size)))
        return out

    def _coded(self, row: dict[str, Any], image: Image.Image, payload: bytes, seconds: float) -> dict[str, Any]:
        from bitswap_core.container import unpack

        c = unpack(payload)
        n_dims = dims(image.mode, image.width, image.height)
        row.update(
            payload=payload,
            codec=c.codec,
            model_id=c.model_id or None,
            raw_bytes=raw_size(image.mode, image.width, image.height),
            compressed_bytes=len(payload),
            bpd=len(payload) * 8 / n_dims,
            pixel_digest=c.pixel_digest.hex(),
            encode_seconds=seconds,
            status=STATUS_OK,
        )
        return row


def classify(
    key: str, data: bytes | BaseException | None, max_pixels: int
) -> tuple[dict[str, Any], Image.Image | None]:
    """A finished row (stored or error), or a row plus the decoded image to code by pixels.

    Why: JPEG and other lossy files would grow if coded by pixels, and some files must not be coded at
    all (unreadable, too large, unsafe key); this decides, before the codec sees anything.
    """
    row = _empty_row(key)
    try:
        check_key(key)
    except UnsafeKeyError as exc:
        return _error(row, f"unsafe key: {exc}"), None
    if not isinstance(data, (bytes, bytearray)):
        return _error(row, f"read failed: {data!r}"), None
    data = bytes(data)
    row["original_bytes"] = len(data)
    row["file_sha256"] = hashlib.sha256(data).hexdigest()
    try:
        im = open_limited(data, max_pixels)
    except _TooLarge as exc:
        row.update(format=exc.fmt, width=exc.w, height=exc.h, mode=exc.mode)
        return _error(row, str(exc)), None
    except UnidentifiedImageError:
        return _error(row, "unreadable: not an image format this build can open"), None
    except Exception as exc:  # noqa: BLE001 - any decoder error means "not a readable image"
        return _error(row, f"unreadable image: {type(exc).__name__}: {exc}"), None
    fmt = im.format or "?"
    row.update(format=fmt, width=im.width, height=im.height, mode=im.mode)
    reason = None
    if fmt not in LOSSLESS_FORMATS:
        reason = None if fmt in ("JPEG", "MPO") else f"{fmt} is not coded by pixels"
    elif fmt == "WEBP" and not webp_is_lossless(data):
        reason = "lossy WebP"
    elif getattr(im, "n_frames", 1) > 1:
        reason = f"{im.n_frames} frames"
    try:
        im.load()
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
        return _error(row, f"corrupt image data: {type(exc).__name__}: {exc}"), None
    if reason is None and fmt in LOSSLESS_FORMATS:
        reason = _rewrite_problem(im, fmt)
    if reason is not None or fmt not in LOSSLESS_FORMATS:
        return _stored(row, data, reason), None
    return row, im


def _rewrite_problem(im: Image.Image, fmt: str) -> str | None:
    """Why restore could not write these pixels back as fmt exactly (None when it can).

    Restore writes coded images back in their original format, so check now that Pillow round-trips
    this mode in that format; otherwise the original bytes are stored instead.
    """
    if "transparency" in im.info:
        return "colour-key transparency is kept only in the original file"
    try:
        again = Image.open(io.BytesIO(encode_like(im, fmt)))
        again.load()
    except Exception as exc:  # noqa: BLE001
        return f"cannot rewrite mode {im.mode} as {fmt}: {exc}"
    if again.mode != im.mode or pixel_digest_hex(again) != pixel_digest_hex(im):
        return f"mode {im.mode} does not round-trip through {fmt}"
    return None


def _empty_row(key: str) -> dict[str, Any]:
    return {c: None for c in shards.COLUMNS} | {"key": key}


def _error(row: dict[str, Any], reason: str) -> dict[str, Any]:
    row.update(status=STATUS_ERROR, error=reason, codec=None, payload=None, compressed_bytes=0)
    return row


def _stored(row: dict[str, Any], data: bytes, reason: str | None) -> dict[str, Any]:
    mode, w, h = row.get("mode"), row.get("width"), row.get("height")
    n_dims = dims(mode, w, h) if mode and w and h else 0
    row.update(
        payload=data,
        codec=CODEC_STORED,
        raw_bytes=raw_size(mode, w, h) if n_dims else None,
        compressed_bytes=len(data),
        bpd=len(data) * 8 / n_dims if n_dims else None,
        encode_seconds=0.0,
        status=STATUS_STORED,
        error=f"stored as original bytes: {reason}" if reason else None,
    )
    return row


def _actor_id() -> str:
    import ray

    return (ray.get_runtime_context().get_actor_id() or "") if ray.is_initialized() else ""
