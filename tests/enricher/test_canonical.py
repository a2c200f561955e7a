"""The enricher's record bytes are the contract's canonical form (RFC 8785) on any JSON document.

The scrubbing walk leaves every document in a form orjson (sorted keys) writes as RFC 8785 bytes:
integral floats become ints, floats in [1e-6, 1e-5) and objects needing UTF-16 key order become
pre-written fragments. Whatever the input, the bytes must equal the reference implementation's and the
hash must be the contract's ``content_hash_of``.
"""

from __future__ import annotations

import struct
from pathlib import Path

import orjson
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.integrity import content_hash_of, event_record, verify_record
from services.common.settings import EnricherSettings
from services.enricher.rules.canonical import canonical, record_bytes
from services.enricher.rules.sensitive import Hasher, Scrubber, UnsafeInteger, Walk

SAFE = 2**53 - 1
floats = st.floats(allow_nan=False, allow_infinity=False).filter(
    lambda f: not f.is_integer() or abs(f) <= SAFE
)
any_double = (
    st.integers(0, 2**64 - 1)
    .map(lambda b: struct.unpack("<d", struct.pack("<Q", b))[0])
    .filter(lambda f: f == f and abs(f) != float("inf") and (not f.is_integer() or abs(f) <= SAFE))
)
# keys mixing ASCII, the BMP's private use area (U+E000..) and characters beyond U+FFFF, whose orders
# differ between UTF-16 code units (RFC 8785) and code points (orjson)
keys = st.one_of(
    st.text(max_size=6),
    st.text(alphabet=st.sampled_from("a\ue000\uffee\U00010000\U0001f600z"), min_size=1, max_size=3),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-SAFE, SAFE), floats, any_double, st.text()),
    lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(keys, c, max_size=5)),
    max_leaves=25,
)
HASHER = Hasher("indicator", secret=b"s" * 16)
SCRUBBER = Scrubber.build(HASHER, EnricherSettings().sensitive_key_patterns, ())
NO_PATTERNS = Scrubber.build(HASHER, [], ())


def walked(doc: dict, scrub: bool = False) -> dict:
    """``doc`` as the walk leaves it as a snapshot: the number and key rules always; key patterns and
    detectors only when ``scrub`` (without them the value must not change at all)."""
    w = Walk(event_id="e")
    s = SCRUBBER if scrub else NO_PATTERNS
    return s._walk(orjson.loads(orjson.dumps(doc)), ("snapshot",), w, scrub, scrub)


@settings(max_examples=400)
@given(st.dictionaries(keys, json_values, max_size=6))
def test_canonical_bytes_equal_rfc8785(doc: dict) -> None:
    assert canonical(walked(doc)) == rfc8785.dumps(doc)


@settings(max_examples=300)
@given(st.dictionaries(keys, json_values, max_size=6))
def test_scrubbed_output_is_the_rfc8785_form_of_its_own_value(doc: dict) -> None:
    out = canonical(walked(doc, scrub=True))
    assert rfc8785.dumps(orjson.loads(out)) == out


@settings(max_examples=200)
@given(st.dictionaries(keys, json_values, max_size=6))
def test_record_bytes_carry_the_contract_hash(doc: dict) -> None:
    body = {"action": "x:y", "snapshot": walked(doc, scrub=True)}
    value, h = record_bytes(dict(body))
    parsed = orjson.loads(value)
    assert h == content_hash_of(parsed)
    assert value == event_record({**parsed, "content_hash": h})
    assert verify_record(value, strict=True)


@given(any_double | floats)
def test_every_float_is_written_as_rfc8785_writes_it(f: float) -> None:
    assert canonical(walked({"f": f})) == rfc8785.dumps({"f": f})


@given(st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f.is_integer() and abs(f) > SAFE))
def test_an_integral_float_beyond_the_range_is_refused(f: float) -> None:
    try:
        walked({"f": f})
    except UnsafeInteger as e:
        assert e.path == ("snapshot", "f")
    else:
        raise AssertionError("an integral float beyond the contract's range must be refused")


def test_the_two_spots_where_orjson_differs() -> None:
    doc = {"small": [1.5e-6, -9.943458097118422e-06, 1e-6], "keys": {"\uffee": 1, "\U0001f600": 2, "a": 3}}
    assert orjson.dumps(doc, option=orjson.OPT_SORT_KEYS) != rfc8785.dumps(doc)  # why the walk exists
    assert canonical(walked(doc)) == rfc8785.dumps(doc)


def test_control_characters_and_unicode_strings() -> None:
    doc = {"a": '\x00\x1f\x7f\u2028 "q" \\ / é 😀', "b": [1, -SAFE, SAFE], "é": None, "Z": True}
    assert canonical(walked(doc)) == rfc8785.dumps(doc)


def test_examples_are_canonical() -> None:
    for p in Path("schemas/examples/raw").glob("*.json"):
        doc = orjson.loads(p.read_bytes())
        out = canonical(walked(doc, scrub=True))
        assert rfc8785.dumps(orjson.loads(out)) == out, p
