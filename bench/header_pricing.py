"""What the fit would gain by pricing its sections at their deflated size (container v19 stores the header
deflated; the fit prices the raw v18 layout, adapt.PRICED): bench/adaptation.py with adapt.PRICED set.

    .venv/bin/python bench/header_pricing.py 19 ../shared/datasets/val --blocks "~" --threads 1

The first argument is the container version whose layout the fit prices (18: raw, as shipped; 19: deflated);
the rest are bench/adaptation.py's. Sizes are deterministic, so two runs compare; times do not.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bitswap_core.coding import adapt  # noqa: E402


def main() -> None:
    adapt.PRICED = int(sys.argv[1])
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    import adaptation

    adaptation.main()


if __name__ == "__main__":
    main()
