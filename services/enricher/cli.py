"""``auditpipe enricher [--workers N]``: run the enricher (faust) in the foreground, in N processes."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from services.common.settings import get_settings
    from services.enricher.main import run, run_workers

    settings = get_settings()
    workers = args.workers or settings.enricher.workers
    return run(settings) if workers == 1 else run_workers(settings, workers)


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 1 <= n <= 64:
        raise argparse.ArgumentTypeError("must be between 1 and 64")
    return n


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("enricher", help="run the enricher (audit.raw.v1 -> audit.events.v1)")
    p.add_argument(
        "--workers",
        type=_positive,
        default=None,
        help="worker processes in one consumer group (default: enricher.workers); health ports from "
        "enricher.web_port upwards",
    )
    p.set_defaults(func=_run)
