"""deploy/compose/probe.py, the container healthcheck: healthy only if every URL answers 2xx."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.deploy.helpers import COMPOSE_DIR

spec = importlib.util.spec_from_file_location("probe", COMPOSE_DIR / "probe.py")
assert spec and spec.loader
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server API
        code = 200 if self.path == "/healthz" else 503
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_healthy_when_every_url_answers_2xx(base: str) -> None:
    assert probe.main([f"{base}/healthz"]) == 0


def test_unhealthy_when_one_answers_503(base: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert probe.main([f"{base}/healthz", f"{base}/readyz"]) == 1
    assert "readyz" in capsys.readouterr().out


def test_unhealthy_when_nothing_listens() -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    assert probe.main([f"http://127.0.0.1:{port}/healthz"]) == 1
