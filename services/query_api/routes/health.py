"""Unauthenticated probes and metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from services.common.metrics import render
from services.query_api.deps import ClientDep

router = APIRouter(tags=["health"])


@router.get("/healthz", include_in_schema=False)
def healthz() -> dict:
    return {"status": "ok", "service": "query_api"}


@router.get("/readyz", include_in_schema=False)
async def readyz(client: ClientDep) -> JSONResponse:
    try:
        await run_in_threadpool(client.command, "SELECT 1")
        return JSONResponse({"ready": True, "service": "query_api", "clickhouse": "ok"})
    except Exception as e:  # noqa: BLE001
        return JSONResponse({"ready": False, "service": "query_api", "clickhouse": type(e).__name__}, 503)


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    body, ctype = render()
    return Response(body, media_type=ctype)
