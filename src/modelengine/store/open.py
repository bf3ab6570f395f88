"""Open a store from its URI, and fetch model sources by URI: one file, or a folder
(`s3://bucket/prefix/`, trailing slash) downloaded object by object."""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import unquote, urlparse

from modelengine.store.base import NotFound, ObjectStore, StoreError
from modelengine.store.file import FileStore
from modelengine.store.s3 import S3Store


def open_store(uri: str, *, endpoint_url: str | None = None, region: str | None = None) -> ObjectStore:
    """`file:///abs/dir`, a plain path, or `s3://bucket/prefix`."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = unquote(parsed.path) if parsed.scheme else uri
        if not path:
            raise StoreError(f"store URI {uri!r} has no path")
        return FileStore(Path(path))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StoreError(f"store URI {uri!r} has no bucket")
        return S3Store(parsed.netloc, parsed.path.lstrip("/"), endpoint_url=endpoint_url, region=region)
    raise StoreError(f"unsupported store URI scheme {parsed.scheme!r} in {uri!r} (use file:// or s3://)")


def split_object_uri(uri: str, **kwargs: str | None) -> tuple[ObjectStore, str]:
    """A store rooted at the object's folder, and the object's key in it."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = Path(unquote(parsed.path) if parsed.scheme else uri)
        return FileStore(path.parent), path.name
    if parsed.scheme == "s3":
        key = parsed.path.lstrip("/")
        prefix, _, name = key.rpartition("/")
        store = open_store(f"s3://{parsed.netloc}/{prefix}", **kwargs)
        return store, name
    raise StoreError(f"unsupported URI scheme {parsed.scheme!r} in {uri!r} (use file:// or s3://)")


def fetch(uri: str, dest: Path, **kwargs: str | None) -> Path:
    """Download one object, or every object under a folder URI, to `dest` (local files
    and folders are used in place)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = Path(unquote(parsed.path) if parsed.scheme else uri)
        if not path.exists():
            raise NotFound(f"{uri} does not exist")
        return path
    if parsed.scheme == "s3" and parsed.path.endswith("/"):
        return _fetch_folder(uri, dest, **kwargs)
    store, key = split_object_uri(uri, **kwargs)
    store.get_file(key, dest)
    return dest


def _fetch_folder(uri: str, dest: Path, **kwargs: str | None) -> Path:
    folder = open_store(uri, **kwargs)
    keys = sorted(k for k in folder.list("") if k and not k.endswith("/"))
    if not keys:
        raise NotFound(f"{uri} holds no objects")
    root = dest.resolve()
    for key in keys:
        target = (root / key).resolve()
        if not target.is_relative_to(root):
            raise StoreError(f"{uri}: object key {key!r} escapes the folder")
        folder.get_file(key, target)
    return root


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
