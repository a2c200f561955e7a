"""The enricher's fast content hash equals the contract's ``content_hash_of`` on any JSON document."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.integrity import content_hash_of
from services.enricher.rules.canonical import _eligible, fast_content_hash

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**60), 2**60),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(),
    ),
    lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=6), c, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=200)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_fast_hash_equals_contract_hash(doc: dict) -> None:
    try:
        want = content_hash_of(doc)
    except Exception:  # noqa: BLE001 - e.g. integers outside RFC 8785's range: contract refuses too
        return
    assert fast_content_hash(doc) == want


@given(
    st.dictionaries(
        st.text(alphabet=st.characters(min_codepoint=0xE000), max_size=3),
        st.integers(0, 9),
        min_size=2,
        max_size=4,
    )
)
def test_keys_beyond_bmp_private_use_fall_back(doc: dict) -> None:
    assert fast_content_hash(doc) == content_hash_of(doc)


def test_control_characters_and_unicode_strings() -> None:
    doc = {"a": '\x00\x1f\x7f\u2028 "q" \\ / é 😀', "b": [1, -(2**53 - 1), 2**53 - 1], "é": None, "Z": True}
    assert _eligible(doc)
    assert fast_content_hash(doc) == content_hash_of(doc)


def test_examples_are_eligible() -> None:
    import orjson

    for p in Path("schemas/examples/raw").glob("*.json"):
        doc = orjson.loads(p.read_bytes())
        assert fast_content_hash(doc) == content_hash_of(doc)
