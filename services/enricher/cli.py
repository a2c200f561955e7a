"""``auditpipe enricher``: run the enricher worker (faust) in the foreground."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from services.common.settings import get_settings
    from services.enricher.main import run

    return run(get_settings())


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("enricher", help="run the enricher (audit.raw.v1 -> audit.events.v1)")
    p.set_defaults(func=_run)
