"""Security headers on every response of the query API (and its viewer) and of the ingest, read from real
uvicorn servers: Content-Security-Policy without inline script and with frame-ancestors 'none',
X-Frame-Options, X-Content-Type-Options, Referrer-Policy; the viewer's HTML has no inline script."""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.common.admission import Limits
from services.common.http_security import CSP, protect
from services.common.settings import Settings
from tests.security.servers import (
    INGEST_TOKEN,
    QUERY_TOKENS,
    ROOT,
    Server,
    ingest_env,
    query_env,
    serve,
)

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

STATIC = ROOT / "services" / "query_api" / "static"


@pytest.fixture(scope="module")
def servers(kafka_settings: Settings, clickhouse_settings: Settings, tmp_path_factory) -> Iterator[dict]:  # noqa: ANN001
    from services.common.clickhouse import make_client
    from services.common.migrations import migrate

    db = f"test_headers_{uuid.uuid4().hex[:8]}"
    ch = make_client(clickhouse_settings)
    migrate(ch, db)
    topic = f"test.headers.{uuid.uuid4().hex[:8]}"
    archives = tmp_path_factory.mktemp("archives")
    try:
        with (
            serve("ingest", 20210, ingest_env(kafka_settings.kafka_bootstrap, topic)) as ingest,
            serve("api", 20211, query_env(kafka_settings.kafka_bootstrap, clickhouse_settings.clickhouse_url,
                                          db, topic, archives)) as api,
        ):  # fmt: skip
            yield {"ingest": ingest, "api": api}
    finally:
        ch.command(f"DROP DATABASE IF EXISTS {db} SYNC")


def _check(r: httpx.Response, where: str) -> None:
    h = r.headers
    csp = h.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in csp, where
    script = re.search(r"script-src ([^;]*)", csp)
    assert script and "'unsafe-inline'" not in script.group(1) and "'unsafe-eval'" not in script.group(1), (
        where
    )
    assert h.get("x-content-type-options") == "nosniff", where
    assert h.get("x-frame-options") == "DENY", where
    assert h.get("referrer-policy") == "no-referrer", where


def _requests(server: Server, token: str) -> list[tuple[str, str, dict]]:
    """Every path of the server's OpenAPI document with each of its methods, plus the pages around it."""
    doc = httpx.get(server.url + "/openapi.json").json()
    auth = {"Authorization": f"Bearer {token}"}
    out = [("GET", "/openapi.json", {}), ("GET", "/docs", {}), ("GET", "/redoc", {}), ("GET", "/healthz", {}),
           ("GET", "/readyz", {}), ("GET", "/metrics", {}), ("GET", "/no/such/path", {}),
           ("DELETE", "/healthz", {})]  # fmt: skip
    for path, ops in doc["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        for method in ops:
            out += [(method.upper(), concrete, {}), (method.upper(), concrete, auth)]
    return out


@pytest.mark.parametrize("name", ["api", "ingest"])
def test_every_response_carries_the_security_headers(servers: dict, name: str) -> None:
    server = servers[name]
    token = QUERY_TOKENS["manager"][0] if name == "api" else INGEST_TOKEN
    seen: set[int] = set()
    reqs = _requests(server, token)
    if name == "api":
        reqs += [("GET", "/", {}), ("GET", "/static/app.js", {}), ("GET", "/static/style.css", {}),
                 ("GET", "/static/index.html", {})]  # fmt: skip
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for method, path, headers in reqs:
            r = c.request(method, path, headers=headers, content=b"{}" if method in ("POST", "PUT") else None)
            _check(r, f"{name} {method} {path} -> {r.status_code}")
            seen.add(r.status_code)
            if path.startswith("/api/") and name == "api":
                assert r.headers.get("cache-control") == "no-store", path
            if path not in ("/docs", "/redoc"):
                assert r.headers["content-security-policy"] == CSP, path
    assert {200, 401, 404, 405} <= seen, seen


@pytest.mark.parametrize("name", ["api", "ingest"])
def test_docs_pages_allow_only_their_own_inline_script(servers: dict, name: str) -> None:
    r = httpx.get(servers[name].url + "/docs")
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    inline = re.findall(r"<script>(.*?)</script>", r.text, re.S)
    assert inline, "FastAPI's Swagger page has one inline script"
    for body in inline:
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp
    assert "frame-ancestors 'none'" in csp and "script-src 'self' https://cdn.jsdelivr.net 'sha256-" in csp


class _Inline(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script" and not a.get("src"):
            self.found.append("inline <script>")
        for k, v in attrs:
            if k.startswith("on"):
                self.found.append(f"handler {k} on <{tag}>")
            if v and v.strip().lower().startswith("javascript:"):
                self.found.append(f"javascript: URL in {k}")
            if k == "style":
                self.found.append(f"inline style on <{tag}>")


@pytest.mark.parametrize("page", sorted(p.name for p in STATIC.glob("*.html")))
def test_viewer_html_has_no_inline_script_or_handler(page: str) -> None:
    p = _Inline()
    p.feed((STATIC / page).read_text())
    assert p.found == []


def test_overload_answers_carry_the_headers_too() -> None:
    app = FastAPI()

    @app.get("/api/x")
    def x() -> dict:
        return {}

    protect(app, "query_api", Limits(0, 0, 0, None, 4))  # admits nothing
    with TestClient(app) as c:
        r = c.get("/api/x")
    assert r.status_code == 503 and r.headers["retry-after"] == "4" and r.json()["error"] == "overloaded"
    assert r.headers["content-security-policy"] == CSP and r.headers["x-frame-options"] == "DENY"
