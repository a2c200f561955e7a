"""``auditpipe ingest``: run the ingest HTTP API under uvicorn."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    import uvicorn

    from services.common.logging import configure_logging
    from services.common.runtime import tune_gc_for_throughput
    from services.common.settings import get_settings
    from services.ingest.app import create_app

    s = get_settings()
    configure_logging("ingest", s.log_level)
    from services.common.tokens import TokenStore

    if not TokenStore(s).ingest():
        print(
            "warning: no ingest token yet (AUDITPIPE_INGEST__TOKENS or `auditpipe token create ingest`, "
            f"file {s.tokens_file}): every request is 401 until one exists"
        )
    host = args.host or s.ingest.host
    port = args.port or s.ingest.port
    # workers > 1: uvicorn forks processes, each building its own app (and its one Kafka producer)
    if args.workers > 1:
        app = "services.ingest.app:app_from_settings"
    else:
        app = create_app(s)
        tune_gc_for_throughput()
    uvicorn.run(
        app,
        factory=args.workers > 1,
        workers=args.workers,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        proxy_headers=False,  # the raw X-Forwarded-For is recorded, never applied here
        timeout_graceful_shutdown=max(10, int(s.ingest.publish_deadline_s) + 5),
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="run the ingest HTTP API (POST /v1/events)")
    p.add_argument("--host", default=None, help="bind address (default: AUDITPIPE_INGEST__HOST)")
    p.add_argument("--port", type=int, default=None, help="port (default: AUDITPIPE_INGEST__PORT)")
    p.add_argument("--workers", type=int, default=1, help="processes (each with its own producer)")
    p.set_defaults(func=_run)
