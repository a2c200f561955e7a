"""The query API as the ``events`` command sees it: the user's token, one-line errors, exit codes.

Every failure becomes a :class:`CliError` whose message is one line and whose code says what kind of
failure it was (documented in docs/cli.md):

====  =====================================================================
code  meaning
====  =====================================================================
1     the query API failed (5xx, 429 busy) or answered something unexpected
2     bad input: a flag the command or the API refused (422)
3     not authenticated: no token, or the API does not know it (401)
4     not allowed: the token's roles or scope do not cover it (403)
5     not found (404), e.g. an event id the token cannot see
6     the query API cannot be reached (connection refused, DNS, timeout)
====  =====================================================================
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from services.common.errors import CliError
from services.common.settings import Settings

EXIT_ERROR, EXIT_USAGE, EXIT_AUTH, EXIT_FORBIDDEN, EXIT_NOT_FOUND, EXIT_UNREACHABLE = 1, 2, 3, 4, 5, 6


def api_url(settings: Settings) -> str:
    if settings.cli.api_url:
        return settings.cli.api_url
    host = settings.query_api.host
    host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104 - a bind address, not ours
    return f"http://{host}:{settings.query_api.port}"


def user_token(settings: Settings) -> str:
    """AUDITPIPE_CLI__TOKEN, else the first line of the token file (which only its owner may read)."""
    if settings.cli.token is not None and settings.cli.token.get_secret_value():
        return settings.cli.token.get_secret_value().strip()
    path = Path(settings.cli.token_file).expanduser()
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CliError(
            f"no query token: set AUDITPIPE_CLI__TOKEN or put the token in {path} "
            "(`auditpipe token create query` makes one)",
            EXIT_AUTH,
        ) from None
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror or e}", EXIT_AUTH) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CliError(f"{path} is readable by group or others: chmod 600 {path}", EXIT_AUTH)
    lines = path.read_text().strip().splitlines()
    if not lines or not lines[0].strip():
        raise CliError(f"{path} is empty: put the query token on its first line", EXIT_AUTH)
    return lines[0].strip()


def _detail(r: httpx.Response) -> str:
    """The API's own explanation, one line: FastAPI's detail (string or list of field errors)."""
    try:
        body = r.json()
    except ValueError:
        return (r.text or r.reason_phrase).strip().splitlines()[0][:300] if r.text else r.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):
        parts = []
        for d in detail[:5]:
            loc = [str(x) for x in d.get("loc", []) if x not in ("query", "path", "body")]
            parts.append(f"{'.'.join(loc) or 'request'}: {d.get('msg', 'invalid')}")
        return "; ".join(parts)
    if isinstance(detail, str):
        return detail
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return r.reason_phrase


def raise_for(r: httpx.Response, what: str = "") -> None:
    """A CliError for any non-2xx answer (one line, mapped exit code)."""
    if r.is_success:
        return
    detail = _detail(r)
    code = r.status_code
    if code == 401:
        raise CliError(
            "not authenticated (401): the query API does not accept this token (unknown, revoked or "
            "expired); set AUDITPIPE_CLI__TOKEN",
            EXIT_AUTH,
        )
    if code == 403:
        raise CliError(f"not allowed (403): {detail}", EXIT_FORBIDDEN)
    if code == 404:
        raise CliError(f"not found (404): {what or detail}", EXIT_NOT_FOUND)
    if code in (400, 422):
        raise CliError(f"invalid request ({code}): {detail}", EXIT_USAGE)
    if code in (429, 503):
        after = r.headers.get("retry-after")
        hint = f"; retry after {after} s" if after else ""
        raise CliError(f"query API busy ({code}): {detail}{hint}", EXIT_ERROR)
    raise CliError(f"query API error ({code}): {detail}", EXIT_ERROR)


class QueryApi:
    def __init__(self, settings: Settings, token: str | None = None) -> None:
        self.base = api_url(settings)
        self.timeout = settings.cli.timeout_s
        self._token = token if token is not None else user_token(settings)
        self.http = httpx.Client(
            base_url=self.base,
            timeout=self.timeout,
            headers={"Authorization": f"Bearer {self._token}", "User-Agent": "auditpipe-cli"},
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> QueryApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unreachable(self, e: httpx.TransportError) -> CliError:
        if isinstance(e, httpx.TimeoutException):
            why = f"no answer within {self.timeout:g} s"
        elif isinstance(e, httpx.ConnectError) and "refused" in str(e).lower():
            why = "connection refused (is `auditpipe api` running there? AUDITPIPE_CLI__API_URL sets it)"
        else:
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return CliError(f"cannot reach the query API at {self.base}: {why}", EXIT_UNREACHABLE)

    def get(self, path: str, params: Any = None, what: str = "") -> Any:
        try:
            r = self.http.get(path, params=params)
        except httpx.TransportError as e:
            raise self._unreachable(e) from None
        raise_for(r, what)
        try:
            return r.json()
        except ValueError:
            raise CliError(f"query API answered {path} with something that is not JSON", EXIT_ERROR) from None

    def get_bytes(self, path: str, what: str = "") -> bytes:
        try:
            r = self.http.get(path)
        except httpx.TransportError as e:
            raise self._unreachable(e) from None
        raise_for(r, what)
        return r.content

    @contextmanager
    def stream(self, path: str, params: Any = None) -> Iterator[httpx.Response]:
        """A streamed GET (exports): no read timeout shorter than five minutes between chunks."""
        timeout = httpx.Timeout(self.timeout, read=max(self.timeout, 300.0))
        try:
            with self.http.stream("GET", path, params=params, timeout=timeout) as r:
                if not r.is_success:
                    r.read()
                    raise_for(r)
                yield r
        except httpx.TransportError as e:
            raise self._unreachable(e) from None
