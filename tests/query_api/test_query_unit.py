"""Pure rules of the query API: cursors, IP/CIDR ranges, LIKE escaping, token lookup, SQL shape."""

from __future__ import annotations

import ipaddress
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.settings import QueryToken
from services.query_api import query as Q
from services.query_api.auth import authenticate, token_sha256
from services.sink.rows import _v6

SORTS = ["occurred_at", "action", "target_type", "actor"]


@given(
    sort=st.sampled_from(SORTS),
    order=st.sampled_from(["asc", "desc"]),
    text=st.text(max_size=50),
    ms=st.integers(min_value=946_684_800_000, max_value=7_258_118_400_000),
    eid=st.uuids(),
)
def test_cursor_round_trip(sort: str, order: str, text: str, ms: int, eid: uuid.UUID) -> None:
    t = datetime.fromtimestamp(ms / 1000, UTC)
    key = ([text] if sort != "occurred_at" else []) + [t, eid]
    c = Q.encode_cursor(sort, order, key)  # type: ignore[arg-type]
    assert c.isascii() and "=" not in c
    back = Q.decode_cursor(c, sort, order)  # type: ignore[arg-type]
    assert back[-1] == str(eid) and back[-2] == t
    if sort != "occurred_at":
        assert back[0] == text


@given(st.text(max_size=200))
def test_garbage_cursor_is_a_filter_error(junk: str) -> None:
    try:
        Q.decode_cursor(junk, "occurred_at", "desc")
    except Q.FilterError as e:
        assert e.field == "cursor"


@given(st.ip_addresses(), st.integers(min_value=0, max_value=128))
def test_ip_range_contains_exactly_the_network(addr, prefix: int) -> None:  # noqa: ANN001
    prefix = min(prefix, addr.max_prefixlen)
    net = ipaddress.ip_network(f"{addr}/{prefix}", strict=False)
    lo, hi = Q.ip_range(str(net))
    lo6, hi6 = ipaddress.IPv6Address(lo), ipaddress.IPv6Address(hi)
    # the sink stores client_ip_v6 with rows._v6: any address of the network lands inside [lo, hi]
    assert lo6 <= _v6(str(net.network_address)) <= hi6
    assert lo6 <= _v6(str(net.broadcast_address)) <= hi6
    assert int(hi6) - int(lo6) + 1 == net.num_addresses


def test_ip_range_rejects_garbage() -> None:
    for bad in ("", "1.2.3", "1.2.3.4/33", "::g", "1.2.3.4; DROP"):
        with pytest.raises(Q.FilterError):
            Q.ip_range(bad)


def test_like_pattern_escapes_wildcards() -> None:
    assert Q.like_pattern("50%_Off\\") == "%50\\%\\_off\\\\%"


def test_filters_never_put_values_in_sql() -> None:
    evil = "x' OR 1=1 --"
    f = Q.Filters(org=evil, action=[evil], target_id=evil, actor=evil, q=evil, source=[evil])
    sql, params = Q.page_query("db", f, Q.Scope(org=evil, projects=(evil,)), "action", "asc", 10, None)
    assert evil not in sql and "OR 1=1" not in sql
    assert evil in params.values()


def test_authenticate() -> None:
    toks = [
        QueryToken(principal="a", sha256=token_sha256("tok-a")),
        QueryToken(principal="b", sha256=token_sha256("tok-b"), roles=["Manager"], org="o", projects=["p"]),
    ]
    assert authenticate(toks, None) is None and authenticate(toks, "") is None
    assert authenticate(toks, "tok-c") is None
    a = authenticate(toks, "tok-a")
    assert a is not None and a.name == "a" and a.roles == {"EventView"} and a.scope.org is None
    b = authenticate(toks, "tok-b")
    assert b is not None and b.is_manager and b.restricted and b.may_see_org("o") and not b.may_see_org("x")


def test_choose_dedup() -> None:
    assert Q.choose_dedup("auto", Q.Filters(org="o")) == "final"
    assert Q.choose_dedup("auto", Q.Filters(q="x")) == "limit_by"
    assert Q.choose_dedup("auto", Q.Filters(target_id="t")) == "limit_by"
    assert Q.choose_dedup("final", Q.Filters(q="x")) == "final"
