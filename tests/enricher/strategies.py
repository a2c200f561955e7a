"""Hypothesis strategies for contract-valid raw events, with the things the rules look for mixed in:
sensitive keys at any depth, secrets in free text, proxies and forwarded-for chains, webhooks, user agents."""

from __future__ import annotations

from datetime import UTC, timedelta, timezone

from hypothesis import strategies as st

from schemas.events_v1 import ACTION_PATTERN

SAFE = 2**53 - 1

SECRETS = [
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
    "AKIAIOSFODNN7EXAMPLE",
    "AIza" + "B" * 35,
    "ghp_" + "c" * 36,
    "xoxb-1234567890-abcdefghij",
    "Bearer abcdefghijklmnopqrstuv",
    "token 0123456789abcdefgh",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
    "ya29." + "d" * 24,
]
SENSITIVE_KEYS = [
    "password",
    "api_key",
    "Authorization",
    "client-secret",
    "db_token",
    "value",
    "is_sensitive",
]

free_text = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda a, s, b: f"{a}{s}{b}", st.text(max_size=10), st.sampled_from(SECRETS), st.text(max_size=10)
    ),
)
numbers = st.one_of(
    st.integers(-SAFE, SAFE),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer() or abs(f) <= SAFE),
)
leaf = st.one_of(st.none(), st.booleans(), numbers, free_text)
keys = st.one_of(st.text(max_size=10), st.sampled_from(SENSITIVE_KEYS))
json_value = st.recursive(
    leaf,
    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(keys, c, max_size=4)),
    max_leaves=15,
)
ids = st.text(min_size=1, max_size=30)
short = st.one_of(st.none(), st.text(max_size=40), free_text)
ips = st.one_of(
    st.none(),
    st.sampled_from(["10.0.0.5", "203.0.113.7", "2001:db8::1", "fe80::1%eth0", "garbage", "10.1.2.3:443"]),
)
xff = st.one_of(
    st.none(),
    st.lists(
        st.sampled_from(["203.0.113.7", "10.0.0.9", "198.51.100.1", "unknown", " ", "2001:db8::2"]),
        max_size=5,
    ).map(", ".join),
)
user_agents = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "Mozilla/5.0 (X11; Linux x86_64) Chrome/130.0",
            "terraform-provider-acme/1.2",
            "git/2.43.0",
            "curl/8.5.0",
            "acme-cli/3.1",
            "python-httpx/0.27",
        ]
    ),
    free_text,
)
times = st.datetimes(
    min_value=__import__("datetime").datetime(2000, 1, 2),
    max_value=__import__("datetime").datetime(2199, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]),
).map(lambda d: d.isoformat())

request = st.fixed_dictionaries(
    {},
    optional={
        "method": st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]),
        "path": st.one_of(st.text(max_size=30), st.sampled_from(["/hooks/github", "/api/x/git-upload-pack"])),
        "query": st.dictionaries(keys, json_value, max_size=3),
        "payload": json_value,
        "user_agent": user_agents,
        "headers": st.dictionaries(
            st.sampled_from(["x-github-event", "x-requested-with", "authorization", "accept", "cookie"]),
            free_text,
            max_size=3,
        ),
        "peer_ip": ips,
        "x_forwarded_for": xff,
    },
)
actor = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["user", "api_token", "service", "system"]),
        "id": st.one_of(ids, st.sampled_from(["tok-ci", "svc-bot", "u-1"])),
        "name": short,
        "email": short,
    },
)
target = st.fixed_dictionaries({}, optional={"type": st.text(max_size=20), "id": ids, "name": short})
change = st.fixed_dictionaries(
    {"field": st.one_of(st.text(min_size=1, max_size=20), st.sampled_from(SENSITIVE_KEYS))},
    optional={"before": json_value, "after": json_value},
)

raw_events = st.fixed_dictionaries(
    {
        "occurred_at": times,
        "org_id": ids,
        "action": st.from_regex(ACTION_PATTERN, fullmatch=True).filter(lambda a: len(a) <= 256),
    },
    optional={
        "event_id": st.uuids().map(str),
        "project_id": ids,
        "environment_id": ids,
        "actor": actor,
        "event_type": st.text(max_size=20),
        "target": target,
        "source": st.sampled_from(["console", "api", "webhook", "cli"]),
        "status": st.integers(100, 599),
        "change": st.one_of(st.text(max_size=60), free_text),
        "request": request,
        "metadata": st.dictionaries(keys, free_text, max_size=3),
        "changes": st.lists(change, max_size=3),
        "snapshot": st.dictionaries(keys, json_value, max_size=3),
        "producer": st.text(max_size=20),
    },
)
