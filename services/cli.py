"""The ``auditpipe`` command.

Core commands live here (config, stack, migrate); each service adds its own from
``services/<service>/cli.py``, and the tools people run by hand (``token``, ``events``) from
``services/tools/`` (each a ``register(subparsers)`` function), so this file never grows with them.
Errors end with one line on stderr and exit code 2 (bad input/settings) or 1 (a failure), never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from collections.abc import Callable

from services.common.errors import CliError
from services.common.settings import SettingsError, get_settings, masked_dump

SERVICE_CLIS = ("ingest", "enricher", "sink", "siem_forwarder", "query_api", "supervisor", "demo")
CLI_MODULES = (
    *(f"services.{name}.cli" for name in SERVICE_CLIS),
    "services.tools.token_cli",
    "services.tools.events_cli",
    "services.archive.cli",
    "services.integrity.cli",
)


def _config_show(args: argparse.Namespace) -> int:
    s = get_settings()
    data = masked_dump(s)
    if args.format == "json":
        print(json.dumps(data, indent=2, default=str))
    else:
        import yaml

        print(yaml.safe_dump(data, sort_keys=False).rstrip())
    return 0


def _stack(args: argparse.Namespace) -> int:
    from services.common.stack.manager import Stack, StackError, status_dicts

    stack = Stack(get_settings())
    try:
        if args.action == "up":
            if args.kafka_nodes is not None:
                stack.set_nodes(args.kafka_nodes)
            st = stack.up(timeout_s=args.timeout)
            if stack.n_nodes > 1 and not args.json:
                print(f"bootstrap: AUDITPIPE_KAFKA_BOOTSTRAP={stack.bootstrap}")
        elif args.action == "down":
            for line in stack.down():
                print(line)
            return 0
        else:
            st = stack.status()
    except StackError as e:
        raise CliError(str(e)) from None
    if getattr(args, "json", False):
        print(json.dumps(status_dicts(st), indent=2))
    else:
        for c in st:
            mark = "healthy" if c.healthy else "DOWN"
            line = f"{c.component:<11} {c.address:<24} {mark:<8} version={c.version or '-'}"
            line += f" pid={c.pid or '-'}"
            if c.under_replicated is not None or c.pid is None:
                line += f"  {c.detail}"
            print(line)
    return 0 if all(c.healthy for c in st) else 1


def _migrate(args: argparse.Namespace) -> int:
    from services.common.clickhouse import make_client
    from services.common.migrations import cluster_migrate, drifted, migrate

    s = get_settings()
    if args.cluster is None and (args.nodes or args.no_replication):
        raise CliError("--nodes and --no-replication need --cluster NAME", 2)
    if args.cluster is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", args.cluster):
        raise CliError(f"--cluster: {args.cluster!r} is not a ClickHouse cluster name", 2)
    urls = [u.strip() for u in (args.nodes or "").split(",") if u.strip()]
    for u in urls:
        if not re.fullmatch(r"https?://[^/\s]+", u):
            raise CliError(f"--nodes: {u!r} is not http(s)://host:port", 2)
    try:
        if args.cluster is not None:
            nodes = [s.model_copy(update={"clickhouse_url": u}) for u in urls] or [s]
            clients = [make_client(n) for n in nodes]
            ran = cluster_migrate(
                clients,
                s.clickhouse_database,
                args.cluster,
                replicated=not args.no_replication,
                on_cluster=not urls,
            )
            client = clients[0]
        else:
            client = make_client(s)
            ran = migrate(client, s.clickhouse_database)
        bad = drifted(client, s.clickhouse_database)
    except Exception as e:  # noqa: BLE001 - one line, no traceback
        raise CliError(f"migrate failed: {str(e).strip().splitlines()[0]}") from None
    for m in ran:
        print(f"applied {m.version:04d}_{m.name}")
    if not ran:
        print("nothing to apply: schema is up to date")
    for m in bad:
        print(f"warning: {m.version:04d}_{m.name} changed after it was applied; add a new migration instead")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="auditpipe", description="Event-streaming audit-log pipeline")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("config", help="settings")
    csub = c.add_subparsers(dest="config_cmd", required=True)
    show = csub.add_parser("show", help="print the effective settings, secrets masked")
    show.add_argument("--format", choices=["yaml", "json"], default="yaml")
    show.set_defaults(func=_config_show)

    st = sub.add_parser("stack", help="local Kafka + ClickHouse")
    st.add_argument("action", choices=["up", "status", "down"])
    st.add_argument("--json", action="store_true", help="machine-readable status")
    st.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for health on up")
    st.add_argument(
        "--kafka-nodes",
        type=int,
        choices=range(1, 6),
        metavar="N",
        default=None,
        help="up: Kafka nodes (1-5; 3 = a cluster with replication factor 3); default stack.kafka_nodes",
    )
    st.set_defaults(func=_stack)

    m = sub.add_parser("migrate", help="apply pending ClickHouse migrations")
    m.add_argument(
        "--cluster",
        metavar="NAME",
        default=None,
        help="a ClickHouse cluster (remote_servers NAME): <table>_local on every node (replicated) and a "
        "Distributed table under the table's name; DDL ON CLUSTER NAME through the configured server",
    )
    m.add_argument(
        "--nodes",
        metavar="URL,URL",
        default=None,
        help="with --cluster: run the DDL on each of these servers (no ON CLUSTER, no distributed DDL)",
    )
    m.add_argument(
        "--no-replication",
        action="store_true",
        help="with --cluster: plain MergeTree engines (shards of one replica, no Keeper)",
    )
    m.set_defaults(func=_migrate)

    for module in CLI_MODULES:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name in (module, module.rpartition(".")[0]):
                continue
            raise
        register: Callable[[argparse._SubParsersAction], None] = mod.register
        register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        get_settings()
        return int(args.func(args) or 0)
    except SettingsError as e:
        print(f"auditpipe: {e}", file=sys.stderr)
        return 2
    except CliError as e:
        print(f"auditpipe: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130


__all__ = ["CliError", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
