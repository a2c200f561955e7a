"""Pure rules of tamper evidence: the Merkle tree, the digest format and signature, windows, the chain,
and the contract's examples (an auditor's test vectors)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.digests_v1 import (
    EMPTY_ROOT,
    GENESIS,
    Digest,
    digest_hash,
    fmt_time,
    merkle_root,
    merkle_root_recursive,
    parse_time,
    signing_bytes,
)
from services.common.settings import load_settings
from services.integrity.keys import (
    IntegrityKeyError,
    Signer,
    key_id,
    load_private_key,
    load_public_key,
    public_b64,
    public_pem,
    verify_signature,
)
from services.integrity.rules import (
    BROKEN_CHAIN,
    FORKED_CHAIN,
    SignedDigest,
    align_down,
    chain_findings,
    windows,
)
from services.integrity.seal import build_digest

ROOT = Path(__file__).resolve().parents[2] / "schemas"
EXAMPLES = ROOT / "examples" / "digests"

hashes = st.lists(st.binary(min_size=32, max_size=32).map(bytes.hex), max_size=70)


@given(hashes)
def test_bottom_up_merkle_root_is_rfc6962s_recursive_definition(hs) -> None:  # noqa: ANN001
    assert merkle_root(hs) == merkle_root_recursive(hs)


def test_merkle_root_known_values() -> None:
    a = hashlib.sha256(b"a").hexdigest()
    leaf = hashlib.sha256(b"\x00" + bytes.fromhex(a)).digest()
    assert merkle_root([]) == EMPTY_ROOT == hashlib.sha256(b"").hexdigest()
    assert merkle_root([a]) == leaf.hex()
    assert merkle_root([a, a]) == hashlib.sha256(b"\x01" + leaf + leaf).hexdigest()


@given(hashes.filter(lambda x: len(x) >= 1), st.data())
def test_any_change_of_a_leaf_or_order_changes_the_root(hs, data) -> None:  # noqa: ANN001
    i = data.draw(st.integers(0, len(hs) - 1))
    changed = list(hs)
    changed[i] = hashlib.sha256(bytes.fromhex(hs[i])).hexdigest()
    assert merkle_root(changed) != merkle_root(hs)
    assert merkle_root(hs[:i] + hs[i + 1 :]) != merkle_root(hs)


def _key() -> Signer:
    k = Ed25519PrivateKey.generate()
    return Signer(key_id(k.public_key()), k)


W = (datetime(2026, 1, 1, 10, tzinfo=UTC), datetime(2026, 1, 1, 11, tzinfo=UTC))


def test_digest_signature_covers_every_field_and_verifies() -> None:
    s = _key()
    rec = build_digest(s, "org-a", 1, W, 3, "ab" * 32, GENESIS, W[1] + timedelta(minutes=2))
    Digest.model_validate(rec)
    assert verify_signature(s.public, rec["signature"], signing_bytes(rec))
    for field, value in [
        ("event_count", 4),
        ("merkle_root", "cd" * 32),
        ("window_end", "2026-01-01T12:00:00.000Z"),
        ("org_id", "org-b"),
        ("prev_digest_hash", "11" * 32),
        ("sequence", 2),
    ]:
        forged = {**rec, field: value}
        assert not verify_signature(s.public, rec["signature"], signing_bytes(forged)), field
    other = _key()
    assert not verify_signature(other.public, rec["signature"], signing_bytes(rec))
    assert other.key_id != s.key_id


def test_keys_load_from_pem_and_base64_and_refuse_anything_else() -> None:
    k = Ed25519PrivateKey.generate()
    pem = k.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    seed = k.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    assert key_id(load_private_key(pem).public_key()) == key_id(k.public_key())
    assert key_id(load_private_key(base64.b64encode(seed).decode()).public_key()) == key_id(k.public_key())
    assert key_id(load_public_key(public_pem(k.public_key()))) == key_id(k.public_key())
    assert key_id(load_public_key(public_b64(k.public_key()))) == key_id(k.public_key())
    for bad in ("", "not a key", base64.b64encode(b"short").decode(), "-----BEGIN PRIVATE KEY-----\nxx\n"):
        with pytest.raises(IntegrityKeyError) as e:
            load_private_key(bad)
        assert "BEGIN" not in str(e.value) or bad == ""  # the message never echoes key material


def test_settings_refuse_bad_public_keys_and_production_without_a_signing_key(monkeypatch) -> None:  # noqa: ANN001
    from services.common.settings import SettingsError

    with pytest.raises(SettingsError, match="INTEGRITY__PUBLIC_KEYS"):
        load_settings(integrity={"public_keys": ["nope"]})
    from tests.common.test_settings_production import SAFE

    for key in list(os.environ):
        if key.startswith("AUDITPIPE_"):
            monkeypatch.delenv(key)
    for key, value in SAFE.items():
        if not key.startswith("AUDITPIPE_INTEGRITY__"):
            monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError, match="SIGNING_KEY"):
        load_settings()
    s = load_settings(integrity={"signing_key_file": "/k"})
    assert s.integrity.signing_key_file is not None
    load_settings(integrity={"enabled": False})
    with pytest.raises(SettingsError, match="AUDITPIPE_INTEGRITY__SIGNING_KEY"):
        load_settings(integrity={"signing_key": "CHANGE_ME"})


def test_signing_key_is_masked_by_config_show() -> None:
    from services.common.settings import masked_dump

    k = Ed25519PrivateKey.generate()
    seed = base64.b64encode(
        k.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
    ).decode()
    dump = json.dumps(masked_dump(load_settings(integrity={"signing_key": seed})))
    assert seed not in dump and "**********" in dump


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(datetime(2020, 1, 1), datetime(2030, 1, 1), timezones=st.just(UTC)),
    st.integers(0, 10 * 86_400_000),
    st.sampled_from([1, 2, 60, 3600, 86_400]),
)
def test_windows_tile_the_span_and_cut_at_multiples_of_the_window(start, span_ms, w) -> None:  # noqa: ANN001
    start = start.replace(microsecond=start.microsecond // 1000 * 1000)
    end = start + timedelta(milliseconds=span_ms)
    if span_ms // (w * 1000) > 2000:
        return
    ws = windows(start, end, w)
    if span_ms == 0:
        assert ws == []
        return
    assert ws[0][0] == start and ws[-1][1] == end
    for (a, b), (c, _) in zip(ws, ws[1:], strict=False):
        assert b == c and a < b
    for a, b in ws:
        assert align_down(a, w) == align_down(b - timedelta(milliseconds=1), w)  # never crosses a boundary
        assert b == end or align_down(b, w) == b


def test_align_down_matches_clickhouse_to_start_of_interval_convention() -> None:
    t = datetime(2026, 11, 29, 9, 37, 12, 345000, tzinfo=UTC)
    assert align_down(t, 3600) == datetime(2026, 11, 29, 9, tzinfo=UTC)
    assert align_down(t, 7) == datetime.fromtimestamp(int(t.timestamp()) // 7 * 7, tz=UTC)


def _chain(n: int, s: Signer, org: str = "org-a") -> list[dict]:
    out, prev = [], GENESIS
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(n):
        w = (start + timedelta(hours=i), start + timedelta(hours=i + 1))
        rec = build_digest(s, org, i + 1, w, i, merkle_root([]), prev, w[1])
        prev = digest_hash(rec)
        out.append(rec)
    return out


def test_a_complete_chain_has_no_findings_and_every_break_or_fork_is_named() -> None:
    s = _key()
    chain = _chain(6, s)
    assert chain_findings("org-a", [SignedDigest.of(r) for r in chain]) == []
    # a digest removed from the middle
    f = chain_findings("org-a", [SignedDigest.of(r) for i, r in enumerate(chain) if i != 3])
    assert [x.kind for x in f] == [BROKEN_CHAIN] and "4..4 are missing" in f[0].detail
    assert f[0].window_start == chain[4]["window_start"]
    # the first removed
    f = chain_findings("org-a", [SignedDigest.of(r) for r in chain[1:]])
    assert [x.kind for x in f] == [BROKEN_CHAIN] and "1..1" in f[0].detail
    # a second, different digest for window 3 (validly signed: a stolen key, or a rewritten table)
    w3 = (parse_time(chain[2]["window_start"]), parse_time(chain[2]["window_end"]))
    other = build_digest(s, "org-a", 3, w3, 99, "ee" * 32, chain[2]["prev_digest_hash"], w3[1])
    f = chain_findings("org-a", [SignedDigest.of(r) for r in chain] + [SignedDigest.of(other)])
    assert FORKED_CHAIN in {x.kind for x in f}
    # duplicates of the same digest are one digest
    assert chain_findings("org-a", [SignedDigest.of(r) for r in chain + chain]) == []


def test_contract_examples_validate_and_verify_with_the_example_key() -> None:
    schema = json.loads((ROOT / "jsonschema" / "digest.v1.json").read_text())
    pub = load_public_key((EXAMPLES / "example-key.pub.pem").read_text())
    window = json.loads((EXAMPLES / "example-window.json").read_text())["window_events"]
    first = json.loads((EXAMPLES / "first.json").read_text())
    second = json.loads((EXAMPLES / "second-empty.json").read_text())
    for rec in (first, second):
        jsonschema.validate(rec, schema)
        Digest.model_validate(rec)
        assert rec["key_id"] == key_id(pub)
        assert verify_signature(pub, rec["signature"], signing_bytes(rec))
        assert (EXAMPLES / ("first.json" if rec is first else "second-empty.json")).read_bytes().rstrip(
            b"\n"
        ) == __import__("rfc8785").dumps(rec)
    ordered = sorted(window, key=lambda e: e["event_id"])
    assert first["merkle_root"] == merkle_root([e["content_hash"] for e in ordered])
    assert first["event_count"] == len(window)
    assert second["prev_digest_hash"] == digest_hash(first) and second["merkle_root"] == EMPTY_ROOT
    assert chain_findings("org-example", [SignedDigest.of(first), SignedDigest.of(second)]) == []


def test_time_format_is_fixed() -> None:
    assert fmt_time(datetime(2026, 1, 2, 3, 4, 5, 678900, tzinfo=UTC)) == "2026-01-02T03:04:05.678Z"
