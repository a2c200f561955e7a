"""Security headers on every response of the HTTP services (query API + viewer, ingest).

- ``Content-Security-Policy``: scripts, styles, images and API calls only from the service's own origin,
  no inline script, no plugins, no ``<base>``, and ``frame-ancestors 'none'`` (the page cannot be framed:
  no clickjacking of the viewer's delete buttons). The viewer (``static/``) has no inline script or
  handler, so the policy needs no exception.
- ``X-Frame-Options: DENY`` for browsers without ``frame-ancestors``; ``X-Content-Type-Options: nosniff``
  (an export or a JSON error is never run as script or HTML); ``Referrer-Policy: no-referrer`` (filters in
  URLs — actor names, IPs — never leak to other sites); ``Cross-Origin-Opener-Policy`` and
  ``Cross-Origin-Resource-Policy: same-origin``; ``Cache-Control: no-store`` on API answers (audit
  records do not stay in shared or browser caches).

The interactive API docs (``/docs``, ``/redoc``) are FastAPI's pages, which load Swagger UI / ReDoc from
a CDN and carry one inline script: :func:`secure_docs` serves them with their own policy that allows
exactly that script by its SHA-256 hash (still no ``'unsafe-inline'`` script) and those CDN hosts.

A header a route set itself is never overwritten. Pure ASGI: it only edits the response-start message.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

from services.common.admission import AdmissionLimiter, Limits

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
NO_STORE = (b"cache-control", b"no-store")

_DOCS_CDN = "https://cdn.jsdelivr.net"


class SecurityHeaders:
    """``app.add_middleware(SecurityHeaders, no_store=("/api",))``: the headers above on every response;
    ``Cache-Control: no-store`` where the path starts with one of ``no_store`` (all paths: ``("/",)``)."""

    def __init__(self, app: ASGIApp, no_store: tuple[str, ...] = ("/",)) -> None:
        self.app = app
        self.no_store = no_store

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        store = not scope["path"].startswith(self.no_store)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in HEADERS if k not in present]
                if not store and NO_STORE[0] not in present:
                    headers.append(NO_STORE)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def _hashes(html: str, tag: str) -> list[str]:
    bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S)
    return [f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in bodies]


def docs_policy(html: str) -> str:
    """The CSP of one docs page: its inline scripts by hash, the CDN, and ReDoc's needs."""
    scripts = " ".join(["'self'", _DOCS_CDN, *_hashes(html, "script")])
    return (
        f"default-src 'self'; script-src {scripts}; "
        f"style-src 'self' {_DOCS_CDN} https://fonts.googleapis.com 'unsafe-inline'; "
        "font-src 'self' https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com "
        "https://cdn.redoc.ly; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def secure_docs(app: FastAPI) -> None:
    """Serve the app's ``/docs`` and ``/redoc`` with :func:`docs_policy` (call after routes are set up)."""
    pages: dict[str, Callable[[], HTMLResponse]] = {}
    if app.docs_url and app.openapi_url:
        oauth = app.swagger_ui_oauth2_redirect_url
        pages[app.docs_url] = lambda: get_swagger_ui_html(
            openapi_url=app.openapi_url or "",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=oauth,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )
    if app.redoc_url and app.openapi_url:
        pages[app.redoc_url] = lambda: get_redoc_html(
            openapi_url=app.openapi_url or "", title=f"{app.title} - ReDoc"
        )
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) not in pages]
    for path, render in pages.items():
        app.add_api_route(path, _page(render), include_in_schema=False, methods=["GET"])


def _page(render: Callable[[], HTMLResponse]) -> Callable[[], HTMLResponse]:
    def page() -> HTMLResponse:
        resp = render()
        resp.headers["content-security-policy"] = docs_policy(bytes(resp.body).decode())
        return resp

    return page


def protect(app: FastAPI, service: str, limits: Limits, no_store: tuple[str, ...] = ("/",)) -> None:
    """Mount admission control and the security headers on ``app`` (and secure its docs pages).

    The headers wrap the limiter, so its 503 answers carry them too.
    """
    secure_docs(app)
    app.add_middleware(AdmissionLimiter, service=service, limits=limits)
    app.add_middleware(SecurityHeaders, no_store=no_store)
