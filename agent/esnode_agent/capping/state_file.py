"""What the capper changed, on disk: each GPU's original limit and the one esnode set.

Written atomically (a temporary file, fsync, rename) before and after every change, so that after a
crash the next start knows which limits are esnode's to restore and to what, and never touches a
limit someone else set since.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

STATE_FILE_NAME = "power-capping.json"


class ChangedLimit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    original_milliwatts: int
    set_milliwatts: int | None = None  # the last limit esnode set and saw succeed
    pending_milliwatts: int | None = None  # being set now: the call may or may not have happened

    def is_ours(self, current_milliwatts: int) -> bool:
        return current_milliwatts in (self.set_milliwatts, self.pending_milliwatts)


class CappingState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gpus: dict[str, ChangedLimit] = {}  # by GPU uuid


class StateFile:
    def __init__(self, directory: Path) -> None:
        self.path = directory / STATE_FILE_NAME

    def load(self) -> CappingState:
        """The saved state; an unreadable file is reported, not guessed at."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return CappingState()
        try:
            return CappingState.model_validate_json(text)
        except ValidationError as exc:
            raise ValueError(
                f"{self.path}: not a power-capping state file: {exc.errors()[0]['msg']}"
            ) from None

    def check_writable(self) -> None:
        """Raises OSError unless the directory exists (created if need be) and takes a file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=self.path.parent):
            pass

    def save(self, state: CappingState) -> None:
        if state.gpus:
            write_atomically(self.path, state.model_dump_json(indent=1))
        else:
            self.path.unlink(missing_ok=True)  # nothing of ours left on the node


def write_atomically(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of one, even across a power loss."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, encoding="utf-8") as tmp:
        tmp.write(text)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, path)
