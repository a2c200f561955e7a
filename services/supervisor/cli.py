"""``auditpipe run [--services ...]``."""

from __future__ import annotations

import argparse

from services.common.logging import configure_logging
from services.common.settings import get_settings
from services.supervisor.supervisor import DEFAULT_SERVICES, InstancesError, Supervisor, parse_instances


def _run(args: argparse.Namespace) -> int:
    s = get_settings()
    configure_logging("supervisor", s.log_level)
    services = [x.strip() for x in args.services.split(",") if x.strip()]
    unknown = set(services) - set(DEFAULT_SERVICES)
    if unknown:
        from services.cli import CliError

        raise CliError(f"unknown service(s): {', '.join(sorted(unknown))}", 2)
    if (
        "forwarder" in services
        and s.forwarder.config_file is None
        and args.services == ",".join(DEFAULT_SERVICES)
    ):
        services.remove("forwarder")  # no destinations configured: nothing to forward to
    try:
        instances = parse_instances(args.instances, services)
        sup = Supervisor(
            services,
            grace_s=args.grace,
            status_file=args.status_file,
            instances=instances,
            port_stride=args.port_stride,
            settings=s,
        )
    except InstancesError as e:
        from services.cli import CliError

        raise CliError(str(e), 2) from None
    return sup.run()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run every service as supervised processes (Ctrl-C stops all)")
    p.add_argument("--services", default=",".join(DEFAULT_SERVICES), help="comma-separated subset")
    p.add_argument("--grace", type=float, default=30.0, help="seconds children get to finish on stop")
    p.add_argument("--status-file", default=None, help="write {child: {pid, restarts}} JSON here")
    p.add_argument(
        "--instances",
        default="",
        help="processes per service, e.g. enricher=2,sink=2,forwarder=2,ingest=2 (one consumer group each; "
        "instance i listens on the service's port + (i-1) x --port-stride)",
    )
    p.add_argument("--port-stride", type=int, default=100, help="port distance between instances (100)")
    p.set_defaults(func=_run)
