"""``auditpipe token create|list|revoke``: ingest and query tokens in the tokens file.

- ``create`` prints the secret once (alone on stdout, so ``TOKEN=$(auditpipe token create …)`` works;
  the description goes to stderr) and stores only its SHA-256 with who may do what and until when;
- ``list`` shows every token the services accept, from the file and from the settings, never a secret
  nor a hash;
- ``revoke`` removes a token from the file.

The ingest and the query API read the file on the next request (services/common/tokens.py): no restart.
Every create and revoke is itself an audit event (``audit_token:create`` / ``audit_token:revoke``,
which the per-organisation audit switch never suppresses), published and acknowledged before the file
changes: when Kafka cannot take the event, nothing changes and the command exits 1.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas.events_v1 import RawEvent
from services.common.errors import CliError
from services.common.settings import IngestToken, QueryToken, Settings, get_settings
from services.tools.table import Column, render, terminal_width
from services.tools.when import WhenError, iso, parse_when

ALL_ORGS = "*"  # the org id of audit events about tokens valid for every organisation


def _actor_name(args: argparse.Namespace) -> str:
    if args.by:
        return args.by
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown-operator"


def token_events(
    verb: str, record: Any, actor_name: str, reason: str = "", now: datetime | None = None
) -> list[RawEvent]:
    """The audit events of creating or revoking ``record``: one per organisation it reaches (``*`` for a
    token valid in every organisation). Pure apart from fresh event ids."""
    from services.common.audit_events import PRODUCER_CLI, person, system_event

    if record.kind == "ingest":
        orgs = [ALL_ORGS] if ALL_ORGS in record.orgs else list(record.orgs)
        name, holder = record.producer, f"producer {record.producer}"
        meta = {"token_kind": "ingest", "producer": record.producer, "orgs": ",".join(record.orgs)}
    else:
        orgs = [record.org or ALL_ORGS]
        name, holder = record.principal, f"principal {record.principal}"
        meta = {
            "token_kind": "query",
            "principal": record.principal,
            "roles": ",".join(record.roles),
            "org": record.org or ALL_ORGS,
            "projects": ",".join(record.projects),
            "environments": ",".join(record.environments),
        }
    meta["expires_at"] = iso(record.expires_at)
    if reason:
        meta["reason"] = reason[:1024]
    what = "Created" if verb == "create" else "Revoked"
    return [
        system_event(
            org_id=org,
            actor=person(actor_name),
            action=f"audit_token:{verb}",
            event_type=verb if verb == "create" else "delete",
            target_type="audit_token",
            target_id=record.id,
            target_name=name,
            change=f"{what} {record.kind} token {record.id} for {holder}",
            source="cli",
            producer=PRODUCER_CLI,
            metadata={k: v for k, v in meta.items() if v},
            now=now,
        )
        for org in orgs
    ]


def _publish(settings: Settings, events: list[RawEvent], doing: str) -> None:
    from services.common.audit_events import AuditUnavailable, publish_now

    # the client library's own connection warnings would add lines to the one-line error below
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        publish_now(settings, settings.query_api.audit_topic, events)
    except AuditUnavailable as e:
        raise CliError(
            f"{doing}: its audit event could not be recorded (Kafka at {settings.kafka_bootstrap}: {e}); "
            "nothing was changed"
        ) from None


def _path(settings: Settings) -> Path:
    return Path(settings.tokens_file).expanduser()


def _create(args: argparse.Namespace) -> int:
    from services.common import tokens as T

    settings = get_settings()
    now = datetime.now(UTC)
    expires = None
    if args.expires:
        try:
            expires = parse_when(args.expires, now, +1)
        except WhenError as e:
            raise CliError(f"--expires: {e}", 2) from None
        if expires <= now:
            raise CliError("--expires: must be in the future", 2)
    orgs = [o.strip() for o in args.org or [] if o.strip()]
    if not orgs:
        raise CliError(f"--org is required: an organisation id, or '{ALL_ORGS}' for every organisation", 2)
    secret = T.new_secret(args.kind)
    common: dict[str, Any] = {
        "created_at": now,
        "created_by": _actor_name(args),
        "expires_at": expires,
        "description": args.description or "",
        "sha256": T.hash_secret(secret),
    }
    try:
        if args.kind == "ingest":
            if not args.producer:
                raise CliError("--producer is required for an ingest token", 2)
            if args.role or args.project or args.environment:
                raise CliError("--role, --project and --environment apply to query tokens only", 2)
            record: Any = T.StoredIngestToken(
                id=T.new_id(), producer=args.producer, orgs=sorted(set(orgs)), **common
            )
        else:
            if not args.principal:
                raise CliError("--principal is required for a query token", 2)
            if len(orgs) > 1:
                raise CliError(f"a query token reaches one organisation or all ('--org {ALL_ORGS}')", 2)
            record = T.StoredQueryToken(
                id=T.new_id(),
                principal=args.principal,
                roles=sorted(set(args.role or ["EventView"])),
                org=None if orgs[0] == ALL_ORGS else orgs[0],
                projects=sorted(set(args.project or [])),
                environments=sorted(set(args.environment or [])),
                **common,
            )
    except ValueError as e:  # pydantic: an empty name, an unknown role, …
        first = e.errors()[0] if hasattr(e, "errors") else {"loc": (), "msg": str(e)}
        field = ".".join(str(x) for x in first.get("loc", ())) or "token"
        raise CliError(f"invalid {field}: {first.get('msg')}", 2) from None

    path = _path(settings)
    try:
        with T.locked(path) as content:
            _publish(
                settings, token_events("create", record, record.created_by, now=now), "token not created"
            )
            content.tokens.append(record)
    except T.TokenFileError as e:
        raise CliError(str(e)) from None
    if args.json:
        print(json.dumps({**_public(record), "token": secret}, indent=2))
    else:
        print(f"created {_describe(record)}; stored in {path}", file=sys.stderr)
        print("the token (shown once: keep it now, only its SHA-256 is stored):", file=sys.stderr)
        print(secret)
    return 0


def _describe(r: Any) -> str:
    exp = f"expires {iso(r.expires_at)}" if r.expires_at else "never expires"
    if r.kind == "ingest":
        return f"ingest token {r.id} for producer {r.producer} (orgs {', '.join(r.orgs)}; {exp})"
    scope = r.org or "every org"
    if r.projects:
        scope += "; projects " + ", ".join(r.projects)
    if r.environments:
        scope += "; environments " + ", ".join(r.environments)
    return f"query token {r.id} for {r.principal} ({', '.join(r.roles) or 'no role'}; {scope}; {exp})"


def _public(r: IngestToken | QueryToken, now: datetime | None = None) -> dict[str, Any]:
    """What ``list`` shows of a token: everything but its hash."""
    from services.common.tokens import StoredIngestToken, StoredQueryToken

    now = now or datetime.now(UTC)
    stored = isinstance(r, StoredIngestToken | StoredQueryToken)
    out: dict[str, Any] = {
        "id": r.id if stored else None,
        "source": "file" if stored else "settings",
        "kind": "ingest" if isinstance(r, IngestToken) else "query",
    }
    if isinstance(r, IngestToken):
        out.update(producer=r.producer, orgs=list(r.orgs))
    else:
        out.update(
            principal=r.principal,
            roles=list(r.roles),
            org=r.org,
            projects=list(r.projects),
            environments=list(r.environments),
        )
    if stored:
        out.update(
            created_at=iso(r.created_at),
            created_by=r.created_by,
            expires_at=iso(r.expires_at) or None,
            description=r.description,
            status="expired" if r.expired(now) else "active",
        )
    else:
        out["status"] = "active"
    return out


def _list(args: argparse.Namespace) -> int:
    from services.common import tokens as T

    settings = get_settings()
    path = _path(settings)
    try:
        stored = T.read_file(path).tokens
    except T.TokenFileError as e:
        raise CliError(str(e)) from None
    items: list[Any] = [*settings.ingest.tokens, *settings.query_api.tokens, *stored]
    rows = [_public(t) for t in items]
    if args.kind:
        rows = [r for r in rows if r["kind"] == args.kind]
    if not args.all:
        rows = [r for r in rows if r["status"] == "active"]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if T.loose_permissions(path):
        print(f"warning: {path} is readable by group or others: chmod 600 it", file=sys.stderr)
    if not rows:
        print(f"no tokens (file {path}; settings ingest.tokens / query_api.tokens)", file=sys.stderr)
        return 0
    cols = [
        Column("ID", minimum=6),
        Column("KIND"),
        Column("NAME", flexible=True, shrink=2),
        Column("ROLES", flexible=True, shrink=1),
        Column("SCOPE", flexible=True, minimum=10, shrink=0),
        Column("CREATED"),
        Column("EXPIRES"),
        Column("STATUS"),
    ]
    table = []
    for r in rows:
        if r["kind"] == "ingest":
            name, roles, scope = r["producer"], "write", "orgs " + ",".join(r["orgs"])
        else:
            name, roles = r["principal"], ",".join(r["roles"]) or "-"
            scope = "org " + (r["org"] or ALL_ORGS)
            if r["projects"]:
                scope += " projects " + ",".join(r["projects"])
            if r["environments"]:
                scope += " envs " + ",".join(r["environments"])
        created = (r.get("created_at") or "")[:10] + (f" by {r['created_by']}" if r.get("created_by") else "")
        table.append(
            [
                r["id"] or "(settings)",
                r["kind"],
                name,
                roles,
                scope,
                created or "-",
                r.get("expires_at") or "never",
                r["status"],
            ]
        )
    print(render(cols, table, terminal_width()))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from services.common import tokens as T

    settings = get_settings()
    path = _path(settings)
    now = datetime.now(UTC)
    try:
        with T.locked(path) as content:
            found = next((t for t in content.tokens if t.id == args.token_id), None)
            if found is None:
                raise CliError(
                    f"no token {args.token_id} in {path} (tokens from the settings are removed there)", 2
                )
            events = token_events("revoke", found, _actor_name(args), args.reason or "", now=now)
            _publish(settings, events, "token not revoked")
            content.tokens.remove(found)
    except T.TokenFileError as e:
        raise CliError(str(e)) from None
    print(f"revoked {_describe(found)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("token", help="create, list and revoke ingest and query tokens")
    tsub = p.add_subparsers(dest="token_cmd", required=True)

    c = tsub.add_parser(
        "create",
        help="make a token; prints the secret once",
        description="Make an ingest token (a producer writing events) or a query token (a person or "
        "tool reading them). The secret is printed once; only its SHA-256 is stored.",
    )
    c.add_argument("kind", choices=["ingest", "query"])
    c.add_argument("--producer", help="ingest: producer name recorded in every event it sends")
    c.add_argument("--principal", help="query: who holds the token (shown in /api/me and audit events)")
    c.add_argument(
        "--org",
        action="append",
        help="organisation it reaches (repeat for an ingest token; '*' = every organisation)",
    )
    c.add_argument("--role", action="append", choices=["EventView", "Manager"], help="query: role (repeat)")
    c.add_argument("--project", action="append", help="query: only these projects (repeat)")
    c.add_argument("--environment", action="append", help="query: only these environments (repeat)")
    c.add_argument("--expires", help="when it stops working: a duration (90d, 12h) or an ISO date")
    c.add_argument("--description", help="a note for whoever lists the tokens later")
    c.add_argument("--by", help="who is creating it, for the audit event (default: the OS user)")
    c.add_argument("--json", action="store_true", help="print id, scope and secret as JSON")
    c.set_defaults(func=_create)

    ls = tsub.add_parser("list", help="show tokens (never a secret)")
    ls.add_argument("--kind", choices=["ingest", "query"])
    ls.add_argument("--all", action="store_true", help="include expired tokens")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)

    r = tsub.add_parser("revoke", help="remove a token; services refuse it from their next request")
    r.add_argument("token_id", help="the id shown by create and list (tok_…)")
    r.add_argument("--reason", help="recorded in the audit event")
    r.add_argument("--by", help="who is revoking it, for the audit event (default: the OS user)")
    r.set_defaults(func=_revoke)
