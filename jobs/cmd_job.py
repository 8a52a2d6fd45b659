"""`bitswap job run SPEC [--wait]` and `bitswap job status SPEC`: recurring archival jobs.

Exit codes are chosen for schedulers (cron mails, systemd unit state, Kubernetes job status):
0 done; 1 done but some images failed (their rows say why); 2 bad spec or usage; 3 the run stopped early
(the next run completes it); 75 another run of this job holds the lease (EX_TEMPFAIL: try again later).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from typing import Any

EXIT_OK, EXIT_IMAGE_FAILURES, EXIT_SPEC, EXIT_RUN_FAILED, EXIT_BUSY = 0, 1, 2, 3, 75


def register(subparsers: Any) -> None:
    """Add `job run` and `job status` to the `bitswap` command."""
    p = subparsers.add_parser("job", help="recurring archival jobs from a TOML spec (see docs/JOBS.md)")
    sub = p.add_subparsers(dest="job_command", metavar="ACTION")

    r = sub.add_parser("run", help="archive what is new or changed since the last run")
    r.add_argument("spec", help="job spec (TOML)")
    r.add_argument(
        "--wait",
        action="store_true",
        help="if another run of this job is in progress, wait for it instead of exiting with 75",
    )
    r.add_argument(
        "--wait-timeout",
        type=float,
        default=None,
        metavar="S",
        help="with --wait, give up after S seconds (exit 75)",
    )
    r.add_argument(
        "--retry-failed",
        action="store_true",
        help="also retry images that failed in earlier runs though their files did not change",
    )
    r.add_argument("--no-sample", action="store_true", help="skip the classical-codec sample for this run")
    r.add_argument("-q", "--quiet", action="store_true", help="print only warnings and the summary")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("status", help="runs so far, the lease, and what the next run would compress")
    s.add_argument("spec", help="job spec (TOML)")
    s.add_argument("--no-list", action="store_true", help="do not list the sources (no pending count)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_status)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _load(path: str) -> Any:
    from jobs.spec import SpecError, load_spec

    try:
        return load_spec(path)
    except SpecError as exc:
        print(f"bitswap job: invalid spec: {exc}", file=sys.stderr)
        return None


def _sigterm_to_exit() -> None:
    """Make SIGTERM (systemd stop, Kubernetes deadline) unwind like Ctrl-C, so the run record is written."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (embedded use): leave signals alone
        pass


def cmd_run(args: argparse.Namespace) -> int:
    from jobs.run import RunFailed, run_job
    from jobs.state import LeaseBusy

    spec = _load(args.spec)
    if spec is None:
        return EXIT_SPEC
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    _sigterm_to_exit()
    try:
        rec = run_job(
            spec,
            wait=args.wait,
            wait_timeout_s=args.wait_timeout,
            retry_failed=args.retry_failed,
            sample=not args.no_sample,
        )
    except LeaseBusy as exc:
        print(f"bitswap job: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except FileNotFoundError as exc:  # a source that is not there (unmounted disk, wrong bucket)
        print(f"bitswap job: {exc}; nothing was compressed", file=sys.stderr)
        return EXIT_RUN_FAILED
    except RunFailed as exc:
        print(_summary(exc.record), file=sys.stderr)
        print(f"bitswap job: run {exc.record.run_id} stopped early: {exc.record.error}", file=sys.stderr)
        return EXIT_RUN_FAILED
    print(_summary(rec))
    return EXIT_IMAGE_FAILURES if rec.errors else EXIT_OK


def _summary(rec: Any) -> str:
    ratio = rec.original_bytes / rec.compressed_bytes if rec.compressed_bytes else 0.0
    lines = [
        f"job {rec.job} run {rec.run_id}: {rec.status}",
        f"  listed {rec.listed}, planned {rec.planned} ({rec.planned_bytes / 1e6:.1f} MB)",
        f"  archived {rec.images} images (ok {rec.ok}, stored {rec.stored}, errors {rec.errors}) "
        f"in {len(rec.shards)} shards",
        f"  {rec.original_bytes / 1e6:.1f} MB -> {rec.compressed_bytes / 1e6:.1f} MB (ratio {ratio:.2f}), "
        f"{rec.wall_seconds:.1f} s, compute ${rec.compute_cost_usd:.4f}",
    ]
    if rec.recovered:
        lines.append(f"  completed earlier runs that had not finished: {', '.join(rec.recovered)}")
    for f in rec.failures[:10]:
        lines.append(f"  failed: {f['key']}: {f['error']}")
    if len(rec.failures) > 10 or rec.errors > len(rec.failures):
        lines.append(f"  ... {rec.errors - min(10, len(rec.failures))} more failures (see `bitswap report`)")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    from jobs.run import format_status, job_status

    spec = _load(args.spec)
    if spec is None:
        return EXIT_SPEC
    try:
        st = job_status(spec, pending=not args.no_list)
    except FileNotFoundError as exc:
        st = job_status(spec, pending=False)
        st["list_error"] = str(exc)
    if args.json:
        print(json.dumps(st, indent=1, sort_keys=True))
    else:
        print(format_status(st))
        if st.get("list_error"):
            print(f"\ncannot list the sources: {st['list_error']}")
    return EXIT_OK
