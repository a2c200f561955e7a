"""Runs the real ClickHouse engine from chdb-core as an HTTP server (clickhouse-local serving HTTP).

Started by ``auditpipe stack up`` with the working directory holding ``config.xml`` (listen_host and
http_port). ``SYSTEM START LISTEN HTTP`` opens ClickHouse's own HTTP interface (``--tcp``: also the native
protocol, for a shard of a local two-shard cluster behind a ``Distributed`` table); the hold query keeps the
process (and so the server) alive until it receives SIGTERM. One process per data directory.
"""

from __future__ import annotations

import argparse
import sys

# A query that sleeps in 3-second blocks for ~9.5 years: the server lives while it runs.
HOLD = (
    "SELECT sleep(3) FROM numbers(100000000) "
    "SETTINGS max_block_size = 1, function_sleep_max_microseconds_per_block = 0, max_execution_time = 0"
)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--tcp", action="store_true", help="also serve the native protocol (config.xml tcp_port)")
    args = ap.parse_args()
    import chdb._chdb as chdb_core  # noqa: PLC0415 - heavy import only in the server process

    print("auditpipe clickhouse server starting", flush=True)
    # The native protocol is what a Distributed table uses to reach the other shards.
    listen = "SYSTEM START LISTEN HTTP; " + ("SYSTEM START LISTEN TCP; " if args.tcp else "")
    chdb_core.query(f"{listen}{HOLD}", "TabSeparated", path=args.data)
    print("auditpipe clickhouse server hold query ended", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
