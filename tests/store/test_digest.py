"""Folder digests: which files count, in which order, and an unreadable folder refused."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelengine.errors import InputError
from modelengine.store.digest import UnreadableModel, content_digest, content_files


def _tree(root: Path) -> None:
    for rel, text in {
        "model.py": "def make(): ...",
        "weights/a.bin": "aaa",
        "weights/nested/b.bin": "bbb",
        "z-last.txt": "z",
        "__pycache__/model.cpython-311.pyc": "cache",
        ".git/HEAD": "ref",
        "weights/skip.pyc": "compiled",
        "modelengine.yaml": "apiVersion: modelengine.io/v1alpha1\nkind: ModelEngine\n",
    }.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_folder_counts_its_model_files_in_path_order(tmp_path: Path) -> None:
    _tree(tmp_path)
    files = [p.relative_to(tmp_path).as_posix() for p in content_files(tmp_path)]
    assert files == ["model.py", "weights/a.bin", "weights/nested/b.bin", "z-last.txt"]
    expected = hashlib.sha256()
    for rel in files:
        expected.update(rel.encode() + b"\0" + (tmp_path / rel).read_bytes() + b"\0")
    assert content_digest(tmp_path) == expected.hexdigest()


def test_a_folder_that_cannot_be_listed_is_refused_not_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Root reads every folder regardless of its mode, so the refusal is made where os.walk
    # lists folders, as a pod's non-root user meets it.
    _tree(tmp_path)
    locked = tmp_path / "weights" / "nested"
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Iterator[os.DirEntry[str]]:
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(UnreadableModel, match=f"cannot read model folder {locked}: Permission denied"):
        content_digest(tmp_path)
    assert issubclass(UnreadableModel, InputError)  # bad input: exit 2, not a store fault
