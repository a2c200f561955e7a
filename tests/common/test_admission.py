"""Admission control (services/common/admission.py): the pure rule exhaustively, the ASGI limiter on a
small app whose requests the test holds open, and the security headers it is mounted with."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.admission import METRICS, AdmissionLimiter, Limits, body_cost, overloaded
from services.common.http_security import CSP, SecurityHeaders


@given(
    active=st.integers(0, 50),
    used=st.integers(0, 10_000),
    cost=st.integers(0, 10_000),
    max_requests=st.integers(1, 50),
    max_bytes=st.integers(1, 10_000),
)
def test_overloaded_rule(active: int, used: int, cost: int, max_requests: int, max_bytes: int) -> None:
    lim = Limits(max_requests, max_bytes, 100, None, 1)
    why = overloaded(active, used, cost, lim)
    if active >= max_requests:
        assert why == "requests"
    elif used > 0 and used + cost > max_bytes:
        assert why == "body_bytes"
    else:
        assert why is None
        # admitted: within both limits, or alone (its own size is the app's to refuse)
        assert used + cost <= max_bytes or used == 0


@pytest.mark.parametrize(
    "method,headers,cost",
    [
        ("GET", [], 0),
        ("POST", [], 999),  # may stream a body of any size: counted as the per-request maximum
        ("POST", [(b"content-length", b"123")], 123),
        ("PUT", [(b"content-length", b"12x")], 999),
        ("DELETE", [(b"content-length", b"7")], 7),
    ],
)
def test_body_cost(method: str, headers: list, cost: int) -> None:
    assert body_cost({"method": method, "headers": headers}, 999) == cost


class Held:
    """An ASGI app whose requests wait until released (or answer after ``delay_s``)."""

    def __init__(self, delay_s: float = 0.0, stream: bool = False) -> None:
        self.release = asyncio.Event()
        self.entered = 0
        self.cancelled = 0
        self.delay_s = delay_s
        self.stream = stream

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        self.entered += 1
        try:
            if self.stream:
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await asyncio.sleep(self.delay_s)
                await send({"type": "http.response.body", "body": b"late but whole"})
                return
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            elif scope["path"] != "/healthz":
                await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        body = b'{"ok":true}'
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _client(app) -> httpx.AsyncClient:  # noqa: ANN001
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_concurrency_limit_answers_503_with_retry_after() -> None:
    inner = Held()
    app = AdmissionLimiter(inner, service="ingest", limits=Limits(2, 10_000, 100, None, 7))
    before = METRICS["ingest"][0].labels("requests")._value.get()
    async with _client(app) as c:
        held = [asyncio.create_task(c.get("/api/x")) for _ in range(2)]
        while inner.entered < 2:  # noqa: ASYNC110 - the app under test counts, it has no event
            await asyncio.sleep(0.01)
        r = await c.get("/api/x")
        assert r.status_code == 503 and r.headers["retry-after"] == "7"
        assert r.json() == {
            "error": "overloaded",
            "message": "server busy (requests); retry later",
            "retry_after_s": 7,
        }
        assert (await c.get("/healthz")).status_code == 200  # probes are never limited
        inner.release.set()
        assert [x.status_code for x in await asyncio.gather(*held)] == [200, 200]
        assert (await c.get("/api/x")).status_code == 200  # slots were given back
    assert METRICS["ingest"][0].labels("requests")._value.get() == before + 1
    assert app.active == 0 and app.body_bytes == 0


async def test_body_bytes_in_flight_are_bounded() -> None:
    inner = Held()
    app = AdmissionLimiter(inner, service="ingest", limits=Limits(10, 100, 100, None, 1))
    async with _client(app) as c:
        first = asyncio.create_task(c.post("/v1/events", content=b"x" * 80))
        while inner.entered < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        r = await c.post("/v1/events", content=b"x" * 30)
        assert r.status_code == 503 and "body_bytes" in r.json()["message"]
        inner.release.set()
        ok = await c.post("/v1/events", content=b"x" * 20)
        assert ok.status_code == 200 and (await first).status_code == 200


async def test_deadline_answers_503_and_cancels_the_request() -> None:
    inner = Held(delay_s=5)
    app = AdmissionLimiter(inner, service="ingest", limits=Limits(10, 1000, 100, 0.2, 3))
    async with _client(app) as c:
        t0 = asyncio.get_running_loop().time()
        r = await c.get("/api/slow")
        took = asyncio.get_running_loop().time() - t0
    assert r.status_code == 503 and r.headers["retry-after"] == "3" and r.json()["error"] == "deadline"
    assert took < 1.0 and inner.cancelled == 1 and app.active == 0


async def test_deadline_does_not_cut_a_started_response() -> None:
    app = AdmissionLimiter(
        Held(delay_s=0.4, stream=True), service="ingest", limits=Limits(10, 1000, 100, 0.1, 3)
    )
    async with _client(app) as c:
        r = await c.get("/api/export")
    assert r.status_code == 200 and r.content == b"late but whole"


async def test_security_headers_on_every_response_and_kept_when_set() -> None:
    async def app(scope, receive, send) -> None:  # noqa: ANN001
        headers = [(b"content-security-policy", b"default-src 'none'")] if scope["path"] == "/own" else []
        await send({"type": "http.response.start", "status": 404, "headers": headers})
        await send({"type": "http.response.body", "body": orjson.dumps({"detail": "Not Found"})})

    async with _client(SecurityHeaders(app, no_store=("/api",))) as c:
        r = await c.get("/api/events")
        assert r.headers["content-security-policy"] == CSP
        assert "frame-ancestors 'none'" in CSP and "'unsafe-inline'" not in CSP
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer" and r.headers["cache-control"] == "no-store"
        r = await c.get("/static/app.js")
        assert "cache-control" not in r.headers and r.headers["x-content-type-options"] == "nosniff"
        r = await c.get("/own")
        assert r.headers["content-security-policy"] == "default-src 'none'"
