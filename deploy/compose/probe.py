#!/usr/local/bin/python
"""Container health probe: GET each URL given, exit 0 only if every one answers 2xx.

Used by the compose healthchecks as ``auditpipe-probe http://127.0.0.1:8080/healthz
http://127.0.0.1:8080/readyz`` (python:3.11-slim has neither curl nor wget).
"""

import sys
import urllib.request


def main(urls: list[str]) -> int:
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=3) as r:  # noqa: S310 - fixed local URLs
                if not 200 <= r.status < 300:
                    print(f"{url}: HTTP {r.status}")
                    return 1
        except Exception as e:  # noqa: BLE001 - any failure means unhealthy
            print(f"{url}: {e}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
