"""Shared readers for the deployment tests: the files under deploy/, the valid settings names, the
metric names the services register, and compose-style ``${VAR}`` interpolation."""

from __future__ import annotations

import hashlib
import importlib
import re
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from services.common.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
K8S = DEPLOY / "k8s"

# The five services: compose service name -> (CLI command, settings section, host field, port field).
SERVICES: dict[str, tuple[str, str, str, str]] = {
    "ingest": ("ingest", "ingest", "host", "port"),
    "api": ("api", "query_api", "host", "port"),
    "sink": ("sink", "sink", "host", "port"),
    "forwarder": ("forwarder", "forwarder", "host", "port"),
    "enricher": ("enricher", "enricher", "web_host", "web_port"),
    "seal": ("seal", "integrity", "host", "port"),
}

# Valid stand-ins for the secrets the deployment files leave to the operator (``${X:?...}`` in compose,
# the Secret in Kubernetes): with them, the settings of every service must load.
# (Realistic stand-ins: production refuses placeholders such as "aaaa…" hashes or "test-password".)
DUMMY_SECRETS = {
    "AUDITPIPE_CLICKHOUSE_PASSWORD": "ch-9f3Kq2Lm",
    "AUDITPIPE_INGEST__TOKENS": '[{"producer": "platform", "sha256": "'
    + hashlib.sha256(b"i").hexdigest()
    + '", "orgs": ["*"]}]',
    "AUDITPIPE_QUERY_API__TOKENS": '[{"principal": "secops", "sha256": "'
    + hashlib.sha256(b"q").hexdigest()
    + '"}]',
    "GRAFANA_ADMIN_PASSWORD": "gf-7Tq1Zx",
    "AUDITPIPE_ENRICHER__INDICATOR_SECRET": "ind-8Hw2Pq7Zr4Lk9Vn3",
    **{
        f"KAFKA_PASSWORD_{c}": f"kafka-{c.lower()}-4Rt8"
        for c in ("INGEST", "ENRICHER", "SINK", "FORWARDER", "QUERY_API", "ARCHIVE", "SEAL", "PRODUCER")
    },
}


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# Parsed files are cached for the session: treat the results as read-only.
@cache
def load_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 - a safe loader


@cache
def load_yaml_all(path: Path) -> list[Any]:
    return [d for d in yaml.load_all(path.read_text(), Loader=_Loader) if d is not None]  # noqa: S506


def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


@lru_cache(maxsize=1)
def k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    """Every manifest listed in deploy/k8s/kustomization.yaml, in order."""
    kust = load_yaml(K8S / "kustomization.yaml")
    out = []
    for rel in kust["resources"]:
        for d in load_yaml_all(K8S / rel):
            out.append((K8S / rel, d))
    return out


def k8s_by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in k8s_docs() if d["kind"] == kind}


@lru_cache(maxsize=1)
def setting_env_names() -> frozenset[str]:
    """AUDITPIPE_<FIELD> for every leaf of the Settings model, nested sections joined with ``__``."""
    names: set[str] = set()

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            ann = field.annotation
            env = f"{prefix}{name.upper()}"
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                names.add(env)  # a whole section as JSON is accepted too
                walk(ann, env + "__")
            else:
                names.add(env)

    walk(Settings, "AUDITPIPE_")
    return frozenset(names)


@lru_cache(maxsize=1)
def cli_commands() -> frozenset[str]:
    import argparse

    from services.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return frozenset(sub.choices)


_DECL = re.compile(r"\b(?:counter|gauge|histogram)\(\s*(?:SERVICE|\"[a-z_]+\")\s*,\s*\"[a-z_]+\"")


@lru_cache(maxsize=1)
def metrics() -> dict[str, frozenset[str]]:
    """Every exposed metric sample name the services register -> its label names.

    Imports services/common/metrics.py, every services/*/metrics.py, and any other services module that
    declares metrics with the shared helpers (e.g. the query API declares its own in main.py), then
    reads the one registry. Histograms and counters contribute their ``_bucket``/``_sum``/``_count``/
    ``_total`` sample names.
    """
    modules = {"services.common.metrics"}
    for path in sorted((ROOT / "services").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        if path.name == "metrics.py" or _DECL.search(path.read_text()):
            modules.add(".".join(rel.parts))
    for mod in sorted(modules):
        importlib.import_module(mod)
    from services.common.metrics import REGISTRY

    out: dict[str, frozenset[str]] = {}
    for name, collector in REGISTRY._names_to_collectors.items():  # noqa: SLF001 - the only full list
        out[name] = frozenset(getattr(collector, "_labelnames", ()))
    return out


_INTERP = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str] | None = None) -> str:
    """Compose-style ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` with ``env`` (default: the
    dummy secrets); a required variable missing from ``env`` raises KeyError."""
    env = DUMMY_SECRETS if env is None else env

    def sub(m: re.Match[str]) -> str:
        var, op, arg = m.group(1), m.group(2), m.group(3)
        if var in env and env[var] != "":
            return env[var]
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            raise KeyError(f"{var} is required: {arg}")
        return ""

    return _INTERP.sub(sub, str(value))


def promql_metrics(expr: str) -> set[str]:
    """auditpipe_* metric names (and ``up``) used in a PromQL expression."""
    names = set(re.findall(r"\bauditpipe_[a-z0-9_]+\b", expr))
    if re.search(r"\bup\s*\{", expr):
        names.add("up")
    return names
