"""Every configuration file under deploy/ parses (YAML, JSON, XML, shell)."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest
import yaml

from tests.deploy.helpers import DEPLOY

YAML_FILES = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])
JSON_FILES = sorted(DEPLOY.rglob("*.json"))


def test_there_is_something_to_check() -> None:
    assert len(YAML_FILES) >= 20 and JSON_FILES


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs)


@pytest.mark.parametrize("path", JSON_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_json_parses(path) -> None:
    assert isinstance(json.loads(path.read_text()), dict)


def test_clickhouse_config_parses() -> None:
    paths = [p for p in DEPLOY.rglob("*.xml") if "clickhouse" in p.parts]
    assert paths
    for path in paths:
        root = ET.parse(path).getroot()
        assert root.tag == "clickhouse", path


def test_shell_scripts_parse() -> None:
    bash = shutil.which("bash")
    assert bash
    for path in DEPLOY.rglob("*.sh"):
        r = subprocess.run([bash, "-n", str(path)], capture_output=True, text=True, timeout=10, check=False)
        assert r.returncode == 0, f"{path}: {r.stderr}"


def test_operations_doc_names_only_existing_deploy_files() -> None:
    import re

    from tests.deploy.helpers import ROOT

    text = (ROOT / "docs" / "operations.md").read_text()
    paths = set(re.findall(r"`((?:deploy|schemas|services)/[A-Za-z0-9_./-]+?)`", text))
    assert len(paths) > 15
    for p in sorted(paths):
        if "<" in p or "*" in p:
            continue
        # Secret files are made by the operator from a committed template, certificates by make-certs.sh.
        made = p.startswith("deploy/compose/kafka/certs/")
        exists = (ROOT / p).exists() or (ROOT / f"{p}.example").exists() or made
        assert exists, f"docs/operations.md names missing {p}"
