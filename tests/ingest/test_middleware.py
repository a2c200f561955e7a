"""AuditMiddleware in a Starlette app: mutating calls arrive on the raw topic, contract-valid, keyed by org;
reads are not captured; delivery never sits on the response path. (Naming from routes, overrides and
logging: test_middleware_naming.py.)"""

from __future__ import annotations

import time

import httpx
import pytest
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from auditpipe import AsyncAuditClient, AuditMiddleware, DeliveryError
from schemas.events_v1 import RawEvent
from tests.ingest.conftest import make_topic, read_topic

pytestmark = pytest.mark.kafka


async def create(request: Request) -> Response:
    body = await request.json()
    return JSONResponse({"id": "d-1", **body}, status_code=201)


async def delete(_: Request) -> Response:
    return Response(status_code=204)


async def things(_: Request) -> Response:
    return JSONResponse([])


async def upload(request: Request) -> Response:
    await request.body()
    return PlainTextResponse("ok")


async def boom(_: Request) -> Response:
    raise RuntimeError("handler failed")


def host_app(client: AsyncAuditClient, cap: int = 1024) -> Starlette:
    app = Starlette(
        routes=[
            Route("/api/projects/{pid}/deployments", create, methods=["POST"]),
            Route("/api/projects/{pid}", delete, methods=["DELETE"]),
            Route("/api/things", things, methods=["GET", "POST"]),
            Route("/api/upload", upload, methods=["PUT"]),
            Route("/api/boom", boom, methods=["POST"]),
        ]
    )
    app.add_middleware(
        AuditMiddleware,
        client=client,
        org_id=lambda r: r.headers.get("x-org"),
        actor=lambda r: {"type": "user", "id": r.headers["x-user"]} if "x-user" in r.headers else None,
        max_payload_bytes=cap,
    )
    return app


async def test_middleware_events_arrive_on_raw_topic(kafka_settings) -> None:
    topic = make_topic(kafka_settings)
    client = AsyncAuditClient(
        "kafka", bootstrap_servers=kafka_settings.kafka_bootstrap, topic=topic, producer="web"
    )
    app = host_app(client)
    transport = httpx.ASGITransport(app=app, client=("198.51.100.5", 5555), raise_app_exceptions=False)
    hdr = {"x-org": "org-acme", "x-user": "u-7", "x-forwarded-for": "203.0.113.1, 10.0.0.1"}
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        r = await http.post(
            "/api/projects/p-1/deployments?dry=1&tag=a&tag=b", json={"env": "prod"}, headers=hdr
        )
        assert r.status_code == 201
        assert (await http.get("/api/things", headers=hdr)).status_code == 200  # not captured
        assert (await http.delete("/api/projects/p-1", headers={"x-org": "org-beta"})).status_code == 204
        assert (await http.put("/api/upload", content=b"\x00\x01binary", headers=hdr)).status_code == 200
        big = {"blob": "z" * 5000}
        assert (await http.post("/api/things", json=big, headers=hdr)).status_code == 200
        assert (await http.post("/api/boom", json={}, headers=hdr)).status_code == 500
        assert (await http.post("/api/things", json={})).status_code == 200  # no org: excluded
    mw = app.middleware_stack
    await client.close()

    recs = await read_topic(kafka_settings, topic, 5, settle_s=0.5)
    assert len(recs) == 5
    evs = {}
    for rec in recs:
        ev = RawEvent.model_validate_json(rec.value)
        assert rec.key is not None and ev.producer == "web"  # an envelope is keyed by its first event
        evs[(ev.request.method, ev.request.path)] = ev

    c = evs[("POST", "/api/projects/p-1/deployments")]
    assert c.action == "deployment:create" and c.event_type == "create" and c.status == 201
    assert c.request.payload == {"env": "prod"} and c.request.query == {"dry": "1", "tag": ["a", "b"]}
    assert c.actor.id == "u-7" and c.actor.type.value == "user"
    assert c.request.peer_ip == "198.51.100.5" and c.request.x_forwarded_for == "203.0.113.1, 10.0.0.1"

    d = evs[("DELETE", "/api/projects/p-1")]
    assert d.org_id == "org-beta" and d.status == 204 and d.actor is None and d.action == "project:delete"

    u = evs[("PUT", "/api/upload")]
    assert u.request.payload is None and u.metadata == {"payload_bytes": "8", "route": "/api/upload"}
    t = evs[("POST", "/api/things")]
    assert t.request.payload is None and t.metadata == {
        "payload_truncated": "true",
        "payload_bytes": "5011",
        "route": "/api/things",
    }
    assert evs[("POST", "/api/boom")].status == 500
    assert mw is not None


async def test_response_does_not_wait_for_delivery() -> None:
    """Destination down: responses stay fast; the events stay buffered and are reported, not dropped."""
    client = AsyncAuditClient(
        "http", url="http://127.0.0.1:19498", token="t", backoff_initial_s=0.5, flush_at_exit=False
    )
    app = host_app(client)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        slowest = 0.0
        for i in range(20):
            t0 = time.perf_counter()
            r = await http.post(
                f"/api/projects/p-{i}/deployments", json={"i": i}, headers={"x-org": "org-acme"}
            )
            slowest = max(slowest, time.perf_counter() - t0)
            assert r.status_code == 201
    assert slowest < 0.25, slowest
    with pytest.raises(DeliveryError) as err:
        await client.close(timeout_s=0.2)
    assert len(err.value.undelivered) == 20


class Env(BaseModel):
    name: str


async def test_middleware_in_fastapi_app(kafka_settings) -> None:
    from fastapi import FastAPI

    topic = make_topic(kafka_settings)
    client = AsyncAuditClient("kafka", bootstrap_servers=kafka_settings.kafka_bootstrap, topic=topic)
    api = FastAPI()
    api.add_middleware(
        AuditMiddleware,
        client=client,
        org_id=lambda r: r.path_params.get("org") or r.headers.get("x-org"),
        actor=lambda r: {"type": "api_token", "name": "ci-token"},
        methods=("POST", "PATCH"),
    )

    @api.patch("/orgs/{org}/environments/{env_id}")
    async def patch_env(org: str, env_id: str, body: Env) -> dict:
        return {"id": env_id, "name": body.name}

    @api.delete("/orgs/{org}/environments/{env_id}")
    async def delete_env(org: str, env_id: str) -> dict:
        return {}

    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        assert (
            await http.patch("/orgs/o1/environments/e-9", json={"name": "prod"}, headers={"x-org": "o1"})
        ).status_code == 200
        assert (
            await http.patch("/orgs/o1/environments/e-9", json={"nom": 1}, headers={"x-org": "o1"})
        ).status_code == 422
        assert (
            await http.delete("/orgs/o1/environments/e-9", headers={"x-org": "o1"})
        ).status_code == 200  # not in methods
    await client.close()
    recs = await read_topic(kafka_settings, topic, 2, settle_s=0.5)
    evs = sorted((RawEvent.model_validate_json(r.value) for r in recs), key=lambda e: e.status)
    assert [(e.request.method, e.status, e.action) for e in evs] == [
        ("PATCH", 200, "environment:update"),
        ("PATCH", 422, "environment:update"),
    ]
    assert evs[0].request.payload == {"name": "prod"} and evs[0].actor.name == "ci-token"
    assert all(RawEvent.model_validate_json(r.value).org_id == "o1" for r in recs)
