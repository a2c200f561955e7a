"""``auditpipe sink`` (the archive commands live in ``services/archive/cli.py``)."""

from __future__ import annotations

import argparse
import asyncio

from services.common.settings import get_settings


def _sink(args: argparse.Namespace) -> int:
    from services.common.logging import configure_logging
    from services.sink.service import run_sink

    s = get_settings()
    configure_logging("sink", s.log_level)
    asyncio.run(run_sink(s))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sink", help="consume audit.events.v1 into ClickHouse (and run the archive schedule)")
    p.set_defaults(func=_sink)
