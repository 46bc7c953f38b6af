"""Small file-system helpers shared by the sinks and the command lines: which folders opening a
path would create, why a folder could not be made, and removing what a run that never started
created."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def missing_paths(path: Path) -> list[Path]:
    """``path`` and those of its folders that do not exist yet, deepest first: what opening it
    (after ``mkdir(parents=True)``) would create."""
    made = []
    for p in (path, *path.parents):
        if os.path.lexists(p):
            break
        made.append(p)
    return made


def why_no_folder(exc: OSError, folder: Path) -> str:
    """Why ``folder`` could not be made: a file standing where one of its folders should be is
    named (the system says only "File exists" or "Not a directory"), else the system's reason."""
    for p in (folder, *folder.parents):
        if os.path.lexists(p):
            return f"{p} is a file, not a folder" if not p.is_dir() else (exc.strerror or str(exc))
    return exc.strerror or str(exc)


def remove_if_empty(paths: list[Path]) -> None:
    """Remove what a sink created for a run that never started (deepest first): empty files and
    empty folders only, so nothing anyone wrote is lost."""
    for p in paths:
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                p.rmdir()  # fails unless empty
            elif p.is_file() and p.stat().st_size == 0:
                p.unlink()
