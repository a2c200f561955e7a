"""``auditpipe api``: run the query API and viewer."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    import uvicorn

    from services.cli import CliError
    from services.common.logging import configure_logging
    from services.common.settings import get_settings
    from services.query_api.main import create_app

    s = get_settings()
    configure_logging("query_api")
    from services.common.tokens import TokenStore

    if not TokenStore(s).query():
        print(
            "warning: no query API token yet (AUDITPIPE_QUERY_API__TOKENS or `auditpipe token create "
            f"query`, file {s.tokens_file}): every call is 401 until one exists"
        )
    try:
        uvicorn.run(
            create_app(s),
            host=args.host or s.query_api.host,
            port=args.port or s.query_api.port,
            log_config=None,
            access_log=False,
        )
    except OSError as e:
        raise CliError(f"api: cannot serve: {e}") from None
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("api", help="run the query API and web viewer (default 127.0.0.1:8081)")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p.set_defaults(func=_run)
