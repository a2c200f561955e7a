"""The enricher's record bytes are the contract's canonical form (RFC 8785) on any JSON document.

The scrubbing walk decides whether orjson's sorted output can be used (``Walk.canonical_fast``) and
rewrites integral floats as ints; whatever it decides, the bytes must equal the reference
implementation's, and the hash must be the contract's ``content_hash_of``.
"""

from __future__ import annotations

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
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-SAFE, SAFE),
        st.floats(allow_nan=False, allow_infinity=False).filter(
            lambda f: not f.is_integer() or abs(f) <= SAFE
        ),
        st.text(),
    ),
    lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=6), c, max_size=4)),
    max_leaves=20,
)
SCRUBBER = Scrubber.build(
    Hasher("indicator", secret=b"s" * 16), EnricherSettings().sensitive_key_patterns, ()
)


def walked(doc: dict) -> tuple[dict, bool]:
    """``doc`` as the walk leaves it (snapshot: key patterns, detectors, number rules) and its decision."""
    w = Walk(event_id="e")
    out = SCRUBBER._walk(orjson.loads(orjson.dumps(doc)), ("snapshot",), w, True, True)
    return out, w.canonical_fast


@settings(max_examples=300)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_canonical_bytes_equal_rfc8785_whatever_the_walk_decides(doc: dict) -> None:
    body, fast = walked(doc)
    assert canonical(body, fast) == rfc8785.dumps(body)


@settings(max_examples=200)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_record_bytes_carry_the_contract_hash(doc: dict) -> None:
    body, fast = walked(doc)
    body = {"action": "x:y", **{f"k_{k}": v for k, v in body.items()}}
    value, h = record_bytes(dict(body), fast)
    assert h == content_hash_of(orjson.loads(value))
    assert value == event_record({**body, "content_hash": h})
    assert verify_record(value, strict=True)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_rules(f: float) -> None:
    if f.is_integer() and abs(f) > SAFE:
        try:
            walked({"f": f})
        except UnsafeInteger as e:
            assert e.path == ("snapshot", "f")
        else:
            raise AssertionError("an integral float beyond the contract's range must be refused")
        return
    body, fast = walked({"f": f})
    assert canonical(body, fast) == rfc8785.dumps({"f": f})  # same text as the number itself


@given(
    st.dictionaries(
        st.text(alphabet=st.characters(min_codepoint=0xE000), min_size=1, max_size=3),
        st.integers(0, 9),
        min_size=2,
        max_size=4,
    )
)
def test_keys_beyond_bmp_private_use_fall_back(doc: dict) -> None:
    body, fast = walked(doc)
    assert not fast
    assert canonical(body, fast) == rfc8785.dumps(doc)


def test_control_characters_and_unicode_strings() -> None:
    doc = {"a": '\x00\x1f\x7f\u2028 "q" \\ / é 😀', "b": [1, -SAFE, SAFE], "é": None, "Z": True}
    body, fast = walked(doc)
    assert fast and canonical(body, fast) == rfc8785.dumps(doc)


def test_examples_are_canonical_by_the_fast_path() -> None:
    for p in Path("schemas/examples/raw").glob("*.json"):
        body, fast = walked(orjson.loads(p.read_bytes()))
        assert fast, p
        assert canonical(body, fast) == rfc8785.dumps(body)
