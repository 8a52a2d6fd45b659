"""Torch threads per coding process on an idle and on a shared CPU (the pipeline's threads_per_actor).

An actor gives torch as many threads as the CPUs it holds. With another busy process on the same cores,
an intra-op parallel region waits for its slowest thread, and a thread that the OS has descheduled is
slow. This codes the same crops with 1 and with 2 threads, alternately, first alone and then next to
--busy processes that keep one core each busy (a one-thread float matmul loop), and prints seconds per
round and the 2-thread / 1-thread ratio in each condition.

    .venv/bin/python bench/thread_contention.py samples/*.png --rounds 2 --busy 1
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _busy(stop) -> None:
    import torch

    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    while not stop.is_set():
        a = torch.tanh(a @ a)


@contextmanager
def busy_processes(n: int):
    """n other processes keeping one core each busy until the block ends (a shared node, reproducibly)."""
    stop = mp.Event()
    procs = [mp.Process(target=_busy, args=(stop,), daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    time.sleep(1.0 if n else 0.0)
    try:
        yield
    finally:
        stop.set()
        for p in procs:
            p.join()


def _rounds(images, model, threads: tuple[int, ...], rounds: int) -> dict[int, list[float]]:
    import torch

    import bitswap_core

    out: dict[int, list[float]] = {t: [] for t in threads}
    for _ in range(rounds):
        for t in threads:
            torch.set_num_threads(t)
            t0 = time.perf_counter()
            bitswap_core.compress_batch(images, model, smallest=False)
            out[t].append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("images", nargs="+")
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--busy", type=int, default=1, help="busy processes in the shared condition")
    ap.add_argument("--threads", default="1,2")
    args = ap.parse_args()
    from PIL import Image

    import bitswap_core
    from bitswap_core.registry import resolve

    model = resolve(None)
    images = [Image.open(p).convert("RGB").crop((0, 0, args.crop, args.crop)) for p in args.images]
    bitswap_core.compress_batch(images[:1], model, smallest=False)  # warm-up
    threads = tuple(int(t) for t in args.threads.split(","))
    raw_kb = sum(im.width * im.height * 3 for im in images) / 1000
    print(f"{len(images)} crops of {args.crop}, {raw_kb:.0f} KB raw, {args.rounds} rounds, model {model.id[:8]}")
    for label, busy in (("idle", 0), (f"{args.busy} busy process(es)", args.busy)):
        with busy_processes(busy):
            res = _rounds(images, model, threads, args.rounds)
        med = {t: statistics.median(v) for t, v in res.items()}
        cells = "  ".join(f"{t} thread(s) {med[t]:6.2f} s ({raw_kb / med[t]:5.1f} KB/s)" for t in threads)
        ratio = f"  {threads[-1]}/{threads[0]} time ratio {med[threads[-1]] / med[threads[0]]:.2f}"
        print(f"{label:<24} {cells}{ratio if len(threads) > 1 else ''}", flush=True)


if __name__ == "__main__":
    main()
