"""Pure rules of retention and archives: retention bounds, which days, safe names, the line checksum."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.archive.files import resolve
from services.archive.rules import (
    FILE_RE,
    ArchiveError,
    clamp_retention,
    days_to_archive,
    file_name,
    line_checksum,
    org_dir_name,
)
from services.common.settings import load_settings


@pytest.mark.parametrize(
    ("days", "self_hosted", "want"),
    [
        (None, False, 90),
        (0, False, 90),
        (1, False, 1),
        (365, False, 365),
        (366, False, 365),
        (3650, True, 3650),
        (9999, True, 3650),
        (30, True, 30),
    ],
)
def test_retention_bounds(days, self_hosted, want) -> None:  # noqa: ANN001
    s = load_settings(retention={"self_hosted": self_hosted})
    assert clamp_retention(days, s) == want


@given(
    st.lists(st.dates(date(2020, 1, 1), date(2030, 1, 1)), max_size=50),
    st.integers(1, 3650),
    st.dates(date(2020, 1, 1), date(2030, 1, 1)),
)
def test_days_to_archive_are_exactly_those_older_than_retention(days, keep, today) -> None:  # noqa: ANN001
    out = days_to_archive(days, keep, today)
    assert out == sorted(out)
    assert set(out) == {d for d in days if (today - d).days > keep}


@given(st.text(min_size=1, max_size=60))
def test_org_folder_names_are_safe(org) -> None:  # noqa: ANN001
    name = org_dir_name(org)
    assert "/" not in name and "\\" not in name and name not in (".", "..") and not name.startswith(".")
    assert "\x00" not in name


def test_file_names_and_resolve_refuse_traversal(tmp_path) -> None:
    assert FILE_RE.match(file_name(date(2026, 1, 2), 0, False))
    assert FILE_RE.match(file_name(date(2026, 1, 2), 3, True)).group(2) == "3"
    s = load_settings(retention={"archive_dir": tmp_path})
    for bad in (
        "../x/events-2026-01-01.jsonl",
        "a/b/events-2026-01-01.jsonl",
        "/etc/passwd",
        "a/x.jsonl",
        "a/..",
        "",
    ):
        with pytest.raises(ArchiveError) as e:
            resolve(s, bad)
        assert e.value.code == "invalid_name", bad
    with pytest.raises(ArchiveError) as e:
        resolve(s, "org/events-2026-01-01.jsonl")
    assert e.value.code == "not_found"


def test_line_checksum_matches_clickhouse_definition() -> None:
    # reinterpretAsUInt64(substring(SHA256(x), 1, 8)) reads the first 8 bytes little-endian.
    import hashlib

    h = hashlib.sha256(b"abc\n").digest()
    assert line_checksum(b"abc\n") == int.from_bytes(h[:8], "little")
