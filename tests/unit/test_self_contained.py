"""The repository stands on its own: no test, script, build file or program reads a path outside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# A parent of the repository, a sibling checkout or a workspace path, spelled in code.
_ESCAPES = [
    (re.compile(r"\.\./shared"), "a relative path to a folder beside the checkout"),
    (re.compile(r"""["'/]shared["'/]\s*/|/\s*["']shared["']"""), "a 'shared' folder beside the checkout"),
    (re.compile(r"\bREPO(?:_ROOT)?\.parent\b|\.parents\[(\d+)\]"), "a parent of the repository"),
    (re.compile(r"/work/"), "an absolute workspace path"),
]
_TEXT_SUFFIXES = {".py", ".sh", ".toml", ".yaml", ".yml", ".cfg", ".json", ".md", ""}


def _project_files(root: Path) -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=root, capture_output=True, text=True, check=True, timeout=60,
    ).stdout.split()  # fmt: skip
    return [
        root / name for name in listed if (root / name).suffix in _TEXT_SUFFIXES and (root / name).is_file()
    ]


def _depth(path: Path, root: Path) -> int:
    """How many folders below the repository root the file lies: parents[depth] is the root itself."""
    return len(path.relative_to(root).parts) - 1


def outside_reads(path: Path, root: Path) -> list[str]:
    if path.suffix == ".md" or path.name == "test_self_contained.py":
        return []  # prose may name the seeds; this file names the patterns
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        return []
    hits = []
    for number, line in enumerate(text.splitlines(), 1):
        for pattern, why in _ESCAPES:
            for match in pattern.finditer(line):
                index = match.group(1) if match.groups() else None
                if index is not None and int(index) <= _depth(path, root):
                    continue  # parents[N] that stays inside the repository
                hits.append(f"{path.relative_to(root)}:{number}: {why}: {line.strip()}")
    return hits


def test_no_project_file_reads_a_path_outside_the_repository() -> None:
    offenders = [hit for path in _project_files(REPO) for hit in outside_reads(path, REPO)]
    assert offenders == []


def test_the_guard_sees_each_way_out(tmp_path: Path) -> None:
    tests = tmp_path / "tests" / "unit"
    tests.mkdir(parents=True)
    planted = tests / "test_planted.py"
    planted.write_text(
        "A = Path(__file__).resolve().parents[2]\n"  # the repo root: allowed
        'B = Path(__file__).resolve().parents[3] / "shared"\n'
        'C = REPO.parent / "shared" / "metrics-contract.md"\n'
        'D = open("../shared/seeds/x")\n'
        'E = "/work/shared/metrics-contract.md"\n'
    )
    hits = outside_reads(planted, tmp_path)
    assert sorted({int(h.split(":")[1]) for h in hits}) == [2, 3, 4, 5]
