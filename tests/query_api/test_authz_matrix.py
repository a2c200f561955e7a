"""The authorisation matrix of the query API: every route x every kind of caller -> the status it gets.

One table (:data:`MATRIX`) drives the test against the real app (real ClickHouse, real Kafka for the
audit events of the sensitive actions) and is the table docs/query_api.md shows ("Permissions"); the doc
is checked to hold exactly :func:`render`. Every request concerns org-acme: an event of its project
proj-web / environment env-production, its archive day files, its retention settings.

Regenerate the doc table after a change: ``python -m tests.query_api.test_authz_matrix``.
"""

from __future__ import annotations

import random
import re
import sys
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.common.settings import Settings
from services.query_api.main import create_app
from tests.query_api.conftest import TOKENS, auth, make_event
from tests.query_api.test_archives_retention import _write_archive

pytestmark = [pytest.mark.clickhouse, pytest.mark.kafka]

DOC = Path(__file__).resolve().parents[2] / "docs" / "query_api.md"
START, END = "<!-- authz-matrix:start (tests/query_api/test_authz_matrix.py) -->", "<!-- authz-matrix:end -->"

# column -> (heading in the doc, token name in tests/query_api/conftest.py TOKENS, or None / "wrong")
CALLERS: dict[str, tuple[str, str | None]] = {
    "none": ("no token", None),
    "wrong": ("wrong token", "wrong"),
    "ev_org": ("EventView, org", "acme"),
    "ev_proj": ("EventView, project", "acme_web_prod"),
    "mgr_proj": ("Manager, project", "acme_web_mgr"),
    "mgr_org": ("Manager, whole org", "acme_mgr"),
    "other": ("other org's Manager", "other_mgr"),
}

# route -> expected status per caller, in CALLERS order. {id} is an org-acme event of proj-web /
# env-production; {file} an archive day of org-acme; {old} one at least 30 days old.
MATRIX: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "GET /api/me":                                  (401, 401, 200, 200, 200, 200, 200),
    "GET /api/events?org=org-acme":                 (401, 401, 200, 200, 200, 200, 200),
    "GET /api/events/{id}":                         (401, 401, 200, 200, 200, 200, 404),
    "GET /api/events/facets?org=org-acme":          (401, 401, 200, 200, 200, 200, 200),
    "GET /api/events/timeline?org=org-acme":        (401, 401, 200, 200, 200, 200, 200),
    "GET /api/events/export?org=org-acme":          (401, 401, 200, 200, 200, 200, 200),
    "GET /api/events/archives?org=org-acme":        (401, 401, 200, 403, 403, 200, 404),
    "GET /api/events/archives/{file}?org=org-acme": (401, 401, 200, 403, 403, 200, 404),
    "DELETE /api/events/archives/{old}?org=org-acme": (401, 401, 403, 403, 403, 200, 404),
    "GET /api/settings/retention?org=org-acme":     (401, 401, 403, 403, 403, 200, 404),
    "PUT /api/settings/retention?org=org-acme":     (401, 401, 403, 403, 403, 200, 404),
    "GET /api/conflicts?org=org-acme":              (401, 401, 403, 403, 403, 200, 200),
    "GET /api/integrity/keys":                      (401, 401, 200, 200, 200, 200, 200),
    "GET /api/integrity/status?org=org-acme":       (401, 401, 200, 403, 403, 200, 404),
    "GET /api/integrity?org=org-acme":              (401, 401, 403, 403, 403, 200, 404),
    "PUT /api/events/{id}":                         (405, 405, 405, 405, 405, 405, 405),
    "PATCH /api/events/{id}":                       (405, 405, 405, 405, 405, 405, 405),
    "DELETE /api/events/{id}":                      (405, 405, 405, 405, 405, 405, 405),
    "GET /healthz":                                 (200, 200, 200, 200, 200, 200, 200),
    "GET /readyz":                                  (200, 200, 200, 200, 200, 200, 200),
    "GET /metrics":                                 (200, 200, 200, 200, 200, 200, 200),
}  # fmt: skip

NOTES = [
    "Lists, facets, timelines, exports and conflicts answer 200 to every valid token they admit but only "
    "ever contain what its scope allows: the other org's Manager gets empty results, a project-scoped "
    "token only its projects.",
    "An event or archive outside the token's organisation is 404, exactly like a missing one.",
    "Archive day files hold a whole org's day, so project- or environment-scoped tokens get 403 on them.",
    "Retention and the audit switch act on a whole organisation: only a Manager whose token is not "
    "narrowed to projects or environments may read or change them.",
    "Conflicts (records kept aside because their event id was already stored with other content) are a "
    "whole-org concern too: a forged record may name any project of the org.",
    "Digests cover whole organisations: integrity status and verification need a token not narrowed to "
    "projects or environments; verifying (audited) needs a Manager.",
    "Changing, patching or deleting an event is not possible for anyone (405).",
]


def render() -> str:
    """The markdown table docs/query_api.md shows, between its markers."""
    heads = [h for h, _ in CALLERS.values()]
    lines = [START, "", "| route | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    for route, statuses in MATRIX.items():
        lines.append(f"| `{route}` | " + " | ".join(str(s) for s in statuses) + " |")
    lines += ["", *(f"- {n}" for n in NOTES), "", END]
    return "\n".join(lines)


def doc_table() -> str:
    text = DOC.read_text()
    m = re.search(re.escape(START) + r".*?" + re.escape(END), text, re.S)
    return m.group(0) if m else ""


def test_doc_shows_exactly_this_table() -> None:
    assert doc_table() == render(), "docs/query_api.md is stale: python -m tests.query_api.test_authz_matrix"


def test_matrix_covers_every_route_of_the_app(api_settings: Settings) -> None:
    app = create_app(api_settings)

    def shape(route: str) -> str:
        return re.sub(r"\{[^}]+\}", "{}", route.split("?")[0])

    routes = {
        shape(f"{m} {r.path}")
        for r in app.routes
        for m in getattr(r, "methods", ()) or ()
        if m != "HEAD" and (r.path.startswith("/api") or r.path in ("/healthz", "/readyz", "/metrics"))
    }
    assert routes - {shape(k) for k in MATRIX} == set(), "routes without a row in MATRIX"


@pytest.fixture
def world(api_settings: Settings, kafka_settings: Settings, topic_names, insert):  # noqa: ANN001, ANN201
    topic = topic_names("audit.raw.v1")["audit.raw.v1"]
    switch = f"test.org-switch.{uuid.uuid4().hex[:8]}"
    qa = api_settings.query_api.model_copy(update={"audit_topic": topic, "switch_topic": switch})
    ret = api_settings.retention.model_copy(update={"audit_topic": topic})
    s = api_settings.model_copy(update={"query_api": qa, "retention": ret})
    ev = make_event(0, org_id="org-acme", project_id="proj-web", environment_id="env-production")
    insert([ev, make_event(1, org_id="org-other")])
    with TestClient(create_app(s)) as client:
        yield client, s, str(ev.event_id)


def test_every_route_for_every_caller(world) -> None:  # noqa: ANN001
    client, s, event_id = world
    root = s.retention.archive_dir
    fresh = _write_archive(root, "org-acme", "2026-11-01", 3, b'{"event_id":"x"}\n')
    rng = random.Random(14)
    got: dict[str, list[int]] = {}
    for route in MATRIX:
        method, target = route.split(" ", 1)
        got[route] = []
        for _col, (_head, token) in CALLERS.items():
            url = target.replace("{id}", event_id).replace("{file}", fresh)
            if "{old}" in url:  # each deletion needs its own old file
                day = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
                old = _write_archive(root, "org-acme", day, 45 + rng.random(), b'{"event_id":"y"}\n')
                url = url.replace("{old}", old)
            headers = {} if token is None else (
                {"Authorization": "Bearer not-a-known-token"} if token == "wrong" else auth(token)
            )  # fmt: skip
            body = None
            if method in ("PUT", "PATCH"):
                body = {"retention_days": rng.randint(2, 300), "audit_enabled": True}
            r = client.request(method, url, headers=headers, json=body)
            got[route].append(r.status_code)
            if r.status_code >= 400:
                assert "detail" in r.json() or "error" in r.json(), (route, token, r.text)
    assert got == {k: list(v) for k, v in MATRIX.items()}
    # scope, not only status: the other org's Manager saw nothing of org-acme
    other = auth("other_mgr")
    assert client.get("/api/events", params={"org": "org-acme"}, headers=other).json()["events"] == []
    assert (
        client.get("/api/events/export", params={"org": "org-acme", "format": "jsonl"}, headers=other).text
        == ""
    )
    assert set(TOKENS) >= {t for _, t in CALLERS.values() if t not in (None, "wrong")}


if __name__ == "__main__":  # rewrite the doc's table from MATRIX
    text = DOC.read_text()
    if START in text:
        text = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: render(), text, flags=re.S)
    else:
        sys.exit(f"add the markers {START} / {END} to {DOC} first")
    DOC.write_text(text)
    print(f"wrote the authorisation table into {DOC}")
