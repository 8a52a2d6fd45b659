"""Model files: the exact model's integer tensors + config in safetensors (loading never runs code).

A model's id is a hash of its config and every tensor, so any change to anything that affects coding
changes the id, and every payload records the id it was coded with.

The two CDF tables are set by the coding grid alone (z_bins, scale levels, precision), are the same in
every model trained on one grid, and are most of a file (3.7 of the default's 4.7 MB). A model file may
leave them in a shared file, tables/<tables id>.safetensors beside it, and name that id in its metadata
(save_model(shared_tables=True), scripts/share_tables.py): the zoo then grows by about 1 MB a default, not
4.7. Loading puts them back before the id is checked, so the id, and every payload, is the same either way.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open

from bitswap_core.errors import ModelMismatchError, UnsupportedFormatError
from bitswap_core.model.config import ModelConfig

FORMAT = "bitswap-exact-v1"
TABLES_FORMAT = "bitswap-tables-v1"
TABLES = ("table_x", "table_z")  # the coding grid's CDF tables, which a model file may share
DEFAULT_MODEL = "default.safetensors"
_UNREADABLE = (SafetensorError, OSError, ValueError)  # what reading a safetensors file raises when it is bad


def model_id(cfg: ModelConfig, tensors: dict[str, np.ndarray]) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(FORMAT.encode())
    h.update(cfg.to_json().encode())
    _hash_tensors(h, tensors)
    return h.hexdigest()


def tables_id(tensors: dict[str, np.ndarray]) -> str:
    """The id of a model's CDF tables (TABLES): the name of the shared file that holds them."""
    h = hashlib.blake2b(digest_size=16)
    h.update(TABLES_FORMAT.encode())
    _hash_tensors(h, {k: tensors[k] for k in TABLES})
    return h.hexdigest()


def _hash_tensors(h, tensors: dict[str, np.ndarray]) -> None:
    for name in sorted(tensors):
        t = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{t.dtype.str}|{t.shape}".encode())
        h.update(t.tobytes())


@dataclass
class Model:
    """A loaded exact model. `exact` (the torch integer networks) is built on first use."""

    cfg: ModelConfig
    tensors: dict[str, np.ndarray]
    id: str
    info: dict
    device: str = "cpu"

    @functools.cached_property
    def exact(self):
        from bitswap_core.model.exact import ExactModel

        return ExactModel(self.cfg, self.tensors, self.device)

    def block_coder(self, scheme: str, split: int | None = None, border: bool = True, side: int = 32):
        """The model's BlockCoder for a scheme, coding as new containers do; split (container.split_for;
        None: as container.VERSION, which the benchmarks set to write older versions): 1 codes as
        container versions 4-17 did, 0 as versions 1-3 did; border=False as versions 4-7 did (with
        split 0, always without); side: the blocks' side (container v15 on: 32, 64 or 128)."""
        from bitswap_core import container
        from bitswap_core.coding.bitsback import BlockCoder

        cache = self.__dict__.setdefault("_coders", {})
        split = container.split_for(container.VERSION) if split is None else split
        key = (scheme, int(split), border and bool(split), side)
        if key not in cache:
            cache[key] = BlockCoder(self.exact, scheme, key[1], key[2], side)
        return cache[key]


def save_model(path: str | Path, cfg: ModelConfig, tensors: dict[str, np.ndarray], info: dict | None = None,
               shared_tables: bool = False) -> str:
    """Write a model file; returns its id. shared_tables: its CDF tables go to tables/<tables id>.safetensors
    beside it (written once, kept if there) and the file names them; the id does not change."""
    from safetensors.numpy import save_file

    mid = model_id(cfg, tensors)
    meta = {"format": FORMAT, "config": cfg.to_json(), "id": mid, "info": json.dumps(info or {})}
    body = tensors
    if shared_tables:
        tid = tables_id(tensors)
        shared = _tables_path(Path(path), tid)
        if not shared.exists():
            shared.parent.mkdir(parents=True, exist_ok=True)
            tmp = shared.with_suffix(".tmp")
            save_file({k: np.ascontiguousarray(tensors[k]) for k in TABLES}, str(tmp),
                      metadata={"format": TABLES_FORMAT, "id": tid})
            tmp.replace(shared)
        meta["tables"] = tid
        body = {k: v for k, v in tensors.items() if k not in TABLES}
    save_file({k: np.ascontiguousarray(v) for k, v in body.items()}, str(path), metadata=meta)
    return mid


def _tables_path(model_path: Path, tid: str) -> Path:
    return model_path.parent / "tables" / f"{tid}.safetensors"


def _shared_tables(model_path: Path, tid: str) -> dict[str, np.ndarray]:
    """The CDF tables a model file names. The name is checked against a strict pattern before it becomes a
    file name, and the tables against it."""
    if not re.fullmatch(r"[0-9a-f]{32}", tid):
        raise UnsupportedFormatError(f"{model_path}: its shared CDF tables are named {tid[:40]!r}, not an id")
    try:
        return _read_tables(str(_tables_path(model_path, tid)), tid)
    except (UnsupportedFormatError, ModelMismatchError) as exc:
        raise type(exc)(f"{model_path}: {exc}") from exc


def _read(path: str | Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """(metadata, tensors) of a safetensors file; the caller words the error for what _UNREADABLE names."""
    with safe_open(str(path), framework="np") as f:
        return f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}


@functools.lru_cache(maxsize=4)
def _read_tables(path: str, tid: str) -> dict[str, np.ndarray]:
    """Cached by file: every zoo model names the same tables, loaded once."""
    try:
        meta, tables = _read(path)
    except _UNREADABLE as exc:
        raise UnsupportedFormatError(f"its shared CDF tables {path} are missing or unreadable ({exc}); a model "
                                     "file that shares its tables needs the tables/ folder beside it") from exc
    if meta.get("format") != TABLES_FORMAT or set(tables) != set(TABLES) or tables_id(tables) != tid:
        raise ModelMismatchError(f"its shared CDF tables {path} are damaged (they do not match the id {tid})")
    return tables


def load_model(path: str | Path, device: str = "cpu") -> Model:
    try:
        meta, tensors = _read(path)
    except _UNREADABLE as exc:
        raise UnsupportedFormatError(f"{path}: not a readable model file ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise UnsupportedFormatError(f"{path}: model format {meta.get('format')!r}, expected {FORMAT!r}")
    try:
        cfg = ModelConfig.from_json(meta["config"])
        cfg.validate()
    except (KeyError, ValueError, TypeError) as exc:
        raise UnsupportedFormatError(f"{path}: invalid model config ({exc})") from exc
    if "tables" in meta:
        if any(k in tensors for k in TABLES):
            raise UnsupportedFormatError(f"{path}: model file holds CDF tables and also names shared ones")
        tensors.update(_shared_tables(Path(path).resolve(), str(meta["tables"])))
    mid = model_id(cfg, tensors)
    if meta.get("id") not in (None, mid):
        raise ModelMismatchError(f"{path}: model file is damaged (its tensors do not match its id)")
    _check_tensors(path, cfg, tensors)
    return Model(cfg, tensors, mid, json.loads(meta.get("info", "{}")), device)


def _check_tensors(path, cfg: ModelConfig, t: dict[str, np.ndarray]) -> None:
    need = ["act_lut", "table_z", "table_x", "px.conv_in.w", "px.conv_out.w"]
    need += [f"q{i}.conv_in.w" for i in range(cfg.nz)] + [f"p{i}.conv_in.w" for i in range(cfg.nz - 1)]
    need += [f"px.phase{k}.{c}.w" for k in range(1, cfg.pixel_phases) for c in ("ctx_in", "conv_out")]
    need += [f"px.phase{k}.blocks.{j}.conv{c}.w" for k in range(1, cfg.pixel_phases)
             for j in range(cfg.phase_blocks) for c in (1, 2)]
    trunk = cfg.processing_blocks + cfg.res_blocks
    need += [f"q0.blocks.{trunk + j}.conv{c}.w" for j in range(cfg.encoder_blocks) for c in (1, 2)]
    missing = [k for k in need if k not in t]
    if missing:
        raise UnsupportedFormatError(f"{path}: model file lacks tensors {missing}")
    if t["table_z"].shape != (cfg.z_scales * cfg.mean_frac, 2 * cfg.z_bins + 1):
        raise UnsupportedFormatError(f"{path}: latent CDF table has the wrong shape")
    if t["table_x"].shape != (cfg.x_scales * cfg.mean_frac, 513):
        raise UnsupportedFormatError(f"{path}: pixel CDF table has the wrong shape")


def default_model_path() -> Path:
    return Path(str(resources.files("bitswap_core") / "zoo" / DEFAULT_MODEL))


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, device: str) -> Model:
    return load_model(path, device)


def resolve(model: Model | str | Path | None = None, device: str = "cpu") -> Model:
    """None -> the shipped default model; a path -> that file (cached); a Model -> itself."""
    if isinstance(model, Model):
        return model
    path = default_model_path() if model is None else Path(model)
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path}")
    return _load_cached(str(path.resolve()), device)


def zoo_models() -> list[Path]:
    return sorted(Path(str(resources.files("bitswap_core") / "zoo")).glob("*.safetensors"))


def find_by_id(mid: str, device: str = "cpu") -> Model | None:
    """A shipped model with this id, so old payloads keep decoding after the default changes."""
    for p in zoo_models():
        try:
            m = _load_cached(str(p.resolve()), device)
        except Exception:  # noqa: BLE001 - a broken zoo file must not stop the search
            continue
        if m.id == mid:
            return m
    return None
