"""Client IP: the trusted-proxy rule (docs/enricher.md), its edge cases, and properties."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.enricher.rules.client_ip import MAX_HOPS, TrustedProxies, parse_address, resolve_client_ip

T = TrustedProxies.parse


# -- the seed's three worked examples, verbatim ---------------------------------------------------
def test_seed_all_trusted_uses_leftmost_or_client() -> None:
    # "If the IP range 0.0.0.0/0 is configured as a trusted proxy, then any request will always use the
    # leftmost IP address found in the X-Forwarded-For header, or the IP address of the client if no
    # header is provided"
    trusted = T(["0.0.0.0/0"])
    assert resolve_client_ip("192.168.1.1", "100.100.101.102, 200.123.124.125", trusted) == "100.100.101.102"
    assert resolve_client_ip("192.168.1.1", None, trusted) == "192.168.1.1"
    assert resolve_client_ip("192.168.1.1", "", trusted) == "192.168.1.1"


def test_seed_no_trusted_proxies_uses_client_even_with_header() -> None:
    # "If no trusted proxies are configured, the IP address of the client that sent the request will
    # always be used as it is not considered trusted, even if there is a valid X-Forwarded-For header"
    assert (
        resolve_client_ip("192.168.123.111", "100.100.101.102, 200.123.124.125", T([])) == "192.168.123.111"
    )


def test_seed_rightmost_untrusted() -> None:
    # "If the IP address 192.168.123.111 is configured as a trusted proxy, and a request is received with
    # a client IP address of 192.168.123.111 and the header X-Forwarded-For: 100.100.101.102,
    # 200.123.124.125, then 200.123.124.125 will be used as the IP address of this request as it is the
    # rightmost untrusted IP address"
    trusted = T(["192.168.123.111"])
    assert (
        resolve_client_ip("192.168.123.111", "100.100.101.102, 200.123.124.125", trusted) == "200.123.124.125"
    )


# -- the rule ---------------------------------------------------------------------------------------
def test_untrusted_peer_ignores_header() -> None:
    assert resolve_client_ip("8.8.8.8", "1.1.1.1", T(["10.0.0.0/8"])) == "8.8.8.8"


def test_walk_skips_trusted_hops_from_the_right() -> None:
    trusted = T(["10.0.0.0/8", "172.16.0.0/12"])
    assert resolve_client_ip("10.0.0.1", "6.6.6.6, 5.5.5.5, 172.16.0.9, 10.1.1.1", trusted) == "5.5.5.5"


def test_all_trusted_header_gives_leftmost() -> None:
    trusted = T(["10.0.0.0/8"])
    assert resolve_client_ip("10.0.0.1", "10.0.0.7, 10.0.0.8", trusted) == "10.0.0.7"


def test_ipv6_cidr_and_brackets() -> None:
    trusted = T(["2001:db8::/32", "[2001:db9::1]"])
    assert resolve_client_ip("[2001:db8::1]:443", "2a00:1450::1, [2001:db8::5]:80", trusted) == "2a00:1450::1"
    assert resolve_client_ip("2001:db9::1", "2001:DB8:0:0:0:0:0:7", trusted) == "2001:db8::7"


def test_ipv4_mapped_ipv6_peer_is_read_as_ipv4() -> None:
    assert resolve_client_ip("::ffff:10.0.0.5", "7.7.7.7", T(["10.0.0.0/8"])) == "7.7.7.7"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        ("  1.2.3.4  ", "1.2.3.4"),
        ("1.2.3.4:8080", "1.2.3.4"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("", None),
        ("   ", None),
        ("unknown", None),
        ("_hidden", None),
        ("999.1.1.1", None),
        ("1.2.3.4:http", None),
        ("[2001:db8::1", None),
        ("[2001:db8::1]x", None),
        ("example.com", None),
        ("1" * 500, None),
        (None, None),
    ],
)
def test_parse_address(text: str | None, expected: str | None) -> None:
    got = parse_address(text)
    assert (str(got) if got else None) == expected


def test_whitespace_and_empty_entries_are_skipped() -> None:
    trusted = T(["10.0.0.0/8"])
    assert resolve_client_ip(" 10.0.0.1 ", " , 3.3.3.3 ,, 10.0.0.2 , ", trusted) == "3.3.3.3"


def test_garbage_entry_stops_the_walk_at_the_nearest_trusted_hop() -> None:
    trusted = T(["10.0.0.0/8"])
    assert resolve_client_ip("10.0.0.1", "4.4.4.4, unknown, 10.0.0.2", trusted) == "10.0.0.2"
    assert resolve_client_ip("10.0.0.1", "4.4.4.4, garbage", trusted) == "10.0.0.1"


def test_missing_or_garbage_peer_gives_none() -> None:
    trusted = T(["0.0.0.0/0"])
    assert resolve_client_ip(None, "1.2.3.4", trusted) is None
    assert resolve_client_ip("not-an-ip", "1.2.3.4", trusted) is None


def test_very_long_header_is_bounded() -> None:
    trusted = T(["10.0.0.0/8"])
    long_trusted = ", ".join(["10.0.0.9"] * 5000)
    # every examined hop trusted: the leftmost examined one (within MAX_HOPS) wins
    assert resolve_client_ip("10.0.0.1", "1.1.1.1, " + long_trusted, trusted) == "10.0.0.9"
    untrusted_tail = ", ".join(["10.0.0.9"] * 5000 + ["8.8.4.4"])
    assert resolve_client_ip("10.0.0.1", untrusted_tail, trusted) == "8.8.4.4"
    assert resolve_client_ip("10.0.0.1", "," * 16000, trusted) == "10.0.0.1"
    assert MAX_HOPS >= 16


def test_bad_trusted_entry_is_refused() -> None:
    with pytest.raises(ValueError, match="not-an-ip"):
        T(["not-an-ip"])


# -- properties ---------------------------------------------------------------------------------
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
addr = st.one_of(ipv4, ipv6)
entry = st.one_of(
    addr, st.sampled_from(["", " ", "unknown", "garbage", "[::1]:80", "1.2.3.4:5"]), st.text(max_size=20)
)
header = st.lists(entry, max_size=12).map(", ".join)
nets = st.lists(st.one_of(addr, st.builds(lambda a, p: f"{a}/{p}", ipv4, st.integers(0, 32))), max_size=4)


def _norm(s: str) -> str | None:
    a = parse_address(s)
    return str(a) if a else None


@given(peer=addr, xff=header, trusted=nets)
def test_result_is_peer_or_an_address_from_the_header(peer: str, xff: str, trusted: list[str]) -> None:
    got = resolve_client_ip(peer, xff, T(trusted))
    candidates = {_norm(peer)} | {_norm(e) for e in xff.split(",")}
    assert got in candidates
    if got is not None:
        ipaddress.ip_address(got)


@given(peer=addr, xff=header)
def test_no_trusted_proxies_always_gives_the_peer(peer: str, xff: str) -> None:
    assert resolve_client_ip(peer, xff, T([])) == _norm(peer)


@given(peer=ipv4, xff=header)
def test_untrusted_peer_always_gives_the_peer(peer: str, xff: str) -> None:
    trusted = T(["2001:db8::/32"])  # IPv6 only: no IPv4 peer is trusted
    assert resolve_client_ip(peer, xff, trusted) == _norm(peer)


@given(client=ipv4, hops=st.lists(st.integers(1, 254), max_size=6))
def test_a_chain_of_trusted_hops_yields_the_client(client: str, hops: list[int]) -> None:
    trusted = T(["10.0.0.0/8"])
    if parse_address(client) in ipaddress.ip_network("10.0.0.0/8"):
        return
    xff = ", ".join([client] + [f"10.0.0.{h}" for h in hops])
    assert resolve_client_ip("10.9.9.9", xff, trusted) == client
