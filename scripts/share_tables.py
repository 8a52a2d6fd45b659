"""Rewrite model files so their CDF tables live in one shared file beside them (registry.save_model's
shared_tables): the zoo's defaults all carry the same 3.7 MB of tables.

    .venv/bin/python scripts/share_tables.py bitswap_core/zoo/*.safetensors

Each file is loaded (which checks its id), written again without its tables next to
tables/<tables id>.safetensors, and loaded back: the id must not change, else the original is restored.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core.registry import load_model, save_model  # noqa: E402


def main(paths: list[str]) -> int:
    for name in paths:
        path = Path(name)
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
