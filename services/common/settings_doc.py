"""Render ``docs/settings.md`` from the settings model (``python -m services.common.settings_doc``).

A test fails when the file is stale, so every setting a change adds is documented.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from services.common.settings import Settings

OUT = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def _default(field: Any) -> str:
    if field.default_factory is not None:
        try:
            v = field.default_factory()
        except TypeError:
            return "(computed)"
    else:
        v = field.default
    if isinstance(v, BaseModel):
        return "(section)"
    if isinstance(v, SecretStr):
        return "(secret)"
    if "cache_dir" in str(field.description or ""):
        return "(computed)"
    s = str(v) if not isinstance(v, str) else v
    return f"`{s}`" if s != "" else '`""`'


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows = []
    for name, f in model.model_fields.items():
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.extend(_rows(ann, f"{prefix}{name.upper()}__"))
            continue
        typ = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
        d = "(computed)" if name == "cache_dir" else _default(f)
        desc = (f.description or "").replace("|", "\\|")
        typ = typ.replace("pydantic.types.", "").replace("|", "\\|")
        rows.append(f"| `{prefix}{name.upper()}` | {typ} | {d} | {desc} |")
    return rows


def render() -> str:
    head = [
        "# Settings",
        "",
        "Generated from `services/common/settings.py` by `python -m services.common.settings_doc`; do not",
        "edit by hand. Every setting is an environment variable with prefix `AUDITPIPE_` (nested sections",
        "with `__`), or a key in the file named by `AUDITPIPE_CONFIG` (TOML or YAML, lower-case keys, nested",
        "tables for sections). Environment wins over the file. Lists and objects are JSON in the",
        "environment.",
        "`auditpipe config show` prints the effective values with secrets masked.",
        "",
        "| variable | type | default | meaning |",
        "|---|---|---|---|",
    ]
    return "\n".join(head + _rows(Settings, "AUDITPIPE_")) + "\n"


def main() -> None:
    OUT.write_text(render())
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
