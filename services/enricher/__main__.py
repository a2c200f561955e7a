"""``python -m services.enricher``: one worker, as ``auditpipe enricher`` runs it."""

from __future__ import annotations

import sys

from services.common.settings import SettingsError, load_settings


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as e:
        print(f"auditpipe enricher: {e}", file=sys.stderr)
        return 2
    from services.enricher.main import run

    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
