"""The simulated platform of ``auditpipe demo``: who works there and what they do.

Pure data and generators, no I/O. The catalogue follows the seeds: create/update/delete of projects,
environments, services and deployments; deployments queued, cancelled and rolled back; variables holding
secrets changed; logins; a certificate downloaded with its private key; webhook-triggered (system)
changes; API tokens (Terraform, CI) at work.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

ORGS = ("org-acme", "org-globex")
PROJECTS = {"org-acme": ("proj-web", "proj-api"), "org-globex": ("proj-shop",)}
ENVIRONMENTS = ("env-dev", "env-staging", "env-production")
ENV_NAMES = {"env-dev": "Development", "env-staging": "Staging", "env-production": "Production"}
SERVICES = ("svc-cart", "svc-auth", "svc-search", "svc-billing")
RENAMES = {
    "env-dev": ("Dev", "Sandbox", "Development"),
    "env-staging": ("Staging EU", "Pre-production", "Staging"),
    "env-production": ("Production EU", "Live", "Production"),
}


@dataclass(frozen=True)
class Person:
    id: str
    name: str
    email: str
    ip: str
    user_agent: str
    org: str


PEOPLE = (
    Person(
        "u-ada",
        "Ada Lovelace",
        "ada@acme.test",
        "198.51.100.23",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36",
        "org-acme",
    ),
    Person(
        "u-grace",
        "Grace Hopper",
        "grace@acme.test",
        "203.0.113.41",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari/605.1.15",
        "org-acme",
    ),
    Person(
        "u-linus",
        "Linus Torvalds",
        "linus@globex.test",
        "192.0.2.77",
        "acme-cli/3.1.0 (linux; amd64)",
        "org-globex",
    ),
)
TOKENS = (
    {
        "type": "api_token",
        "id": "tok-terraform",
        "name": "terraform-ci",
        "ua": "Terraform/1.9.5 terraform-provider-acme/2.3.0",
        "ip": "198.51.100.200",
    },
    {
        "type": "api_token",
        "id": "tok-deploybot",
        "name": "deploy-bot",
        "ua": "python-httpx/0.28.1",
        "ip": "198.51.100.201",
    },
)
# Proxies between the internet and the platform: the load balancer and an internal hop.
PROXY_CHAIN = ("10.0.0.7", "10.0.3.2")

SECRET_VALUES = ("hunter2-demo-secret", "s3cr3t-db-pa55", "AKIAIOSFODNN7EXAMPLE")
PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"


def _actor(p: Person) -> dict[str, Any]:
    return {"type": "user", "id": p.id, "name": p.name, "email": p.email}


def _xff(client_ip: str) -> str:
    return ", ".join((client_ip, *PROXY_CHAIN[:-1]))


def _request(
    method: str, path: str, ua: str, client_ip: str, payload: Any = None, query: dict | None = None
) -> dict[str, Any]:
    return {
        "method": method,
        "path": path,
        "payload": payload,
        "query": query,
        "user_agent": ua,
        "peer_ip": PROXY_CHAIN[-1],
        "x_forwarded_for": _xff(client_ip),
    }


DEMO_NAMESPACE = uuid.UUID("6f1c3f5e-1d4b-4c1e-9a57-0d1f2c3b4a59")


def history(now: datetime, rng: random.Random, run_id: str) -> list[dict[str, Any]]:
    """A week of past activity (raw events with explicit ``occurred_at``), sent through the HTTP ingest.

    Includes the facts the demo's three questions ask about: Grace deletes environment Staging of
    proj-web three days ago; terraform-ci works today; secrets change in proj-api. Times are anchored at
    the start of the UTC day and event ids derive from the day, so running the demo twice on one day
    re-sends the same events — and the pipeline's de-duplication shows them once.
    """
    out: list[dict[str, Any]] = []
    now = now.replace(hour=0, minute=0, second=0, microsecond=0)

    def add(
        days_ago: float,
        org: str,
        project: str | None,
        env: str | None,
        actor: dict | None,
        action: str,
        target: dict,
        status: int,
        change: str,
        request: dict | None,
        **extra: Any,
    ) -> None:
        ev = {
            "event_id": str(uuid.uuid5(DEMO_NAMESPACE, f"{now.date()}-{len(out)}")),
            "occurred_at": (now - timedelta(days=days_ago)).isoformat(),
            "org_id": org,
            "project_id": project,
            "environment_id": env,
            "actor": actor,
            "action": action,
            "target": target,
            "status": status,
            "change": change,
            "request": request,
            "metadata": {"demo_run": run_id},
            **extra,
        }
        out.append({k: v for k, v in ev.items() if v is not None})

    ada, grace, linus = PEOPLE
    for org in ORGS:
        for proj in PROJECTS[org]:
            p = rng.choice(PEOPLE)
            add(
                6.5,
                org,
                proj,
                None,
                _actor(p),
                "project:create",
                {"id": proj, "name": proj.title()},
                201,
                f"Created project {proj}",
                _request("POST", "/api/projects", p.user_agent, p.ip, {"name": proj}),
                snapshot={"id": proj, "name": proj, "lifecycle": "default"},
            )
            for env in ENVIRONMENTS:
                add(
                    6.2,
                    org,
                    proj,
                    env,
                    _actor(p),
                    "environment:create",
                    {"id": env, "name": ENV_NAMES[env]},
                    201,
                    f"Created environment {ENV_NAMES[env]}",
                    _request(
                        "POST",
                        f"/api/projects/{proj}/environments",
                        p.user_agent,
                        p.ip,
                        {"name": ENV_NAMES[env]},
                    ),
                )
    # Everyday work over the week.
    for _ in range(160):
        org = rng.choice(ORGS)
        proj = rng.choice(PROJECTS[org])
        env = rng.choice(ENVIRONMENTS)
        p = rng.choice(PEOPLE)
        days = rng.uniform(0.2, 6.0)
        kind = rng.random()
        if kind < 0.35:
            dep = f"dep-{rng.randint(1000, 9999)}"
            verb = rng.choice(("create", "create", "create", "cancel", "rollback"))
            add(
                days,
                org,
                proj,
                env,
                _actor(p),
                f"deployment:{verb}",
                {"id": dep, "name": f"{proj} to {env}"},
                201 if verb == "create" else 200,
                f"Deployment {verb} of release 1.{rng.randint(0, 9)}",
                _request(
                    "POST",
                    f"/api/projects/{proj}/deployments",
                    p.user_agent,
                    p.ip,
                    {"release": f"1.{rng.randint(0, 9)}.{rng.randint(0, 20)}", "environment": env},
                ),
                snapshot={
                    "id": dep,
                    "state": {"create": "Queued", "cancel": "Cancelled", "rollback": "RolledBack"}[verb],
                },
            )
        elif kind < 0.6:
            svc = rng.choice(SERVICES)
            verb = rng.choice(("create", "update", "update", "delete"))
            add(
                days,
                org,
                proj,
                env,
                _actor(p),
                f"service:{verb}",
                {"id": svc, "name": svc[4:]},
                200,
                f"Service {svc[4:]} {verb}d",
                _request(
                    {"create": "POST", "update": "PATCH", "delete": "DELETE"}[verb],
                    f"/api/services/{svc}",
                    p.user_agent,
                    p.ip,
                    {"replicas": rng.randint(1, 6)},
                ),
                changes=[{"field": "replicas", "before": rng.randint(1, 6), "after": rng.randint(1, 6)}],
            )
        elif kind < 0.75:
            add(
                days,
                org,
                None,
                None,
                _actor(p),
                "user:login",
                {"type": "user", "id": p.id, "name": p.name},
                200,
                "Signed in",
                _request(
                    "POST",
                    "/api/users/login",
                    p.user_agent,
                    p.ip,
                    {"username": p.email, "password": rng.choice(SECRET_VALUES)},
                ),
            )
        elif kind < 0.85:
            # Webhook-triggered redeploy: nobody initiated it, the system did.
            svc = rng.choice(SERVICES)
            add(
                days,
                org,
                proj,
                env,
                None,
                "service:update",
                {"type": "service", "id": svc, "name": svc[4:]},
                200,
                "Redeployed on git push to main",
                {
                    "method": "POST",
                    "path": "/hooks/github",
                    "headers": {"x-github-event": "push"},
                    "peer_ip": "140.82.112.3",
                },
                metadata={"demo_run": run_id, "commit": f"{rng.getrandbits(28):07x}"},
            )
        else:
            add(
                days,
                org,
                proj,
                None,
                _actor(p),
                "project:update",
                {"id": proj, "name": proj.title()},
                200,
                "Changed project settings",
                _request("PUT", f"/api/projects/{proj}", p.user_agent, p.ip, {"description": "updated"}),
                changes=[{"field": "description", "before": "old", "after": "updated"}],
            )
    # Scheduled work of the platform itself: nobody started it (actor system, source system).
    for day in range(6):
        org = ORGS[day % len(ORGS)]
        proj = PROJECTS[org][0]
        add(
            day + 0.1,
            org,
            proj,
            "env-dev",
            None,
            "environment:stop",
            {"type": "environment", "id": "env-dev", "name": ENV_NAMES["env-dev"]},
            200,
            "Stopped outside office hours (schedule)",
            None,
            source="system",
            changes=[{"field": "state", "before": "Running", "after": "Stopped"}],
        )
    add(
        4.0,
        "org-acme",
        "proj-web",
        None,
        None,
        "certificate:renew",
        {"type": "certificate", "id": "cert-www", "name": "www.acme.test"},
        200,
        "Renewed before expiry (Let's Encrypt)",
        None,
        source="system",
        changes=[{"field": "not_after", "before": "2026-01-10", "after": "2026-04-10"}],
    )
    # The facts behind the three questions.
    add(
        3.0,
        "org-acme",
        "proj-web",
        "env-staging",
        _actor(grace),
        "environment:delete",
        {"type": "environment", "id": "env-staging", "name": "Staging"},
        204,
        "Deleted environment Staging",
        _request("DELETE", "/api/projects/proj-web/environments/env-staging", grace.user_agent, grace.ip),
    )
    for i, (var, secret) in enumerate(
        (("DB_PASSWORD", SECRET_VALUES[1]), ("STRIPE_API_KEY", SECRET_VALUES[0]))
    ):
        add(
            2.0 - i,
            "org-acme",
            "proj-api",
            "env-production",
            _actor(ada),
            "variable:update",
            {"id": f"var-{var.lower()}", "name": var},
            200,
            f"Changed sensitive value of {var}",
            _request(
                "PUT",
                f"/api/projects/proj-api/variables/{var}",
                ada.user_agent,
                ada.ip,
                {"name": var, "value": secret, "is_sensitive": True},
            ),
            changes=[{"field": "value", "before": "previous-" + secret, "after": secret}],
        )
    add(
        1.5,
        "org-acme",
        "proj-web",
        None,
        _actor(ada),
        "certificate:export",
        {"type": "certificate", "id": "cert-www", "name": "www.acme.test"},
        200,
        "Downloaded certificate with its private key",
        _request(
            "GET",
            "/api/certificates/cert-www/export",
            ada.user_agent,
            ada.ip,
            query={"include_private_key": "true"},
        ),
        event_type="access",
        snapshot={"id": "cert-www", "private_key": PRIVATE_KEY},
    )
    return out


def token_activity(now: datetime, rng: random.Random, run_id: str, n: int = 40) -> list[dict[str, Any]]:
    """Today's work of the API tokens (sent with the Python client straight to Kafka)."""
    out = []
    start_of_day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    span = max(60.0, (now - start_of_day).total_seconds() - 60)
    for _ in range(n):
        tok = rng.choice(TOKENS)
        proj = rng.choice(PROJECTS["org-acme"])
        when = start_of_day + timedelta(seconds=rng.uniform(0, span))
        if tok["name"] == "terraform-ci":
            var = rng.choice(("DB_PASSWORD", "API_TOKEN", "LOG_LEVEL"))
            action, target = "variable:update", {"id": f"var-{var.lower()}", "name": var}
            secret = var != "LOG_LEVEL"
            payload = {
                "name": var,
                "value": rng.choice(SECRET_VALUES) if secret else "info",
                "is_sensitive": secret,
            }
            method, path = "PUT", f"/api/projects/{proj}/variables/{var}"
        else:
            dep = f"dep-{rng.randint(1000, 9999)}"
            action, target = "deployment:create", {"id": dep, "name": f"{proj} release"}
            payload = {"release": f"2.{rng.randint(0, 9)}.0", "environment": "env-production"}
            method, path = "POST", f"/api/projects/{proj}/deployments"
        out.append(
            {
                "event_id": str(uuid.uuid4()),
                "occurred_at": when.isoformat(),
                "org_id": "org-acme",
                "project_id": proj,
                "environment_id": "env-production",
                "actor": {"type": tok["type"], "id": tok["id"], "name": tok["name"]},
                "action": action,
                "target": target,
                "status": 201 if action == "deployment:create" else 200,
                "change": f"{action} by {tok['name']}",
                "request": {
                    "method": method,
                    "path": path,
                    "payload": payload,
                    "user_agent": tok["ua"],
                    "peer_ip": PROXY_CHAIN[-1],
                    "x_forwarded_for": _xff(tok["ip"]),
                },
                "metadata": {"demo_run": run_id},
            }
        )
    return out


def _call(p: Person, org: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
    return {
        "method": method,
        "path": path,
        "json": body,
        "headers": {
            "x-demo-user": p.id,
            "x-demo-org": org,
            "user-agent": p.user_agent,
            "x-forwarded-for": _xff(p.ip),
        },
    }


def failing_calls() -> list[dict[str, Any]]:
    """Calls the platform refuses on purpose, so the viewer's status filter has something to find: Linus
    (org-globex) tries to delete a service of org-acme (403); Ada creates an environment that exists
    (409)."""
    ada, _, linus = PEOPLE
    return [
        _call(linus, "org-acme", "DELETE", "/api/projects/proj-web/services/svc-billing"),
        _call(
            ada,
            "org-acme",
            "POST",
            "/api/projects/proj-api/environments",
            {"id": "env-staging", "name": "Staging"},
        ),
    ]


def live_calls(rng: random.Random, n: int, failing: bool = False) -> list[dict[str, Any]]:
    """HTTP calls people make to the platform's own API right now (captured by the middleware); with
    ``failing``, the deliberate 403 and 409 first."""
    calls = failing_calls() if failing else []
    members = [p for p in PEOPLE if p.org == "org-acme"]
    last_dep = {proj: f"dep-{rng.randint(1000, 4999)}" for proj in PROJECTS["org-acme"]}
    while len(calls) < n:
        p = rng.choice(members)
        proj = rng.choice(PROJECTS["org-acme"])
        env = rng.choice(ENVIRONMENTS)
        base = f"/api/projects/{proj}"
        choice = rng.random()
        if choice < 0.35:
            body = {"release": f"3.{rng.randint(0, 4)}.{rng.randint(0, 20)}", "environment": env}
            calls.append(_call(p, "org-acme", "POST", f"{base}/deployments", body))
        elif choice < 0.45:
            calls.append(_call(p, "org-acme", "POST", f"{base}/deployments/{last_dep[proj]}/cancel"))
        elif choice < 0.65:
            name = rng.choice(RENAMES[env])
            calls.append(_call(p, "org-acme", "PATCH", f"{base}/environments/{env}", {"name": name}))
        elif choice < 0.8:
            body = {"value": rng.choice(SECRET_VALUES), "is_sensitive": True}
            calls.append(_call(p, "org-acme", "PUT", f"{base}/variables/API_TOKEN", body))
        elif choice < 0.9:
            calls.append(_call(p, "org-acme", "POST", f"{base}/services/{rng.choice(SERVICES)}/restart"))
        else:
            calls.append(_call(p, "org-acme", "DELETE", f"{base}/services/svc-search"))
    return calls[:n] if not failing else calls[: max(n, len(failing_calls()))]


def now_utc() -> datetime:
    return datetime.now(UTC)
