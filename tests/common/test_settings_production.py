"""env=production refuses unsafe settings with one line naming the setting, exit 2, for every command; the
Kafka security settings must agree with each other in any env; the mapping to aiokafka and faust."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from services.common.kafka import faust_credentials, security_kwargs, ssl_context
from services.common.settings import (
    SettingsError,
    is_placeholder,
    is_placeholder_hash,
    load_settings,
    production_problems,
)

ROOT = Path(__file__).resolve().parents[2]


def _h(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


SAFE = {
    "AUDITPIPE_ENV": "production",
    "AUDITPIPE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "AUDITPIPE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "AUDITPIPE_KAFKA_SASL_USERNAME": "auditpipe-ingest",
    "AUDITPIPE_KAFKA_SASL_PASSWORD": "kq8-Vd2xT_0pLr7s",
    "AUDITPIPE_CLICKHOUSE_PASSWORD": "Zx7-pq2_Lm9vT3",
    "AUDITPIPE_ENRICHER__INDICATOR_SECRET": "ind-Wq4r8Tz1Lp6Vn",
    "AUDITPIPE_INTEGRITY__SIGNING_KEY_FILE": "/etc/auditpipe/integrity/signing.key",
    "AUDITPIPE_INGEST__TOKENS": json.dumps(
        [{"producer": "platform", "sha256": _h("ing_6Hc2kP9x"), "orgs": ["*"]}]
    ),
    "AUDITPIPE_QUERY_API__TOKENS": json.dumps(
        [{"principal": "secops", "sha256": _h("q_Tn8w3Lz"), "roles": ["EventView"]}]
    ),
}
_NO_SASL = {
    "AUDITPIPE_KAFKA_SASL_MECHANISM": None,
    "AUDITPIPE_KAFKA_SASL_USERNAME": None,
    "AUDITPIPE_KAFKA_SASL_PASSWORD": None,
}


def _tokens(**over: object) -> str:
    t = {"producer": "platform", "sha256": _h("ing_6Hc2kP9x"), "orgs": ["org-acme"]}
    t.update(over)
    return json.dumps([{k: v for k, v in t.items() if v is not None}])


def _query(**over: object) -> str:
    t = {"principal": "secops", "sha256": _h("q_Tn8w3Lz"), "roles": ["EventView"]}
    t.update(over)
    return json.dumps([t])


# (what is wrong, settings changed from SAFE (None = unset), the setting the one-line error must name)
REFUSED: list[tuple[str, dict[str, str | None], str]] = [
    ("PLAINTEXT Kafka", {"AUDITPIPE_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT", **_NO_SASL},
     "AUDITPIPE_KAFKA_SECURITY_PROTOCOL"),
    ("SASL_PLAINTEXT Kafka", {"AUDITPIPE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"},
     "AUDITPIPE_KAFKA_SECURITY_PROTOCOL"),
    ("no hostname check", {"AUDITPIPE_KAFKA_SSL_CHECK_HOSTNAME": "false"},
     "AUDITPIPE_KAFKA_SSL_CHECK_HOSTNAME"),
    ("empty SASL password", {"AUDITPIPE_KAFKA_SASL_PASSWORD": ""}, "AUDITPIPE_KAFKA_SASL_PASSWORD"),
    ("placeholder SASL password", {"AUDITPIPE_KAFKA_SASL_PASSWORD": "CHANGE_ME"},
     "AUDITPIPE_KAFKA_SASL_PASSWORD"),
    ("placeholder key password", {"AUDITPIPE_KAFKA_SSL_KEY_PASSWORD": "change-me-later"},
     "AUDITPIPE_KAFKA_SSL_KEY_PASSWORD"),
    ("empty ClickHouse password", {"AUDITPIPE_CLICKHOUSE_PASSWORD": ""}, "AUDITPIPE_CLICKHOUSE_PASSWORD"),
    ("unset ClickHouse password", {"AUDITPIPE_CLICKHOUSE_PASSWORD": None}, "AUDITPIPE_CLICKHOUSE_PASSWORD"),
    ("CHANGE_ME ClickHouse password", {"AUDITPIPE_CLICKHOUSE_PASSWORD": "CHANGE_ME"},
     "AUDITPIPE_CLICKHOUSE_PASSWORD"),
    ("example ClickHouse password", {"AUDITPIPE_CLICKHOUSE_PASSWORD": "secret"},
     "AUDITPIPE_CLICKHOUSE_PASSWORD"),
    ("template ClickHouse password", {"AUDITPIPE_CLICKHOUSE_PASSWORD": "<password>"},
     "AUDITPIPE_CLICKHOUSE_PASSWORD"),
    ("placeholder HMAC key", {"AUDITPIPE_ENRICHER__HMAC_KEY": "CHANGE_ME-0123456789"},
     "AUDITPIPE_ENRICHER__HMAC_KEY"),
    ("no integrity signing key", {"AUDITPIPE_INTEGRITY__SIGNING_KEY_FILE": None},
     "AUDITPIPE_INTEGRITY__SIGNING_KEY_FILE"),
    ("development indicator secret", {"AUDITPIPE_ENRICHER__INDICATOR_SECRET": None},
     "AUDITPIPE_ENRICHER__INDICATOR_SECRET"),
    ("placeholder indicator secret", {"AUDITPIPE_ENRICHER__INDICATOR_SECRET": "CHANGE_ME-0123456789"},
     "AUDITPIPE_ENRICHER__INDICATOR_SECRET"),
    ("ingest token without orgs", {"AUDITPIPE_INGEST__TOKENS": _tokens(orgs=None)},
     "AUDITPIPE_INGEST__TOKENS ([0].orgs)"),
    ("ingest token with no org", {"AUDITPIPE_INGEST__TOKENS": _tokens(orgs=[])},
     "AUDITPIPE_INGEST__TOKENS ([0].orgs)"),
    ("ingest token placeholder hash", {"AUDITPIPE_INGEST__TOKENS": _tokens(sha256="a" * 64)},
     "AUDITPIPE_INGEST__TOKENS ([0].sha256)"),
    ("ingest token = sha256('secret')", {"AUDITPIPE_INGEST__TOKENS": _tokens(sha256=_h("secret"))},
     "AUDITPIPE_INGEST__TOKENS ([0].sha256)"),
    ("ingest token CHANGE_ME", {"AUDITPIPE_INGEST__TOKENS": _tokens(sha256="CHANGE_ME")},
     "AUDITPIPE_INGEST__TOKENS (sha256)"),
    ("query token placeholder hash", {"AUDITPIPE_QUERY_API__TOKENS": _query(sha256="0" * 64)},
     "AUDITPIPE_QUERY_API__TOKENS ([0].sha256)"),
    ("query token CHANGE_ME principal", {"AUDITPIPE_QUERY_API__TOKENS": _query(principal="CHANGE_ME")},
     "AUDITPIPE_QUERY_API__TOKENS ([0].sha256)"),
]  # fmt: skip

MALFORMED = {"ingest token CHANGE_ME"}  # refused in every env: not a SHA-256 at all

# Kafka security settings that contradict each other: refused in every env.
INCONSISTENT: list[tuple[dict[str, str | None], str]] = [
    ({"AUDITPIPE_KAFKA_SASL_MECHANISM": None}, "AUDITPIPE_KAFKA_SASL_MECHANISM"),
    ({"AUDITPIPE_KAFKA_SASL_USERNAME": None}, "AUDITPIPE_KAFKA_SASL_USERNAME"),
    ({"AUDITPIPE_KAFKA_SASL_PASSWORD": None}, "AUDITPIPE_KAFKA_SASL_PASSWORD"),
    ({"AUDITPIPE_KAFKA_SASL_MECHANISM": "GSSAPI"}, "AUDITPIPE_KAFKA_SASL_MECHANISM"),
    ({"AUDITPIPE_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}, "AUDITPIPE_KAFKA_SASL_MECHANISM"),
    ({"AUDITPIPE_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT", **_NO_SASL, "AUDITPIPE_KAFKA_SSL_CAFILE": "/ca.pem"},
     "AUDITPIPE_KAFKA_SSL_CAFILE"),
    ({"AUDITPIPE_KAFKA_SSL_KEYFILE": "/k.pem"}, "AUDITPIPE_KAFKA_SSL_KEYFILE"),
]  # fmt: skip


def _env(monkeypatch: pytest.MonkeyPatch, changes: dict[str, str | None], base: dict = SAFE) -> None:
    for key in list(os.environ):
        if key.startswith("AUDITPIPE_"):
            monkeypatch.delenv(key)
    for key, value in {**base, **changes}.items():
        if value is not None:
            monkeypatch.setenv(key, value)


def _one_line_naming(err: str, name: str) -> None:
    """One line, "invalid setting <VARIABLE>[ (<where inside its value>)]: <why>", naming ``name``:
    "AUDITPIPE_X" or "AUDITPIPE_X (detail)" (the detail may be written [0].sha256 or __0__SHA256)."""
    assert "\n" not in err.strip(), err
    var, _, detail = name.partition(" ")
    m = re.match(r"^(?:auditpipe: )?invalid setting (AUDITPIPE_[A-Z0-9_]+)(.*?): ", err.strip())
    assert m, err
    assert m.group(1) == var or (m.group(1).startswith(var + "__") and detail), (err, name)
    inside = detail.strip("()").split(".")[-1]
    assert not detail or inside.lower() in (m.group(1) + m.group(2)).lower(), (err, name)


def test_safe_production_settings_load(monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, {})
    s = load_settings()
    assert s.env == "production" and production_problems(s) == []


def test_production_without_tokens_in_settings_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """No token is closed, not unsafe: the first production token is made by `auditpipe token create`
    (into tokens_file), which must start under the same settings."""
    _env(monkeypatch, {"AUDITPIPE_INGEST__TOKENS": "[]", "AUDITPIPE_QUERY_API__TOKENS": "[]"})
    s = load_settings()
    assert s.ingest.tokens == [] and s.query_api.tokens == [] and production_problems(s) == []


@pytest.mark.parametrize("what,changes,name", REFUSED, ids=[r[0] for r in REFUSED])
def test_production_refuses(monkeypatch: pytest.MonkeyPatch, what: str, changes: dict, name: str) -> None:
    _env(monkeypatch, changes)
    with pytest.raises(SettingsError) as ei:
        load_settings()
    _one_line_naming(str(ei.value), name)
    # development accepts the same values (a developer's choice), unless the value itself is malformed
    monkeypatch.setenv("AUDITPIPE_ENV", "development")
    if what not in MALFORMED:
        load_settings()


@pytest.mark.parametrize("changes,name", INCONSISTENT, ids=[n for _, n in INCONSISTENT])
@pytest.mark.parametrize("env", ["development", "production"])
def test_kafka_security_settings_must_agree(
    monkeypatch: pytest.MonkeyPatch, changes: dict, name: str, env: str
) -> None:
    _env(monkeypatch, {**changes, "AUDITPIPE_ENV": env})
    with pytest.raises(SettingsError) as ei:
        load_settings()
    _one_line_naming(str(ei.value), name)


def _example_secrets() -> list[tuple[str, str, str]]:
    """(file, setting, value) of every secret shipped as an example in deploy/ and docs/."""
    out: list[tuple[str, str, str]] = []
    secret = re.compile(r"(PASSWORD|HMAC_KEY|TOKENS)$")
    for p in [*sorted((ROOT / "deploy").rglob("*.example")), *sorted((ROOT / "deploy").rglob("*.env"))]:
        for line in p.read_text().splitlines():
            m = re.match(r"^\s*#?\s*(AUDITPIPE_[A-Z0-9_]+)=(.*)$", line)
            if m and secret.search(m.group(1)):
                out.append((str(p.relative_to(ROOT)), m.group(1), m.group(2).strip().strip("'")))
    for p in sorted((ROOT / "deploy").rglob("*.yaml")):
        for doc in yaml.safe_load_all(p.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "Secret":
                for k, v in (doc.get("stringData") or {}).items():
                    if k.startswith("AUDITPIPE_") and secret.search(k):
                        out.append((str(p.relative_to(ROOT)), k, str(v)))
    for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for m in re.finditer(
            r"(AUDITPIPE_[A-Z0-9_]*(?:PASSWORD|HMAC_KEY|TOKENS))='?([^'\s`]+)", p.read_text()
        ):
            out.append((str(p.relative_to(ROOT)), m.group(1), m.group(2)))
    return out


def test_every_example_secret_in_deploy_and_docs_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    examples = _example_secrets()
    assert len(examples) >= 8, examples
    for where, name, value in examples:
        if name.endswith("TOKENS"):
            try:
                json.loads(value)
            except ValueError:
                continue  # prose like [{"producer":…}] in a table, not a value anyone can set
        _env(monkeypatch, {name: value})
        with pytest.raises(SettingsError) as ei:
            load_settings()
        assert re.match(rf"^invalid setting {name}(?![A-Z0-9])", str(ei.value)), (where, name, str(ei.value))


def test_placeholder_rules() -> None:
    for v in ("", " ", "CHANGE_ME", "change-me-please", "ChangeMe", "secret", "<sha256 hex>", "…", "..."):
        assert is_placeholder(v), v
    for v in ("kq8-Vd2xT_0pLr7s", "secretive-but-real-9f3k", "p@ssw0rd-9f3kq"):
        assert not is_placeholder(v), v
    assert is_placeholder_hash("a" * 64) and is_placeholder_hash("ab" * 32)
    assert is_placeholder_hash(_h("")) and is_placeholder_hash(_h("CHANGE_ME"))
    assert not is_placeholder_hash(_h("ing_6Hc2kP9x"))


def _commands() -> list[list[str]]:
    """One argv per command of the CLI (sub-commands included), with stand-ins for required arguments."""
    from services.cli import build_parser

    def subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                return dict(a.choices)
        return {}

    def required(p: argparse.ArgumentParser) -> list[str]:
        out: list[str] = []
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction) or not a.required and a.option_strings:
                continue
            if not a.option_strings and a.nargs != "?" and a.dest != "help":
                choices = list(a.choices or ())
                out.append(choices[1] if "status" in choices else choices[0] if choices else "x")
            elif a.required:
                out += [a.option_strings[0], "x"]
        return out

    out: list[list[str]] = []
    for name, p in subparsers(build_parser()).items():
        subs = subparsers(p)
        if subs:
            out += [[name, sub, *required(sp)] for sub, sp in subs.items()]
        else:
            out.append([name, *required(p)])
    return out


def test_every_command_refuses_unsafe_production_settings_with_exit_2() -> None:
    """Each command (run as a process) exits 2 with one line naming the setting, before doing anything."""
    cmds = _commands()
    assert len(cmds) >= 12, cmds
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITPIPE_")}
    env.update(SAFE)
    env.update(AUDITPIPE_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT")
    procs = [
        (argv, subprocess.Popen([sys.executable, "-m", "services.cli", *argv], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for argv in cmds
    ]  # fmt: skip
    for argv, proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 2, (argv, out, err)
        assert "Traceback" not in err, (argv, err)
        _one_line_naming(err, "AUDITPIPE_KAFKA_SECURITY_PROTOCOL")


# ------------------------------------------------------------------------------ mapping to the clients
def test_plaintext_has_no_tls_and_no_sasl() -> None:
    kw = security_kwargs(load_settings(kafka_security_protocol="PLAINTEXT"))
    assert kw == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(load_settings(kafka_security_protocol="PLAINTEXT")) is None


def test_sasl_ssl_maps_to_aiokafka_and_faust() -> None:
    s = load_settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="auditpipe-sink",
        kafka_sasl_password="pw-0123456789",
    )
    kw = security_kwargs(s)
    ctx = kw.pop("ssl_context")
    assert kw == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "auditpipe-sink",
        "sasl_plain_password": "pw-0123456789",
    }
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    creds = faust_credentials(s)
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    auth = credentials_to_aiokafka_auth(creds)
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert auth["sasl_plain_username"] == "auditpipe-sink" and auth["sasl_plain_password"] == "pw-0123456789"
    assert isinstance(auth["ssl_context"], ssl.SSLContext)


def test_ssl_maps_to_faust_ssl_credentials() -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    s = load_settings(kafka_security_protocol="SSL", kafka_ssl_check_hostname=False)
    auth = credentials_to_aiokafka_auth(faust_credentials(s))
    assert auth["security_protocol"] == "SSL" and not auth["ssl_context"].check_hostname
    assert auth["ssl_context"].verify_mode == ssl.CERT_REQUIRED  # the certificate is still verified


def test_unreadable_tls_files_name_the_setting(tmp_path: Path) -> None:
    s = load_settings(kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "missing.pem")
    with pytest.raises(SettingsError, match="AUDITPIPE_KAFKA_SSL_CAFILE"):
        ssl_context(s)
    (tmp_path / "junk.pem").write_text("not a certificate")
    s = load_settings(kafka_security_protocol="SSL", kafka_ssl_certfile=tmp_path / "junk.pem")
    with pytest.raises(SettingsError, match="AUDITPIPE_KAFKA_SSL_CERTFILE"):
        ssl_context(s)
