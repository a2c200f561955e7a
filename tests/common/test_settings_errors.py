"""A malformed setting is one line naming the variable, never a traceback: for every nested section of the
settings model (cases generated from the model, so a new section or field is covered without editing
this file), a value that is not JSON where JSON is needed, and a JSON value of the wrong shape."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import BaseModel

from services.common.settings import Settings, SettingsError, _json_kind, _model_of, load_settings

SECTIONS = {
    name: _model_of(f.annotation) for name, f in Settings.model_fields.items() if _model_of(f.annotation)
}


def _cases() -> list[tuple[str, str, str]]:
    """(variable, value, what the message must say) for every section and every JSON field in it."""
    out = []
    for name, model in SECTIONS.items():
        var = f"AUDITPIPE_{name.upper()}"
        out.append((var, "not json", "not valid JSON"))
        out.append((var, "[1, 2]", "valid dictionary"))  # JSON, but not an object
        for fname, f in model.model_fields.items():
            kind = _json_kind(f.annotation)
            if kind is None:
                continue
            out.append((f"{var}__{fname.upper()}", "not json", f"expected a JSON {kind}"))
            if fname == "trusted_proxies":
                out.append((f"{var}__{fname.upper()}", "[10.0.0.1]", "not valid JSON"))
    return out


CASES = _cases()


def test_every_section_is_covered() -> None:
    covered = {v.split("__")[0] for v, _, _ in CASES}
    assert covered == {f"AUDITPIPE_{n.upper()}" for n in SECTIONS}
    assert len(SECTIONS) >= 8 and all(issubclass(m, BaseModel) for m in SECTIONS.values())
    assert ("AUDITPIPE_INGEST__TOKENS", "not json", "expected a JSON array") in CASES


@pytest.mark.parametrize("var,value,says", CASES, ids=[f"{v}={x}" for v, x, _ in CASES])
def test_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, says: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as ei:
        load_settings()
    msg = str(ei.value)
    assert var in msg and says in msg and "\n" not in msg, msg
    assert value not in msg or value == "not json"  # the message says what is wrong, not the value


def test_the_first_bad_variable_is_named_when_several_are(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDITPIPE_QUERY_API__TOKENS", "{oops")
    monkeypatch.setenv("AUDITPIPE_INGEST__TOKENS", "[ok")
    msg = str(pytest.raises(SettingsError, load_settings).value)
    assert "AUDITPIPE_INGEST__TOKENS" in msg  # alphabetical: a stable answer


def test_a_valid_json_value_with_a_bad_item_names_the_item(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDITPIPE_INGEST__TOKENS", '[{"producer": "p", "sha256": "secret-not-a-hash"}]')
    msg = str(pytest.raises(SettingsError, load_settings).value)
    assert msg.startswith("invalid setting AUDITPIPE_INGEST__TOKENS ([0].sha256): ")
    assert "secret-not-a-hash" not in msg


# every command, one per section (each starts a Python process: a handful, not every case)
COMMANDS = [
    ["config", "show"],
    ["token", "list"],
    ["events", "search"],
    ["migrate"],
    ["stack", "status"],
    ["ingest"],
    ["api"],
    ["demo", "--seconds", "1"],
    ["archive", "list"],
    ["forwarder", "check"],
]


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_every_command_exits_2_with_one_line(section: str) -> None:
    cmd = COMMANDS[sorted(SECTIONS).index(section) % len(COMMANDS)]
    var = f"AUDITPIPE_{section.upper()}"
    json_fields = [n for n, f in SECTIONS[section].model_fields.items() if _json_kind(f.annotation)]
    if json_fields:
        var += "__" + json_fields[0].upper()
    env = dict(os.environ, **{var: "not json"})
    r = subprocess.run(
        [sys.executable, "-m", "services.cli", *cmd], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2, (cmd, r.returncode, r.stderr[-2000:])
    assert r.stderr.count("\n") == 1 and var in r.stderr and "Traceback" not in r.stderr, r.stderr
