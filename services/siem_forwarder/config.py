"""The forwarder's config file (TOML or YAML): the list of destinations, each one of the six types.

```toml
[[destinations]]
name = "splunk"
type = "splunk_hec"
url = "https://splunk.example.com:8088"
token_env = "SPLUNK_HEC_TOKEN"      # the secret itself stays in the environment
[destinations.filter]
orgs = ["org_1"]
```
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.topics import EVENTS
from services.siem_forwarder.datadog.config import DatadogConfig
from services.siem_forwarder.elasticsearch.config import ElasticsearchConfig
from services.siem_forwarder.otlp.config import OtlpConfig
from services.siem_forwarder.splunk_hec.config import SplunkHecConfig
from services.siem_forwarder.syslog.config import SyslogConfig
from services.siem_forwarder.util.config import SecretMissing
from services.siem_forwarder.webhook.config import WebhookConfig

AnyDestination = Annotated[
    SplunkHecConfig | DatadogConfig | ElasticsearchConfig | SyslogConfig | WebhookConfig | OtlpConfig,
    Field(discriminator="type"),
]
DESTINATION_TYPES = ("splunk_hec", "datadog", "elasticsearch", "syslog", "webhook", "otlp")


class ConfigError(Exception):
    """One line naming the file and the bad field."""


class ForwarderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    topic: str = EVENTS
    destinations: list[AnyDestination] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> ForwarderConfig:
        names = [d.name for d in self.destinations]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate destination names: {sorted(dup)}")
        return self


def describe(err: ValidationError, data: dict[str, Any] | None = None) -> str:
    """One line: ``destinations[<name>].<field>: <problem>``."""
    e = err.errors()[0]
    loc = list(e.get("loc", ()))
    parts: list[str] = []
    for i, x in enumerate(loc):
        prev = loc[i - 1] if i else None
        if isinstance(x, int) and prev == "destinations":
            name = x
            try:
                name = data["destinations"][x].get("name", x) if data else x
            except (KeyError, IndexError, AttributeError, TypeError):
                pass
            parts[-1] = f"destinations[{name}]"
        elif isinstance(prev, int) and x in DESTINATION_TYPES:
            continue  # the union tag pydantic inserts
        else:
            parts.append(str(x))
    msg = e.get("msg", "invalid").replace("Value error, ", "")
    if e.get("type") == "union_tag_not_found":
        msg = f"type is required, one of {', '.join(DESTINATION_TYPES)}"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{'.'.join(parts) or 'config'}: {msg}{more}"


def parse_config(data: dict[str, Any]) -> ForwarderConfig:
    try:
        return ForwarderConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(describe(e, data)) from None


def load_config(path: Path | str) -> ForwarderConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: file not found")
    try:
        text = p.read_text()
        data = yaml.safe_load(text) if p.suffix in (".yaml", ".yml") else tomllib.loads(text)
    except (OSError, yaml.YAMLError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{p}: cannot parse: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: must hold a mapping")
    try:
        return parse_config(data)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None


def check_secrets(cfg: ForwarderConfig) -> dict[str, str | None]:
    """Destination name -> None when its secrets are present, else the problem."""
    out: dict[str, str | None] = {}
    for d in cfg.destinations:
        try:
            d.check_secrets()
            out[d.name] = None
        except SecretMissing as e:
            out[d.name] = str(e)
    return out
