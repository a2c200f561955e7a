"""HTTP written once for every HTTP destination: one pooled ``httpx.AsyncClient`` per destination, a POST
that turns transport errors and statuses into a :class:`Delivery`, and a probe helper."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from services.siem_forwarder.util.delivery import Delivery, ProbeError
from services.siem_forwarder.util.retry import (
    DEFAULT_RETRYABLE,
    DEFAULT_SPLIT,
    Verdict,
    classify_status,
    parse_retry_after,
)

MAX_RESPONSE_CHARS = 2000  # what a dead letter keeps of a response body


def make_http(timeout_s: float, verify: bool | str = True) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s),
        limits=httpx.Limits(max_connections=4, max_keepalive_connections=2),
        verify=verify,
        follow_redirects=False,
    )


@dataclass
class HttpResult:
    status: int
    text: str
    retry_after: float | None
    response: httpx.Response | None = None

    def describe(self) -> str:
        return f"HTTP {self.status}: {self.text[:MAX_RESPONSE_CHARS]}"


class TransportError(Exception):
    """Connection refused/reset, timeout, TLS failure: always transient."""


async def post(http: httpx.AsyncClient, url: str, content: bytes, headers: dict[str, str]) -> HttpResult:
    try:
        r = await http.post(url, content=content, headers=headers)
    except httpx.HTTPError as e:
        raise TransportError(f"{type(e).__name__}: {e}") from e
    return HttpResult(r.status_code, r.text, parse_retry_after(r.headers.get("retry-after")), r)


def whole_request(
    n: int,
    res: HttpResult,
    retryable: frozenset[int] = DEFAULT_RETRYABLE,
    split: frozenset[int] = DEFAULT_SPLIT,
) -> Delivery:
    """A request whose status speaks for every event in it."""
    v = classify_status(res.status, retryable, split)
    if v is Verdict.OK:
        return Delivery.ok()
    if v is Verdict.RETRY:
        return Delivery.retry_all(n, res.describe(), res.retry_after)
    if v is Verdict.SPLIT:
        return Delivery.split_all(n, res.describe())
    return Delivery.dead_all(n, res.describe())


async def send_whole(
    http: httpx.AsyncClient,
    url: str,
    content: bytes,
    headers: dict[str, str],
    n: int,
    retryable: frozenset[int] = DEFAULT_RETRYABLE,
) -> Delivery:
    try:
        res = await post(http, url, content, headers)
    except TransportError as e:
        return Delivery.retry_all(n, str(e))
    return whole_request(n, res, retryable)


async def probe_http(
    http: httpx.AsyncClient, method: str, url: str, headers: dict[str, str], content: bytes | None = None
) -> str:
    """Reachable and authorised (no 401/403/404/5xx) -> a short description, else :class:`ProbeError`."""
    try:
        r = await http.request(method, url, headers=headers, content=content)
    except httpx.HTTPError as e:
        raise ProbeError(f"unreachable: {type(e).__name__}: {e}") from e
    if r.status_code in (401, 403):
        raise ProbeError(f"credentials refused (HTTP {r.status_code})")
    if r.status_code == 404 or r.status_code >= 500:
        raise ProbeError(f"HTTP {r.status_code}: {r.text[:200]}")
    return f"HTTP {r.status_code}"
