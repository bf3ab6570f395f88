"""Model digests: the content address of what a ModelEngine builds from.

Computed by the operator (to find cached engines without starting a Job) and by the
builder (to name what it built), so both must read the same bytes the same way: the
source file (or every file of a source directory, by relative path, skipping caches and
the ModelEngine YAMLs kept beside the code), the weights file, and the format/entrypoint that say how those bytes are read.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import yaml

from modelengine.api.models import KIND, ModelSource
from modelengine.errors import InputError
from modelengine.store.base import NotFound
from modelengine.store.open import fetch

_SKIP_DIRS = {"__pycache__", ".git", ".ipynb_checkpoints"}
_MAX_SPEC_BYTES = 1 << 20


class UnreadableModel(InputError):
    """A model file or folder that exists but cannot be read (permissions): bad input."""


def content_files(folder: Path) -> list[Path]:
    """The files of a source folder that make up the model, sorted: caches are skipped,
    and so are ModelEngine YAMLs kept beside the code (editing a target must not change
    the model digest, or every engine would be rebuilt). A subfolder that cannot be listed
    is an error, not an empty folder: a digest of part of a model names the wrong model."""

    def unreadable(err: OSError) -> None:
        raise UnreadableModel(f"cannot read model folder {err.filename}: {err.strerror or err}")

    found: list[Path] = []
    for root, dirs, files in os.walk(folder, onerror=unreadable):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]
        for name in files:
            child = Path(root) / name
            if child.is_file() and child.suffix != ".pyc" and not _is_modelengine_yaml(child):
                found.append(child)
    return sorted(found)


def _is_modelengine_yaml(path: Path) -> bool:
    if path.suffix not in (".yaml", ".yml") or path.stat().st_size > _MAX_SPEC_BYTES:
        return False
    try:
        docs = list(yaml.safe_load_all(path.read_text()))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return any(isinstance(d, dict) and d.get("kind") == KIND and "apiVersion" in d for d in docs)


def _hash_path(h: hashlib._Hash, path: Path) -> None:
    if path.is_dir():
        for child in content_files(path):
            h.update(child.relative_to(path).as_posix().encode() + b"\0")
            _hash_file(h, child)
    else:
        _hash_file(h, path)


def _hash_file(h: hashlib._Hash, path: Path) -> None:
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except PermissionError as err:
        raise UnreadableModel(f"cannot read model file {path}: {err.strerror or err}") from None
    h.update(b"\0")


def content_digest(path: Path) -> str:
    """The content address `modelengine push` uploads a source under: a file's plain
    sha256, or a folder's (relative paths + bytes of its files, caches skipped)."""
    h = hashlib.sha256()
    if path.is_dir():
        _hash_path(h, path)
    else:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def local_path(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path) if parsed.scheme else uri)
    return None


def digest_local(model: ModelSource, source: Path, weights: Path | None = None) -> str:
    """sha256 over the model's bytes (already local) and how they are read."""
    h = hashlib.sha256()
    h.update(f"format={model.format.value};entrypoint={model.entrypoint or ''}\0".encode())
    for label, path in (("source", source), ("weights", weights)):
        if path is None:
            continue
        if not path.exists():
            raise NotFound(f"model {label} {path} does not exist")
        h.update(label.encode() + b"\0")
        _hash_path(h, path)
    return h.hexdigest()


def model_digest(model: ModelSource, *, endpoint_url: str | None = None) -> str:
    """The digest of a model by URI: local files are read in place, s3:// ones fetched."""
    with tempfile.TemporaryDirectory(prefix="modelengine-digest-") as tmp:
        paths: dict[str, Path | None] = {"source": None, "weights": None}
        for label, uri in (("source", model.source), ("weights", model.weights)):
            if uri is None:
                continue
            path = local_path(uri)
            if path is None:
                path = fetch(uri, Path(tmp) / label, endpoint_url=endpoint_url)
            if not path.exists():
                raise NotFound(f"model {label} {uri} does not exist")
            paths[label] = path
        source = paths["source"]
        assert source is not None
        return digest_local(model, source, paths["weights"])
