"""Model digests: the content address of what a ModelEngine builds from.

Computed by the operator (to find cached engines without starting a Job) and by the
builder (to name what it built), so both must read the same bytes the same way: the
source file (or every file of a source directory, by relative path, skipping caches),
the weights file, and the format/entrypoint that say how those bytes are read.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from modelengine.api.models import ModelSource
from modelengine.store.base import NotFound
from modelengine.store.open import fetch

_SKIP_DIRS = {"__pycache__", ".git", ".ipynb_checkpoints"}


def _hash_path(h: hashlib._Hash, path: Path) -> None:
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.is_file() and not (_SKIP_DIRS & set(child.relative_to(path).parts)):
                if child.suffix == ".pyc":
                    continue
                h.update(child.relative_to(path).as_posix().encode() + b"\0")
                _hash_file(h, child)
    else:
        _hash_file(h, path)


def _hash_file(h: hashlib._Hash, path: Path) -> None:
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    h.update(b"\0")


def local_path(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path) if parsed.scheme else uri)
    return None


def model_digest(model: ModelSource, *, endpoint_url: str | None = None) -> str:
    """sha256 over the model's bytes (source + weights) and how they are read."""
    h = hashlib.sha256()
    h.update(f"format={model.format.value};entrypoint={model.entrypoint or ''}\0".encode())
    with tempfile.TemporaryDirectory(prefix="modelengine-digest-") as tmp:
        for label, uri in (("source", model.source), ("weights", model.weights)):
            if uri is None:
                continue
            h.update(label.encode() + b"\0")
            path = local_path(uri)
            if path is None:
                path = fetch(uri, Path(tmp) / label, endpoint_url=endpoint_url)
            if not path.exists():
                raise NotFound(f"model {label} {uri} does not exist")
            _hash_path(h, path)
    return h.hexdigest()
