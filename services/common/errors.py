"""Errors every command shares."""

from __future__ import annotations


class CliError(Exception):
    """A one-line failure of a command; ``code`` is the exit status (2 = bad input or settings)."""

    def __init__(self, msg: str, code: int = 1) -> None:
        super().__init__(msg)
        self.code = code
