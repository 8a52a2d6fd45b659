"""Rewrite model files so their CDF tables live in one shared file beside them (registry.save_model's
shared_tables): the zoo's defaults all carry the same 3.7 MB of tables. Or, with --inline SRC DST, write a
self-contained copy of a model (tables inside), e.g. to keep next to an archive.

    .venv/bin/python scripts/share_tables.py bitswap_core/zoo/*.safetensors
    .venv/bin/python scripts/share_tables.py --inline bitswap_core/zoo/default.safetensors model.safetensors

Each file is loaded (which checks its id), written again, and loaded back: the id must not change, else the
original is restored.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core.registry import load_model, save_model  # noqa: E402


def share(paths: list[Path]) -> None:
    for path in paths:
        m = load_model(path)
        backup = path.with_suffix(".bak")
        shutil.copyfile(path, backup)
        try:
            save_model(path, m.cfg, m.tensors, m.info, shared_tables=True)
            again = load_model(path)
            if again.id != m.id:
                raise RuntimeError(f"{path}: id changed from {m.id} to {again.id}")
        except Exception:
            shutil.copyfile(backup, path)
            raise
        finally:
            backup.unlink()
        print(f"{path}: {path.stat().st_size} bytes, id {m.id}")


def inline(src: Path, dst: Path) -> None:
    m = load_model(src)
    if save_model(dst, m.cfg, m.tensors, m.info) != m.id or load_model(dst).id != m.id:
        raise RuntimeError(f"{dst}: the copy's id differs from {m.id}")
    print(f"{dst}: {dst.stat().st_size} bytes, self-contained, id {m.id}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--inline", action="store_true", help="models are SRC DST: a self-contained copy")
    args = ap.parse_args()
    if args.inline:
        if len(args.models) != 2:
            ap.error("--inline takes SRC DST")
        inline(*args.models)
    else:
        share(args.models)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
