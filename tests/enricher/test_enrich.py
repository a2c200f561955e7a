"""The composed enricher over every contract example, dead letters, event ids and the org switch."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from schemas.events_v1 import EnrichedEvent
from schemas.integrity import content_hash_of, verify, verify_record
from services.common.settings import EnricherSettings
from services.enricher.rules.enrich import (
    Dead,
    Enriched,
    Enricher,
    Results,
    Suppressed,
    derive_event_id,
)
from services.enricher.rules.switch import (
    SWITCH_ACTION,
    switch_event,
    switch_event_id,
    switch_transitions,
)

EXAMPLES = sorted(Path("schemas/examples/raw").glob("*.json"))
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
TS = 1_700_000_000_000


def make(**kw: object) -> Enricher:
    base = {"trusted_proxies": ["10.0.0.0/8"]}
    base.update(kw)
    return Enricher.from_settings(EnricherSettings(**base))


def run(e: Enricher, value: bytes | None, offset: int = 7):
    """The outcome of a record holding one event."""
    (out,) = e.process(value, topic="audit.raw.v1", partition=2, offset=offset, timestamp_ms=TS)
    return out


def event_of(out: Enriched) -> EnrichedEvent:
    assert isinstance(out, Enriched), out
    return EnrichedEvent.model_validate_json(out.value)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
@pytest.mark.parametrize("mode", ["indicator", "hmac"])
def test_every_example_enriches_to_a_valid_verified_event(path: Path, mode: str) -> None:
    e = make(hash_mode=mode, hmac_key="x" * 32)
    out = run(e, path.read_bytes())
    assert isinstance(out, Enriched)
    doc = orjson.loads(out.value)
    EnrichedEvent.model_validate(doc)
    assert verify(doc) and doc["content_hash"] == content_hash_of(doc)
    assert verify_record(out.value, strict=True)  # the record is the canonical form itself
    assert out.key == doc["event_id"].encode()
    assert "hunter2" not in out.value.decode() and "old-secret" not in out.value.decode()


def test_examples_classification() -> None:
    e = make()
    got = {p.stem: event_of(run(e, p.read_bytes())) for p in EXAMPLES}
    dep = got["deployment_create_user_console"]
    assert (dep.event_type, dep.source, dep.actor.type, dep.target.type, dep.client_ip) == (
        "create",
        "console",
        "user",
        "deployment",
        "203.0.113.7",
    )
    hook = got["service_update_webhook_system"]
    assert (hook.actor.type, hook.actor.name, hook.source, hook.event_type) == (
        "system",
        "system",
        "webhook",
        "update",
    )
    login = got["user_login"]
    assert (login.event_type, login.source, login.target.type, login.client_ip) == (
        "login",
        "cli",
        "user",
        "198.51.100.23",
    )
    var = got["variable_update_terraform_secret"]
    assert (var.source, var.actor.type, var.target.type) == ("terraform", "api_token", "variable")
    assert var.sensitive_paths == ["changes[0].after", "changes[0].before", "request.payload.value"]
    cert = got["certificate_export_private_key"]
    assert (cert.event_type, cert.target.type) == ("access", "certificate")  # producer values win


def test_producer_values_win() -> None:
    raw = {
        "occurred_at": "2026-01-01T00:00:00Z",
        "org_id": "o",
        "action": "deployment:create",
        "event_type": "custom",
        "source": "mobile",
        "actor": {"type": "service", "id": "x"},
        "target": {"type": "pipeline"},
        "request": {"user_agent": "Mozilla/5.0", "headers": {"x-github-event": "push"}},
    }
    ev = event_of(run(make(), orjson.dumps(raw)))
    assert (ev.event_type, ev.source, ev.actor.type, ev.target.type) == (
        "custom",
        "mobile",
        "service",
        "pipeline",
    )


def test_missing_event_id_is_derived_deterministically() -> None:
    raw = orjson.dumps({"occurred_at": "2026-01-01T00:00:00Z", "org_id": "o", "action": "a:create"})
    a, b = event_of(run(make(), raw, offset=11)), event_of(run(make(), raw, offset=11))
    assert a.event_id == b.event_id == derive_event_id("audit.raw.v1", 2, 11)
    assert event_of(run(make(), raw, offset=12)).event_id != a.event_id
    assert a.received_at == datetime.fromtimestamp(1_700_000_000, UTC)
    assert a.actor.type == "system" and a.source == "system"


def test_the_same_record_enriched_twice_gives_the_same_bytes() -> None:
    """Restart, rebalance, kill -9: reprocessing a raw record yields byte-identical output (indicator
    salts derive from the deployment's secret, enriched_at from the record's timestamp)."""
    for p in EXAMPLES:
        a, b = run(make(), p.read_bytes()), run(make(), p.read_bytes())
        assert a.value == b.value, p
    doc = orjson.loads(run(make(), EXAMPLES[0].read_bytes()).value)
    assert doc["enriched_at"] == "2023-11-14T22:13:20Z"
    other_secret = make(indicator_secret="another-deployment-secret")
    secret_ex = next(p for p in EXAMPLES if "secret" in p.stem)
    assert run(other_secret, secret_ex.read_bytes()).value != run(make(), secret_ex.read_bytes()).value


def test_an_envelope_is_processed_event_by_event() -> None:
    evs = [orjson.loads(p.read_bytes()) for p in EXAMPLES]
    bad = {"org_id": "o", "action": "no colon", "occurred_at": "2026-01-01T00:00:00Z"}
    envelope = orjson.dumps([*evs, bad, {k: v for k, v in evs[0].items() if k != "event_id"}])
    outs = make().process(envelope, topic="audit.raw.v1", partition=2, offset=9, timestamp_ms=TS)
    enriched = [o for o in outs if isinstance(o, Enriched)]
    dead = [o for o in outs if isinstance(o, Dead)]
    assert len(enriched) == len(evs) + 1 and len(dead) == 1
    assert dead[0].letter.reason == "validation_error" and dead[0].letter.error.startswith(f"[{len(evs)}].")
    # the id of an event without one derives from the record and its index in the envelope
    ids = {event_of(o).event_id for o in enriched}
    assert derive_event_id("audit.raw.v1", 2, 9, len(evs) + 1) in ids
    # the same events one per record give the same content (the envelope changes nothing but the ids
    # derived for events without one)
    single = {
        event_of(run(make(), orjson.dumps(e))).event_id: run(make(), orjson.dumps(e)).value for e in evs
    }
    for o in enriched:
        ev = event_of(o)
        if ev.event_id in single:
            assert o.value == single[ev.event_id]


@pytest.mark.parametrize(
    ("value", "reason", "error"),
    [
        (b"[]", "validation_error", "(root): empty envelope"),
        (b"[1, {}", "invalid_json", "not a JSON array of events"),
        (b'[{"org_id": "o"}]', "validation_error", "[0]."),
    ],
)
def test_bad_envelopes_are_dead_letters(value: bytes, reason: str, error: str) -> None:
    outs = make().process(value, topic="audit.raw.v1", partition=2, offset=7, timestamp_ms=TS)
    assert outs and all(isinstance(o, Dead) for o in outs)
    assert outs[0].letter.reason == reason and outs[0].letter.error.startswith(error)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty_message"),
        (b"\xff\xfenot json", "invalid_json"),
        (b"42", "validation_error"),
        (b'{"org_id": "o"}', "validation_error"),
        (
            b'{"org_id": "o", "action": "nocolon", "occurred_at": "2026-01-01T00:00:00Z", "bogus": 1}',
            "validation_error",
        ),
    ],
)
def test_invalid_input_becomes_a_dead_letter(value: bytes | None, reason: str) -> None:
    out = run(make(), value)
    assert isinstance(out, Dead)
    dl = out.letter
    assert (dl.reason, dl.stage, dl.source_topic, dl.source_partition, dl.source_offset) == (
        reason,
        "enricher",
        "audit.raw.v1",
        2,
        7,
    )
    assert dl.error


def test_dead_letter_names_fields_but_never_quotes_secret_input() -> None:
    raw = {
        "org_id": "o",
        "action": "bad action",
        "occurred_at": "canary-ts-77",
        "request": {"payload": {"password": "canary-pw-77"}},
        "metadata": {"k": {"nested": "canary-m-77"}},
    }
    dl = run(make(), orjson.dumps(raw)).letter
    assert "occurred_at" in dl.error and "action" in dl.error
    whole = dl.model_dump_json()
    assert "canary-pw-77" not in whole and "canary-ts-77" not in dl.error
    assert dl.org_id == "o"
    unparsable = b'{"password": "canary-pw-88", "token": "canary-t-88" ' + b"AKIAIOSFODNN7CANARY8"
    dl2 = run(make(), unparsable).letter
    assert "canary" not in dl2.model_dump_json() and "AKIAIOSFODNN7CANARY8" not in dl2.model_dump_json()


def test_a_rule_bug_becomes_a_dead_letter(monkeypatch: pytest.MonkeyPatch) -> None:
    e = make()

    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("boom with token=canary-bug-1")

    monkeypatch.setattr(e, "enrich_doc", boom)
    dl = run(e, EXAMPLES[0].read_bytes()).letter
    assert dl.reason == "enrichment_error" and "canary-bug-1" not in dl.error
    assert dl.error.startswith("RuntimeError at ")  # where, never what (the text may quote a secret)


def test_disabled_org_is_suppressed_and_counted_by_day() -> None:
    e = make(audit_disabled_orgs=["org-acme"])
    out = run(e, (Path("schemas/examples/raw") / "user_login.json").read_bytes())
    assert out == Suppressed("org-acme", "2026-11-21")
    r = Results()
    e.process_record(
        (Path("schemas/examples/raw") / "user_login.json").read_bytes(),
        r,
        topic="t",
        partition=4,
        offset=1,
        timestamp_ms=TS,
    )
    assert r.suppressed == {("org-acme", "2026-11-21", 4): 1} and not r.events
    assert isinstance(
        run(e, (Path("schemas/examples/raw") / "service_update_webhook_system.json").read_bytes()), Enriched
    )


def test_switch_transitions() -> None:
    assert switch_transitions({}, frozenset()) == {}
    assert switch_transitions({}, frozenset({"a"})) == {"a": (None, False)}
    assert switch_transitions({"a": False}, frozenset({"a"})) == {}
    assert switch_transitions({"a": False}, frozenset()) == {"a": (False, True)}
    assert switch_transitions({"a": True}, frozenset({"a"})) == {"a": (True, False)}
    assert switch_transitions({"a": True, "b": False}, frozenset({"b"})) == {}


def test_switch_event_is_a_verified_system_event() -> None:
    eid = switch_event_id("org-x", False, -1)
    assert eid == switch_event_id("org-x", False, -1) != switch_event_id("org-x", False, 5)
    value = switch_event("org-x", None, False, event_id=eid, at=NOW)
    assert value == switch_event("org-x", None, False, event_id=eid, at=NOW)  # a re-emission is identical
    assert verify_record(value, strict=True)
    ev = EnrichedEvent.model_validate_json(value)
    assert verify(orjson.loads(value)) and ev.action == SWITCH_ACTION and ev.actor.type == "system"
    assert ev.target.type == "organization" and ev.changes[0].before is True and ev.changes[0].after is False
    assert isinstance(ev.event_id, uuid.UUID) and ev.enriched_at == NOW


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        (
            {"AUDITPIPE_ENRICHER__TRUSTED_PROXIES": '["10.0.0.0/8", "nope"]'},
            "AUDITPIPE_ENRICHER__TRUSTED_PROXIES",
        ),
        ({"AUDITPIPE_ENRICHER__HASH_MODE": "hmac"}, "HMAC_KEY"),
        ({"AUDITPIPE_ENRICHER__HASH_MODE": "hmac", "AUDITPIPE_ENRICHER__HMAC_KEY": "short"}, "16 characters"),
    ],
)
def test_cli_refuses_bad_settings_with_one_line(env: dict[str, str], needle: str) -> None:
    import os
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "services.cli", "enricher"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
