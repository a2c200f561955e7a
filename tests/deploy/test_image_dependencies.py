"""The image installs `pip install .` (runtime dependencies only, and removes chdb-core): every
third-party module the services import must come from a runtime dependency of pyproject.toml, not from
the dev extras (pytest, playwright, opentelemetry-proto, ...)."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.helpers import ROOT

LOCAL = {"services", "schemas", "auditpipe", "tests", "deploy", "benchmarks"}
REMOVED_FROM_IMAGE = {"chdb"}  # only the local dev stack imports it (test_compose checks where)


def _runtime_closure() -> set[str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    todo = [Requirement(d) for d in deps]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue
        for r in map(Requirement, requires):
            extras = req.extras or {""}
            if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in extras):
                todo.append(r)
    return seen


def _imported_top_level_modules() -> set[str]:
    mods: set[str] = set()
    for pkg in ("services", "schemas", "auditpipe"):
        for path in (ROOT / pkg).rglob("*.py"):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    mods |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    mods.add(node.module.split(".")[0])
    return mods - LOCAL - set(sys.stdlib_module_names) - {"__future__"}


def test_every_third_party_import_is_a_runtime_dependency() -> None:
    closure = _runtime_closure()
    dists = metadata.packages_distributions()
    missing = {}
    for mod in sorted(_imported_top_level_modules() - REMOVED_FROM_IMAGE):
        providers = {canonicalize_name(d) for d in dists.get(mod, [])}
        if not providers & closure:
            missing[mod] = sorted(providers) or ["not installed"]
    assert not missing, f"imported by services but not a runtime dependency: {missing}"
    assert {"aiokafka", "faust-streaming", "fastapi"} <= closure
