"""The ClickHouse client used by every service (clickhouse-connect over HTTP).

All queries built from user input use server-side parameters (``{name:Type}``), never string
concatenation. Identifiers (database, table) come only from settings and are validated there.
"""

from __future__ import annotations

from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from services.common.settings import Settings

# Server error codes that mean "this data is bad": never retried (Vector's ClickHouse retry logic).
BAD_DATA_CODES = {6, 26, 27, 38, 41, 53, 62, 69, 70, 72, 117, 130, 131, 241, 252, 253, 349, 394, 395}


def make_client(settings: Settings, database: str | None = None, **kw: Any) -> Client:
    """A client for the configured server. Without ``database`` the session has no default database
    (the server's own), so every query names its database (``settings.clickhouse_database``)."""
    return clickhouse_connect.get_client(
        host=settings.clickhouse_host,
        port=settings.clickhouse_port,
        secure=settings.clickhouse_secure,
        username=settings.clickhouse_user,
        password=settings.clickhouse_password.get_secret_value(),
        database=database if database is not None else "",
        compress="lz4",
        connect_timeout=5,
        send_receive_timeout=kw.pop("send_receive_timeout", 120),
        autogenerate_session_id=False,
        **kw,
    )


def error_code(exc: BaseException) -> int | None:
    """The ClickHouse error code carried by an exception, if any."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    text = str(exc)
    import re

    m = re.search(r"Code: (\d+)", text)
    return int(m.group(1)) if m else None


def is_bad_data(exc: BaseException) -> bool:
    return isinstance(exc, DatabaseError) and error_code(exc) in BAD_DATA_CODES


def is_transient(exc: BaseException) -> bool:
    """Connection problems and server overload: retry with backoff."""
    if isinstance(exc, OperationalError):
        return True
    return not is_bad_data(exc)


def server_version(settings: Settings) -> str:
    return make_client(settings).server_version
