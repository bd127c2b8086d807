"""Reading procfs files: a missing or unreadable file is the quiet "no data here" outcome."""

from __future__ import annotations

from pathlib import Path

from esnode_agent.cycle.collector import NoDataError


def read_text(path: Path) -> str:
    """The whole file, or NoDataError when it is absent or not readable here."""
    try:
        with open(path, encoding="ascii", errors="replace") as source:
            return source.read()
    except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        raise NoDataError(f"{path}: {exc.strerror}") from None


def read_optional(path: Path) -> str | None:
    """The whole file, or None when it is absent or not readable: for a source that only adds series."""
    try:
        return read_text(path)
    except NoDataError:
        return None
