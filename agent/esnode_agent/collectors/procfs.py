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


def parse_count(field: str) -> int:
    """A kernel counter: digits only. int() would also take a sign, so a corrupt "-1" became a
    counter that fell."""
    if not field.isdigit():
        raise ValueError(f"not a count: {field!r}")
    return int(field)


def host_view(procfs: Path, *relative: str) -> tuple[Path, Path]:
    """PID 1's copy of a per-namespace file, then the agent's own.

    In the host's PID namespace (hostPID, or no container at all) PID 1 is the host's init, so its
    mount table and network namespace are the host's even when the agent has namespaces of its own.
    """
    return procfs.joinpath("1", *relative), procfs.joinpath(*relative)


def read_first(paths: tuple[Path, ...]) -> str:
    """The first of ``paths`` that can be read; NoDataError naming the last when none can."""
    *earlier, last = paths
    for path in earlier:
        text = read_optional(path)
        if text is not None:
            return text
    return read_text(last)
