"""An HTTP receiver on a port of our range, run by uvicorn in the test's loop; can be taken down and
brought back, and told to fail the next N requests with a status (and ``Retry-After``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

Handler = Callable[[Request], Awaitable[Response]]


class HttpReceiver:
    def __init__(self, port: int) -> None:
        self.port = port
        self.server: uvicorn.Server | None = None
        self.task: asyncio.Task | None = None
        self.received: list[str] = []  # event ids accepted, in order, duplicates kept
        self.bodies: list[bytes] = []  # every request body (decompressed), as it arrived
        self.first_seen: dict[str, float] = {}
        self.requests = 0
        self.rejected_requests = 0
        self._fail: list[tuple[int, float | None]] = []

    # to override -----------------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        raise NotImplementedError

    # controls --------------------------------------------------------------------------------------
    def fail_next(self, status: int, n: int = 1, retry_after: float | None = None) -> None:
        self._fail.extend([(status, retry_after)] * n)

    def injected_failure(self) -> Response | None:
        self.requests += 1
        if self._fail:
            status, ra = self._fail.pop(0)
            self.rejected_requests += 1
            headers = {"Retry-After": str(int(ra))} if ra is not None else {}
            return JSONResponse({"text": "injected failure", "code": 9}, status_code=status, headers=headers)
        return None

    def accept(self, event_id: str) -> None:
        self.received.append(event_id)
        self.first_seen.setdefault(event_id, time.time())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        config = uvicorn.Config(
            Starlette(routes=self.routes()),
            host="127.0.0.1",
            port=self.port,
            log_level="error",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.server = server
        self.task = asyncio.create_task(server.serve())
        while not server.started:
            if self.task.done():
                self.task.result()
                raise RuntimeError(f"receiver on {self.port} did not start")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self.server is not None and self.task is not None:
            self.server.should_exit = True
            await self.task
        self.server = self.task = None

    down = stop
    up = start
