"""Service runtime shared by every long-running process: SIGTERM/SIGINT handling and the
health/metrics HTTP endpoint for services that have no HTTP API of their own (enricher, sink, forwarder).

``/healthz`` answers 200 while the process runs its loop; ``/readyz`` answers 200 when the service's
``ready()`` callable says so (e.g. Kafka and ClickHouse reachable) and 503 otherwise; ``/metrics`` is the
Prometheus exposition of :data:`services.common.metrics.REGISTRY`. These three are unauthenticated by
design (probes and scrapers); nothing else is served here.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.common.metrics import render

ReadyFn = Callable[[], Awaitable[tuple[bool, dict]]]


def health_app(ready: ReadyFn, service: str) -> Starlette:
    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok", "service": service})

    async def readyz(_: Request) -> Response:
        ok, detail = await ready()
        return JSONResponse({"ready": ok, "service": service, **detail}, status_code=200 if ok else 503)

    async def metrics(_: Request) -> Response:
        body, ctype = render()
        return Response(body, media_type=ctype)

    return Starlette(
        routes=[Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
    )


async def serve_health(host: str, port: int, ready: ReadyFn, service: str) -> uvicorn.Server:
    """Start the health server in the running loop; ``await server.shutdown()`` (or stop()) to end it."""
    config = uvicorn.Config(
        health_app(ready, service), host=host, port=port, log_config=None, access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign] - we own signals
    task = asyncio.create_task(server.serve())
    server._auditpipe_task = task  # type: ignore[attr-defined]
    while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.01)
    if task.done() and task.exception():
        raise task.exception()  # type: ignore[misc]
    return server


async def stop_health(server: uvicorn.Server) -> None:
    server.should_exit = True
    task = getattr(server, "_auditpipe_task", None)
    if task is not None:
        await task


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop``: the service finishes (or abandons) its batch and exits cleanly."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-main thread
            pass


def tune_gc_for_throughput(gen0: int = 50_000) -> None:
    """Keep the cyclic garbage collector off the hot path of a streaming service.

    A batch of a few thousand decoded events is a few hundred thousand live containers for a moment;
    with the default thresholds (700 allocations) CPython runs a collection every few events and, now
    and then, a full one that walks every object of the process (measured: JSON validation of the same
    events cost 3x more CPU with the default thresholds). The data of a batch is freed by reference
    counting (it holds no cycles), so collections can be rare: objects that live for the whole process
    are frozen out of every collection, and the youngest generation is collected every ``gen0``
    allocations instead of 700. Call once, after start-up.
    """
    import gc

    gc.collect()
    gc.freeze()
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(gen0, g1, g2)
