"""``auditpipe demo [--seconds N]``."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from services.common.logging import configure_logging
    from services.demo.run import run

    configure_logging("demo", "WARNING")
    return run(seconds=args.seconds, siem_port=args.siem_port)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on local defaults with a simulated platform")
    p.add_argument("--seconds", type=float, default=None, help="stop after N seconds (default: Ctrl-C)")
    p.add_argument("--siem-port", type=int, default=8088, help="local SIEM receiver port (platform: +2)")
    p.set_defaults(func=_run)
