from __future__ import annotations

import os
import subprocess
import sys

import pytest

from services.common.settings import SettingsError, load_settings, masked_dump


def test_defaults() -> None:
    s = load_settings()
    assert s.kafka_bootstrap == os.environ.get("AUDITPIPE_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    assert s.clickhouse_database == os.environ.get("AUDITPIPE_CLICKHOUSE_DATABASE", "audit")


def test_env_and_nested(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDITPIPE_INGEST__PORT", "9999")
    monkeypatch.setenv("AUDITPIPE_KAFKA_BOOTSTRAP", "a:1, b:2")
    s = load_settings()
    assert s.ingest.port == 9999
    assert s.bootstrap_servers == ["a:1", "b:2"]


@pytest.mark.parametrize(
    "name,value",
    [
        ("AUDITPIPE_KAFKA_BOOTSTRAP", "nonsense"),
        ("AUDITPIPE_CLICKHOUSE_URL", "ftp://x"),
        ("AUDITPIPE_CLICKHOUSE_DATABASE", "audit; DROP"),
        ("AUDITPIPE_INGEST__PORT", "70000"),
    ],
)
def test_invalid_setting_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as ei:
        load_settings()
    msg = str(ei.value)
    assert name in msg and "\n" not in msg


def test_cli_invalid_setting_exits_2_without_traceback() -> None:
    env = dict(os.environ, AUDITPIPE_KAFKA_BOOTSTRAP="nonsense")
    r = subprocess.run(
        [sys.executable, "-m", "services.cli", "config", "show"], env=env, capture_output=True, text=True
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "AUDITPIPE_KAFKA_BOOTSTRAP" in r.stderr and "Traceback" not in r.stderr


def test_config_file_overlay_and_env_wins(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "auditpipe.toml"
    cfg.write_text('clickhouse_database = "fromfile"\n[ingest]\nport = 8181\n')
    monkeypatch.setenv("AUDITPIPE_CONFIG", str(cfg))
    monkeypatch.delenv("AUDITPIPE_CLICKHOUSE_DATABASE", raising=False)
    s = load_settings()
    assert s.clickhouse_database == "fromfile" and s.ingest.port == 8181
    monkeypatch.setenv("AUDITPIPE_INGEST__PORT", "8282")
    assert load_settings().ingest.port == 8282


def test_secrets_masked_in_config_show(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDITPIPE_CLICKHOUSE_PASSWORD", "s3cr3t-value")
    monkeypatch.setenv("AUDITPIPE_ENRICHER__HMAC_KEY", "hmac-k3y-value-long-enough")
    dumped = str(masked_dump(load_settings()))
    assert "s3cr3t-value" not in dumped and "hmac-k3y-value-long-enough" not in dumped
    env = dict(os.environ, AUDITPIPE_CLICKHOUSE_PASSWORD="s3cr3t-value")
    r = subprocess.run(
        [sys.executable, "-m", "services.cli", "config", "show"], env=env, capture_output=True, text=True
    )
    assert r.returncode == 0 and "s3cr3t-value" not in r.stdout and "clickhouse_password" in r.stdout


def test_settings_doc_is_current() -> None:
    from services.common.settings_doc import OUT, render

    assert OUT.read_text() == render(), (
        "docs/settings.md is stale: run python -m services.common.settings_doc"
    )


def test_hmac_mode_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDITPIPE_ENRICHER__HASH_MODE", "hmac")
    with pytest.raises(SettingsError, match="HMAC_KEY"):
        load_settings()
