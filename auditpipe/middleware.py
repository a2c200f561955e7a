"""``AuditMiddleware``: a pure ASGI middleware that reports a Starlette/FastAPI app's mutating calls.

    app.add_middleware(
        AuditMiddleware,
        client=AsyncAuditClient("kafka", bootstrap_servers="127.0.0.1:9092"),
        org_id=lambda request: request.state.org_id,
        actor=lambda request: {"type": "user", "id": request.state.user_id},
    )

For every request whose method is in ``methods`` (POST, PUT, PATCH, DELETE by default) it records the
method, path, query, JSON body (read up to ``max_payload_bytes`` before the app runs and replayed to
it; larger or non-JSON bodies are recorded as ``metadata.payload_*`` facts instead: ``payload_bytes`` is
the count of bytes seen, a lower bound when the app did not read a truncated body to its end), the
response status, the actor returned by ``actor(request)``, the TCP peer and the X-Forwarded-For header
(repeated header lines joined with ", " in order, as RFC 9110 defines for list fields, so a proxy that
appends its own line is not lost). The event is built after the response has been sent and only
enqueued in the client's bounded buffer: the response never waits for Kafka or the ingest.

**Naming from the matched route.** After the app ran, the route Starlette/FastAPI matched is in the
scope; its template and path parameters name the event (:func:`name_from_route`):

- ``PATCH /api/projects/{project_id}/environments/{environment_id}`` -> action ``environment:update``,
  target ``environment`` ``env-dev``, project ``p1`` (the entity is the literal segment before the last
  parameter, made singular; parameters named like ``project_id`` / ``environment_id`` fill the project
  and environment);
- ``POST …/deployments`` -> ``deployment:create`` (a collection: the handler may name the new target);
- ``POST …/deployments/{deployment_id}/cancel`` -> ``deployment:cancel`` (a literal that is not a
  plural after the last parameter of a POST is the verb);
- routers with prefixes, ``include_router`` and mounted sub-apps (``Mount``) give the full template;
- only when no route matched (a 404, or an app without a router) is the action guessed from the URL
  (:func:`default_action`).

**Overrides, most specific first:** what the handler adds with :func:`audit_context` (target id and name
of a created resource, changes, a different action); the :func:`audit_action` decorator on the endpoint;
the ``actions`` mapping (``"POST /api/projects/{project_id}/deploy"`` or the template alone -> action);
the ``action(request)`` callable; then the route naming above.

``org_id(request)`` returning None excludes the call explicitly (e.g. an unauthenticated request); this
is counted in ``skipped``. Any failure to build or buffer an event is counted in ``errors`` and logged at
ERROR with the event id, org, action and route only (never the event: its payload may hold secrets the
enricher has not scrubbed yet); it never fails the host app's response.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TypeVar
from urllib.parse import parse_qs

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.routing import Host, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auditpipe.client import AsyncAuditClient
from schemas.events_v1 import Actor, RawEvent

logger = logging.getLogger("auditpipe.middleware")

VERBS = {"POST": "create", "PUT": "update", "PATCH": "update", "DELETE": "delete"}
PROJECT_PARAMS = ("project_id", "projectId", "project", "project_slug")
ENVIRONMENT_PARAMS = ("environment_id", "environmentId", "environment", "env_id", "env")
XFF_MAX = 16384  # the contract's bound on request.x_forwarded_for
STATE_KEY = "auditpipe"  # request.state.auditpipe: what the handler adds (audit_context)
ATTR = "__auditpipe_action__"  # set on an endpoint by @audit_action

_ID_LIKE = re.compile(r"(\d|^[0-9a-f]{8,}$|^[0-9a-f-]{32,36}$)", re.I)
_BAD = re.compile(r"[^A-Za-z0-9_.\-]")
_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")
_IRREGULAR = {
    "people": "person",
    "children": "child",
    "indices": "index",
    "statuses": "status",
    "aliases": "alias",
    "addresses": "address",
    "analyses": "analysis",
    "caches": "cache",
    "data": "data",
    "metadata": "metadata",
    "settings": "settings",
}

F = TypeVar("F", bound=Callable[..., Any])


def singular(word: str) -> str:
    """English plural -> singular for resource names (``environments`` -> ``environment``,
    ``policies`` -> ``policy``, ``api_keys`` -> ``api_key``); the last word of a compound only."""
    head, sep, last = word.rpartition("_")
    w = last.lower()
    if w in _IRREGULAR:
        out = _IRREGULAR[w]
    elif w.endswith("ies") and len(w) > 4:
        out = w[:-3] + "y"
    elif w.endswith(("sses", "shes", "ches", "xes", "zzes")):
        out = w[:-2]
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")) and len(w) > 2:
        out = w[:-1]
    else:
        out = w
    return f"{head}{sep}{out}"


def _entity(segment: str) -> str:
    return singular(_BAD.sub("_", segment).replace("-", "_").lower())[:128] or "http"


def _verb(method: str) -> str:
    return VERBS.get(method.upper(), _BAD.sub("_", method.lower()) or "call")


def default_action(method: str, path: str) -> str:
    """The URL heuristic, for calls no route matched: ``<entity>:<verb>`` from the last path segment
    that does not look like an id, e.g. POST /projects/7/deployments -> ``deployment:create``;
    DELETE /projects/p-7 -> ``project:delete``."""
    segs = [s for s in path.split("/") if s]
    entity = next((s for s in reversed(segs) if not _ID_LIKE.search(s)), "http")
    return f"{_entity(entity)}:{_verb(method)}"


@dataclass(frozen=True)
class Naming:
    """What a call is about: action, target and where (from the route, the URL or an override)."""

    action: str
    target_type: str | None = None
    target_id: str | None = None
    project_id: str | None = None
    environment_id: str | None = None
    template: str | None = None


def _segments(template: str) -> list[tuple[str, str | None]]:
    """(text, parameter name or None for a literal) per path segment."""
    out: list[tuple[str, str | None]] = []
    for seg in template.strip("/").split("/"):
        if not seg:
            continue
        m = _PARAM.search(seg)
        out.append((seg, m.group(1) if m else None))
    return out


@lru_cache(maxsize=4096)
def _route_shape(method: str, template: str) -> tuple[str, str, str | None]:
    """(verb, entity, name of the target parameter) of a route: pure in its template, so cached (an app
    has a bounded set of routes)."""
    segs = _segments(template)
    verb = _verb(method)
    target_param: str | None = None
    entity_seg: str | None = None
    last = len(segs) - 1
    if (
        method.upper() == "POST"
        and len(segs) >= 3
        and segs[last][1] is None
        and segs[last - 1][1] is not None
        and segs[last - 2][1] is None
        and singular(segs[last][0]) == segs[last][0].lower()
    ):
        # POST /deployments/{deployment_id}/cancel: an operation on one resource (a plural such as
        # POST /projects/{project_id}/deployments is a collection: a deployment is created)
        verb = _BAD.sub("_", segs[last][0].lower())[:64] or verb
        target_param, entity_seg = segs[last - 1][1], segs[last - 2][0]
    elif segs and segs[last][1] is not None:
        target_param = segs[last][1]
        entity_seg = next((text for text, p in reversed(segs[:last]) if p is None), None)
    elif segs:
        entity_seg = segs[last][0]
    return verb, (_entity(entity_seg) if entity_seg else "http"), target_param


def name_from_route(
    method: str,
    template: str,
    params: Mapping[str, Any],
    project_params: Iterable[str] = PROJECT_PARAMS,
    environment_params: Iterable[str] = ENVIRONMENT_PARAMS,
) -> Naming:
    """Name a call from its route template and path parameters (pure)."""
    verb, entity, target_param = _route_shape(method.upper(), template)
    target_id = _param(params, target_param) if target_param else None

    def pick(names: Iterable[str], own: str) -> str | None:
        if entity == own and target_id is not None:
            return target_id
        return next((v for n in names if (v := _param(params, n)) is not None), None)

    return Naming(
        action=f"{entity}:{verb}",
        target_type=entity,
        target_id=target_id,
        project_id=pick(project_params, "project"),
        environment_id=pick(environment_params, "environment"),
        template=template,
    )


def _param(params: Mapping[str, Any], name: str | None) -> str | None:
    if name is None or name not in params or params[name] is None:
        return None
    v = str(params[name])
    return v[:256] if v else None


@lru_cache(maxsize=4096)
def _leaf_pieces(leaf: str) -> tuple[tuple[str, ...], frozenset[str]]:
    """A template split into literal text and parameter names, alternating (cached per route)."""
    # re.split with one group alternates text, name, text, …; the convertor part is not captured
    pieces = tuple(_PARAM.split(leaf))
    return pieces, frozenset(pieces[1::2])


def full_template(path: str, leaf: str, params: Mapping[str, Any]) -> str:
    """The whole route template of ``path`` from the template of the route that matched it, which is
    relative to its router or mount (``/environments/{environment_id}``), and the path parameters of
    every level (``{"project_id": "p1", "environment_id": "env-dev"}``): the part of the path before the
    leaf keeps its literal segments and gets the outer parameters back, right to left
    (``/api/projects/p1`` -> ``/api/projects/{project_id}``)."""
    pieces, leaf_names = _leaf_pieces(leaf)
    concrete = "".join(p if i % 2 == 0 else str(params.get(p, "{" + p + "}")) for i, p in enumerate(pieces))
    if not path.endswith(concrete):
        return leaf or path
    if concrete == path and not leaf_names and leaf:
        return leaf
    prefix = path[: len(path) - len(concrete)].rstrip("/") if concrete else path.rstrip("/")
    segs = prefix.split("/")
    taken: set[int] = set()
    outer = [(n, str(v)) for n, v in params.items() if n not in leaf_names and v is not None]
    for name, value in reversed(outer):
        for i in range(len(segs) - 1, -1, -1):
            if i not in taken and segs[i] == value and value:
                segs[i] = "{" + name + "}"
                taken.add(i)
                break
    return "/".join(segs) + leaf


def route_of(scope: Scope) -> tuple[str, dict[str, Any]] | None:
    """(full template, path parameters) of the route the app matched, or None when none did.

    Starlette and FastAPI routers put the matched route and its parameters in the scope they share with
    this middleware; a mount without routes of its own (a bare ASGI app) counts as no match.
    """
    route = scope.get("route")
    leaf = getattr(route, "path_format", None)
    if not isinstance(leaf, str) or isinstance(route, Mount | Host):
        return None
    params = dict(scope.get("path_params") or {})
    return full_template(scope.get("path", ""), leaf, params), params


@dataclass(frozen=True)
class RouteAudit:
    """What :func:`audit_action` attached to an endpoint."""

    action: str
    target_param: str | None = None


def audit_action(action: str, *, target: str | None = None) -> Callable[[F], F]:
    """Name the events of one endpoint: ``@audit_action("deployment:trigger", target="deployment_id")``
    (``target``: the path parameter holding the target id). Put it under the route decorator."""

    def mark(fn: F) -> F:
        setattr(fn, ATTR, RouteAudit(action, target))
        return fn

    return mark


def audit_context(request: Request, **fields: Any) -> None:
    """What only the handler knows, added to this call's event: ``target`` ({"id", "name", "type"}),
    ``action``, ``change``, ``changes`` ([{"field", "before", "after"}]), ``snapshot``, ``project_id``,
    ``environment_id``, ``metadata``. Later calls add to earlier ones."""
    current = getattr(request.state, STATE_KEY, None)
    if not isinstance(current, dict):
        current = {}
        setattr(request.state, STATE_KEY, current)
    current.update(fields)


def join_header(scope: Scope, name: bytes) -> str | None:
    """Every line of a header, joined with ", " in order (RFC 9110 §5.3 for list-based fields)."""
    values = [v.decode("latin-1").strip() for k, v in scope.get("headers", []) if k.lower() == name]
    values = [v for v in values if v]
    return ", ".join(values) if values else None


def bounded_xff(value: str | None) -> tuple[str | None, bool]:
    """X-Forwarded-For within the contract's bound: when too long, the rightmost entries are kept (the
    trusted-proxy rule reads from the right) from an entry boundary on; (value, truncated?)."""
    if value is None or len(value) <= XFF_MAX:
        return value, False
    tail = value[-XFF_MAX:]
    cut = tail.find(",")
    return (tail[cut + 1 :].strip() if cut >= 0 else tail), True


def _reason(e: BaseException) -> str:
    """Why an event failed, without any value from it (a ValidationError's text quotes its input)."""
    if isinstance(e, ValidationError):
        locs = sorted({".".join(str(x) for x in err.get("loc", ())) for err in e.errors(include_input=False)})
        return "invalid " + ", ".join(locs[:5])
    return type(e).__name__


class AuditMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        client: AsyncAuditClient,
        org_id: Callable[[Request], str | None] | str,
        actor: Callable[[Request], Actor | dict[str, Any] | None] | None = None,
        methods: Iterable[str] = ("POST", "PUT", "PATCH", "DELETE"),
        max_payload_bytes: int = 64 * 1024,
        action: Callable[[Request], str] | None = None,
        actions: Mapping[str, str] | None = None,
        source: str = "api",
        exclude_paths: Iterable[str] = (),
        project_params: Iterable[str] = PROJECT_PARAMS,
        environment_params: Iterable[str] = ENVIRONMENT_PARAMS,
    ) -> None:
        self.app = app
        self.client = client
        self.org_id = org_id
        self.actor = actor
        self.methods = frozenset(m.upper() for m in methods)
        self.max_payload_bytes = max_payload_bytes
        self.action = action
        self.actions = dict(actions or {})
        self.source = source
        self.exclude_paths = tuple(exclude_paths)
        self.project_params = tuple(project_params)
        self.environment_params = tuple(environment_params)
        self.emitted = 0
        self.skipped = 0
        self.errors = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"].upper() not in self.methods
            or scope.get("path", "").startswith(self.exclude_paths or ("\0",))
        ):
            await self.app(scope, receive, send)
            return
        started = datetime.now(UTC)
        scope.setdefault("state", {})  # shared with the app's Request, so audit_context reaches us
        body = bytearray()
        seen = 0
        status: int | None = None
        cap = self.max_payload_bytes

        def account(msg: Message) -> None:
            nonlocal seen
            if msg["type"] == "http.request":
                chunk = msg.get("body", b"")
                seen += len(chunk)
                if seen <= cap:
                    body.extend(chunk)

        # Read the body up to the cap before the app runs (replayed to it unchanged), so the payload is
        # recorded even when the app does not read it. Beyond the cap the body streams through untouched.
        early: list[Message] = []
        while True:
            msg = await receive()
            account(msg)
            early.append(msg)
            if msg["type"] != "http.request" or not msg.get("more_body") or seen > cap:
                break

        async def receive_wrapper() -> Message:
            if early:
                return early.pop(0)
            msg = await receive()
            account(msg)
            return msg

        async def send_wrapper(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except Exception:
            await self._emit(scope, started, bytes(body), seen, status or 500)
            raise
        await self._emit(scope, started, bytes(body), seen, status)

    async def _emit(
        self, scope: Scope, started: datetime, body: bytes, seen: int, status: int | None
    ) -> None:
        ev: RawEvent | None = None
        try:
            ev = self.build(scope, started, body, seen, status)
            if ev is None:
                self.skipped += 1
                return
            await self.client.emit_prepared(self.client.prepare(ev))
            self.emitted += 1
        except Exception as e:  # noqa: BLE001 - never fail the host app's response
            self.errors += 1
            # ids and the action only: the event itself may carry secrets not yet scrubbed
            if ev is not None:
                logger.error(
                    "audit event not buffered (%s): event_id=%s org_id=%s action=%s",
                    _reason(e),
                    ev.event_id,
                    ev.org_id,
                    ev.action,
                )
            else:
                found = route_of(scope)
                logger.error(
                    "audit event not built (%s): %s %s",
                    _reason(e),
                    scope.get("method"),
                    found[0] if found else "(no route matched)",
                )

    def naming(self, scope: Scope, request: Request) -> Naming:
        """Action, target and where of one call: overrides, then the route, then the URL."""
        method = scope["method"].upper()
        found = route_of(scope)
        if found is not None:
            template, params = found
            named = name_from_route(method, template, params, self.project_params, self.environment_params)
        else:
            template, params = None, {}
            named = Naming(action=default_action(method, scope.get("path", "")))
        override: str | None = None
        target_param: str | None = None
        if self.action is not None:
            override = self.action(request)
        if template is not None:
            override = self.actions.get(f"{method} {template}") or self.actions.get(template) or override
        marked = getattr(scope.get("endpoint"), ATTR, None)
        if isinstance(marked, RouteAudit):
            override, target_param = marked.action, marked.target_param
        if override is None:
            return named
        entity = override.rpartition(":")[0]
        tid = _param(params, target_param) if target_param else named.target_id
        return Naming(
            action=override,
            target_type=entity.rsplit("/", 1)[-1] or named.target_type,
            target_id=tid,
            project_id=named.project_id,
            environment_id=named.environment_id,
            template=template,
        )

    def build(
        self, scope: Scope, started: datetime, body: bytes, seen: int, status: int | None
    ) -> RawEvent | None:
        """The raw event of one call (pure apart from the app's callables); None = excluded by org_id."""
        request = Request(scope)
        org = self.org_id if isinstance(self.org_id, str) else self.org_id(request)
        if not org:
            return None
        headers: dict[str, str] = {}
        for k, v in scope.get("headers", []):
            headers.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
        meta: dict[str, str] = {}
        payload: Any = None
        if seen:
            ctype = headers.get("content-type", "")
            if seen > self.max_payload_bytes:
                meta["payload_truncated"] = "true"
                meta["payload_bytes"] = str(seen)
            elif "json" in ctype:
                try:
                    payload = orjson.loads(body)
                except orjson.JSONDecodeError:
                    meta["payload_unparsed"] = "invalid JSON"
                    meta["payload_bytes"] = str(seen)
            else:
                if ctype:
                    meta["payload_content_type"] = ctype[:256]
                meta["payload_bytes"] = str(seen)
        qs = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        query = {k: v[0] if len(v) == 1 else v for k, v in qs.items()} or None
        actor = self.actor(request) if self.actor is not None else None
        client = scope.get("client")
        method = scope["method"].upper()
        path = scope.get("path", "")
        named = self.naming(scope, request)
        if named.template is not None:
            meta["route"] = named.template[:8192]
        xff, cut = bounded_xff(join_header(scope, b"x-forwarded-for"))
        if cut:
            meta["x_forwarded_for_truncated"] = "true"
        target = {"type": named.target_type, "id": named.target_id}
        added = (scope.get("state") or {}).get(STATE_KEY) or {}
        if isinstance(added.get("target"), Mapping):
            target.update({k: v for k, v in added["target"].items() if v is not None})
        extra_meta = added.get("metadata") if isinstance(added.get("metadata"), Mapping) else {}
        doc: dict[str, Any] = {
            "event_id": uuid.uuid4(),
            "occurred_at": started,
            "org_id": org,
            "project_id": added.get("project_id") or named.project_id,
            "environment_id": added.get("environment_id") or named.environment_id,
            "actor": actor.model_dump(exclude_none=True) if isinstance(actor, Actor) else actor,
            "action": added.get("action") or named.action,
            "event_type": VERBS.get(method),
            "target": {k: v for k, v in target.items() if v is not None} or None,
            "source": self.source,
            "status": status,
            "change": added.get("change"),
            "changes": added.get("changes") or [],
            "snapshot": added.get("snapshot"),
            "request": {
                "method": method,
                "path": path[:8192],
                "query": query,
                "payload": payload,
                "user_agent": headers.get("user-agent", "")[:2048] or None,
                "peer_ip": client[0] if client else None,
                "x_forwarded_for": xff,
            },
            "metadata": {**meta, **{str(k): str(v) for k, v in extra_meta.items()}},
        }
        if doc["action"].rpartition(":")[2] != doc["event_type"]:
            doc["event_type"] = None  # e.g. deployment:cancel: the enricher derives it from the verb
        return RawEvent.model_validate(doc)
