"""Pure rules, no I/O: status classification, Retry-After, backoff, filters, field mapping, encoders."""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.siem_forwarder.config import ConfigError, parse_config
from services.siem_forwarder.elasticsearch.client import item_outcomes
from services.siem_forwarder.syslog.config import SyslogConfig
from services.siem_forwarder.syslog.encoder import SyslogEncoder, frame, header_field, sd_escape
from services.siem_forwarder.util.config import FieldsConfig, FilterConfig
from services.siem_forwarder.util.delivery import EncodeError
from services.siem_forwarder.util.filters import map_fields, wanted
from services.siem_forwarder.util.retry import (
    RetryConfig,
    Verdict,
    backoff,
    classify_status,
    parse_retry_after,
)
from services.siem_forwarder.webhook.encoder import sign, verify
from tests.siem_forwarder.events import encode, make_event


@pytest.mark.parametrize("status", range(100, 600))
def test_classify_every_status(status: int) -> None:
    v = classify_status(status)
    if 200 <= status < 300:
        assert v is Verdict.OK
    elif status in (408, 429) or (500 <= status < 600 and status != 501):
        assert v is Verdict.RETRY
    elif status in (400, 413, 422):
        assert v is Verdict.SPLIT
    else:
        assert v is Verdict.PERMANENT


def test_retry_after_forms() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None


@given(st.integers(0, 40), st.one_of(st.none(), st.floats(0, 10_000)))
def test_backoff_bounded_and_honours_retry_after(attempts: int, retry_after: float | None) -> None:
    cfg = RetryConfig(initial_backoff_s=0.2, max_backoff_s=30, max_retry_after_s=300)
    b = backoff(cfg)
    b.rng = random.Random(attempts)
    for _ in range(attempts):
        b.next_delay()
    d = b.next_delay(retry_after)
    assert d <= max(30, 300)
    assert d >= min(cfg.max_backoff_s, 0.2 * 2**attempts) * 0.5 - 1e-9
    if retry_after is not None:
        assert d >= min(retry_after, 300) - 1e-9
    else:
        assert d <= 30


def test_backoff_grows_then_caps() -> None:
    b = backoff(RetryConfig(initial_backoff_s=1, max_backoff_s=8))
    b.rng = random.Random(1)
    ds = [b.next_delay() for _ in range(8)]
    assert ds[0] <= 1 and ds[3] >= 4 and max(ds) <= 8


@pytest.mark.parametrize(
    ("flt", "expect"),
    [
        ({}, True),
        ({"orgs": ["org_1"]}, True),
        ({"orgs": ["org_2"]}, False),
        ({"actions": ["deployment:*"]}, True),
        ({"actions": ["project:*"]}, False),
        ({"exclude_actions": ["*:create"]}, False),
        ({"event_types": ["create", "delete"]}, True),
        ({"event_types": ["login"]}, False),
    ],
)
def test_filter(flt: dict, expect: bool) -> None:
    assert wanted(make_event(), FilterConfig(**flt)) is expect


def test_map_fields_exclude_and_rename_leave_input_untouched() -> None:
    doc = make_event()
    before = json.dumps(doc, sort_keys=True)
    out = map_fields(
        doc, FieldsConfig(exclude=["changes", "actor.email", "no.such"], rename={"org_id": "tenant.id"})
    )
    assert json.dumps(doc, sort_keys=True) == before
    assert "changes" not in out and "email" not in out["actor"] and out["tenant"]["id"] == "org_1"
    assert "org_id" not in out


@given(st.text())
def test_sd_escape_roundtrip(value: str) -> None:
    esc = sd_escape(value)
    assert re.fullmatch(r'(?:[^"\\\]]|\\["\\\]])*', esc, flags=re.S)
    assert re.sub(r'\\(["\\\]])', r"\1", esc) == value


@given(st.text(), st.integers(1, 64))
def test_header_field_printusascii(value: str, n: int) -> None:
    out = header_field(value, n)
    assert 1 <= len(out) <= n and all(33 <= ord(c) <= 126 for c in out)


@given(st.binary(min_size=1, max_size=3000))
def test_octet_counting_frame(msg: bytes) -> None:
    f = frame(msg)
    length, rest = f.split(b" ", 1)
    assert int(length) == len(rest) == len(msg) and not length.startswith(b"0")


def test_rfc5424_message_shape() -> None:
    enc = SyslogEncoder(SyslogConfig(name="s", type="syslog", host="h", hostname="my host"))
    ev = make_event(1)
    msg = enc.message(encode(ev), ev).decode()
    m = re.match(r"^<(\d+)>1 (\S+) (\S+) (\S+) (\S+) (\S+) (\[.*?[^\\]\]) (.*)$", msg, flags=re.S)
    assert m, msg
    assert int(m.group(1)) == 13 * 8 + 6
    assert datetime.fromisoformat(m.group(2).replace("Z", "+00:00")).tzinfo is not None
    assert m.group(3) == "my_host" and m.group(4) == "auditpipe" and m.group(5) == "-"
    assert m.group(6) == "deployment:create"
    assert f'event_id="{ev["event_id"]}"' in m.group(7)
    assert m.group(8).encode() == encode(ev)  # MSG is the record, byte for byte


def test_syslog_oversized_event_is_an_encode_error() -> None:
    enc = SyslogEncoder(SyslogConfig(name="s", type="syslog", host="h", max_message_bytes=4096))
    with pytest.raises(EncodeError) as e:
        ev = make_event(extra_bytes=5000)
        enc.encode(encode(ev), ev)
    assert e.value.reason == "message_too_large"


def test_webhook_signature_rejects_forgery_and_replay() -> None:
    body, ts = b'[{"a":1}]', "1700000000"
    sig = sign(b"k", ts, body)
    assert verify(b"k", ts, body, sig, now=1700000010)
    assert not verify(b"k", ts, body + b" ", sig, now=1700000010)  # tampered body
    assert not verify(b"other", ts, body, sig, now=1700000010)  # wrong key
    assert not verify(b"k", ts, body, sig, now=1700000000 + 301)  # replay outside tolerance


def test_bulk_item_outcomes() -> None:
    resp = {
        "errors": True,
        "items": [
            {"create": {"status": 201}},
            {"create": {"status": 409, "error": {"type": "version_conflict_engine_exception"}}},
            {"create": {"status": 429, "error": {"type": "es_rejected_execution_exception"}}},
            {"create": {"status": 400, "error": {"type": "document_parsing_exception"}}},
            {"create": {"status": 503, "error": {"type": "unavailable_shards_exception"}}},
        ],
    }
    d = item_outcomes(5, resp)
    assert d.retry == [2, 4]
    assert list(d.dead) == [3] and "document_parsing_exception" in d.dead[3]
    assert item_outcomes(3, resp).retry == [0, 1, 2]  # item count mismatch: resend all


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"destinations\[dd\]\.batch: .*1000"):
        parse_config(
            {
                "destinations": [
                    {"name": "dd", "type": "datadog", "api_key_env": "X", "batch": {"max_events": 5000}}
                ]
            }
        )
    with pytest.raises(ConfigError, match="duplicate"):
        parse_config(
            {"destinations": [{"name": "a", "type": "webhook", "url": "http://x/", "secret_env": "S"}] * 2}
        )
    with pytest.raises(ConfigError, match="type"):
        parse_config({"destinations": [{"name": "a", "type": "kafka"}]})
    with pytest.raises(ConfigError, match="token_env"):
        parse_config({"destinations": [{"name": "a", "type": "splunk_hec", "url": "http://x/"}]})


def test_documented_example_config_is_valid() -> None:
    """The example in docs/forwarder.md parses: every field it shows exists."""
    import tomllib
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "forwarder.md").read_text()
    block = text.split("```toml\n", 1)[1].split("```", 1)[0]
    cfg = parse_config(tomllib.loads(block))
    assert [d.type for d in cfg.destinations] == [
        "splunk_hec",
        "datadog",
        "elasticsearch",
        "syslog",
        "webhook",
        "otlp",
    ]
    assert cfg.destinations[0].dlq_topic() == "audit.deadletter.v1.forwarder.splunk"
    assert cfg.destinations[0].group() == "auditpipe-forwarder-splunk"


@given(st.lists(st.integers(1, 5000), max_size=200), st.integers(5002, 20_000))
def test_chunk_by_size_respects_the_request_limit(sizes: list[int], limit: int) -> None:
    from services.siem_forwarder.util.runner import chunk_by_size

    chunks = chunk_by_size(sizes, limit)
    assert [i for c in chunks for i in c] == list(range(len(sizes)))  # order kept, nothing lost
    for c in chunks:
        assert c
        # an item larger than the limit on its own travels alone (the vendor refuses it -> dead letter)
        if len(c) > 1:
            assert 2 + sum(sizes[i] + 1 for i in c) <= limit
    assert chunk_by_size(sizes, None) == ([list(range(len(sizes)))] if sizes else [])


# ------------------------------------------------------------------ reading only the members needed
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)


def _at(doc: object, path: str) -> object:
    for p in path.split("."):
        if not isinstance(doc, dict):
            return None
        doc = doc.get(p)
    return doc


@given(
    st.dictionaries(st.sampled_from(["a", "b", "actor", "x.y", ""]), json_values, max_size=5),
    st.lists(st.sampled_from(["a", "actor", "actor.id", "actor.name", "x.y", "b.c.d", ""]), max_size=4),
)
def test_the_reader_returns_what_a_full_parse_would_for_every_needed_path(
    doc: dict, paths: list[str]
) -> None:
    from services.siem_forwarder.util.fields import reader

    got = reader(paths)(orjson.dumps(doc))
    for p in paths:
        assert _at(got, p) == _at(doc, p), p


@pytest.mark.parametrize("value", [b"{nope", b"[1, 2]", b'"text"', b"\xff"])
def test_the_reader_refuses_what_is_no_json_object(value: bytes) -> None:
    from services.siem_forwarder.util.fields import reader

    with pytest.raises(EncodeError) as e:
        reader(["occurred_at"])(value)
    assert e.value.reason == "invalid_json"
