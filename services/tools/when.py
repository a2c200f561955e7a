"""Times on the command line: a duration (``90d``, ``12h``, ``30m``, ``45s``, ``2w``) or an ISO 8601 date or
timestamp (``2026-03-01``, ``2026-03-01T08:00:00Z``; UTC when no offset is given)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(r"^(\d{1,6})([smhdw])$")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class WhenError(ValueError):
    """Not a duration or a timestamp; ``str()`` says what is accepted."""


def parse_duration(text: str) -> timedelta | None:
    m = _DURATION.match(text.strip())
    return timedelta(**{_UNIT[m.group(2)]: int(m.group(1))}) if m else None


def parse_when(text: str, now: datetime, direction: int) -> datetime:
    """``text`` as an aware UTC time; a duration counts back from ``now`` (direction -1, e.g. ``--since
    7d``) or forward (direction +1, e.g. ``--expires 90d``)."""
    d = parse_duration(text)
    if d is not None:
        return now + direction * d
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise WhenError(
            f"'{text}' is neither a duration (90d, 12h, 30m, 45s, 2w) nor an ISO 8601 time"
        ) from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def iso(dt: datetime | None) -> str:
    """``2026-03-01T08:00:00Z`` (UTC, seconds), or '' for None."""
    if dt is None:
        return ""
    return dt.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
