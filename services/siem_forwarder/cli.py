"""``auditpipe forwarder`` (run) and ``auditpipe forwarder check`` (validate config, probe destinations)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from services.common.settings import Settings, SettingsError, get_settings


def _config_path(args: argparse.Namespace, settings: Settings) -> Path:
    from services.cli import CliError

    path = args.config or settings.forwarder.config_file
    if not path:
        raise CliError("no forwarder config: pass --config or set AUDITPIPE_FORWARDER__CONFIG_FILE", 2)
    return Path(path)


async def check(path: Path, timeout_s: float = 10.0) -> tuple[int, list[str]]:
    """(exit code, one line per destination)."""
    from services.siem_forwarder.config import ConfigError, check_secrets, load_config
    from services.siem_forwarder.util.delivery import ProbeError

    try:
        cfg = load_config(path)
    except ConfigError as e:
        return 2, [f"config INVALID {e}"]
    if not cfg.destinations:
        return 2, [f"config INVALID {path}: no destinations"]
    lines: list[str] = []
    bad = 0
    secrets = check_secrets(cfg)
    for d in cfg.destinations:
        prefix = f"{d.name:<16} {d.type:<13}"
        if secrets[d.name]:
            bad += 1
            lines.append(f"{prefix} config INVALID  {secrets[d.name]}")
            continue
        if not d.enabled:
            lines.append(f"{prefix} config ok       probe skipped (disabled)")
            continue
        try:
            _, client = d.build()
        except Exception as e:  # noqa: BLE001 - one line per destination, no traceback
            bad += 1
            lines.append(f"{prefix} config INVALID  {type(e).__name__}: {e}")
            continue
        try:
            what = await asyncio.wait_for(client.probe(), timeout_s)
            lines.append(f"{prefix} config ok       reachable ({what})")
        except (ProbeError, TimeoutError) as e:
            bad += 1
            lines.append(f"{prefix} config ok       UNREACHABLE {e or 'timeout'}")
        finally:
            await client.aclose()
    return (1 if bad else 0), lines


def _run(args: argparse.Namespace) -> int:
    from services.cli import CliError
    from services.common.logging import configure_logging
    from services.common.runtime import install_stop_signals
    from services.siem_forwarder.config import ConfigError, check_secrets, load_config
    from services.siem_forwarder.service import Forwarder

    try:
        settings = get_settings()
    except SettingsError as e:
        raise CliError(str(e), 2) from None
    path = _config_path(args, settings)
    if args.action == "check":
        code, lines = asyncio.run(check(path))
        for line in lines:
            print(line)
        return code
    try:
        cfg = load_config(path)
    except ConfigError as e:
        raise CliError(f"invalid forwarder config: {e}", 2) from None
    missing = {n: p for n, p in check_secrets(cfg).items() if p}
    if missing:
        raise CliError(f"invalid forwarder config: {next(iter(missing.values()))}", 2)
    configure_logging("forwarder", settings.log_level)

    async def main() -> None:
        fwd = Forwarder(settings, cfg)
        install_stop_signals(fwd.stop)
        await fwd.run()

    asyncio.run(main())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("forwarder", help="SIEM forwarder: run it, or `check` its config and destinations")
    p.add_argument("action", nargs="?", choices=["run", "check"], default="run")
    p.add_argument("--config", type=Path, default=None, help="forwarder config file (TOML or YAML)")
    p.set_defaults(func=_run)
