"""Paths as reports print them: relative to the repository root (`--root`), POSIX style.

Code scanning matches a SARIF location to a file of the commit by its repository-relative
path, so every report writes paths the same way; a file outside the root keeps its
absolute path (SARIF gets a `file://` URI for it).
"""

from __future__ import annotations

from pathlib import Path


def relative(path: Path, root: Path) -> str | None:
    """`path` relative to `root`, or None when it lies outside."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def shown(path: Path, root: Path) -> str:
    return relative(path, root) or path.resolve().as_posix()
