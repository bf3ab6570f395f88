"""Model digests, cached by source and a cheap fingerprint of it.

Hashing a model means reading all its bytes; 500 ModelEngines sharing one model must not
do that 500 times, nor once per reconcile. The cache key is the model reference (source,
weights, format, entrypoint) plus a fingerprint that changes whenever the bytes may have:
size + mtime for local files and folders, ETag + size for S3 objects. Concurrent requests
for one key wait for a single hash (one lock per key).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from modelengine.api.models import ModelSource
from modelengine.store.digest import local_path, model_digest

Fingerprint = Callable[[str, str | None], str]
Hasher = Callable[[ModelSource, str | None], str]


def fingerprint(uri: str, endpoint_url: str | None) -> str:
    """Changes whenever the object at `uri` may have changed."""
    path = local_path(uri)
    if path is not None:
        return _local_fingerprint(path)
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        import boto3

        client: Any = boto3.client("s3", endpoint_url=endpoint_url)
        head = client.head_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
        return f"etag={head.get('ETag')};size={head.get('ContentLength')}"
    return "unknown"


def _local_fingerprint(path: Path) -> str:
    if not path.exists():
        return "missing"
    if path.is_file():
        st = path.stat()
        return f"size={st.st_size};mtime={st.st_mtime_ns}"
    total, latest, count = 0, 0, 0
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if d not in ("__pycache__", ".git")]
        for f in files:
            st = os.stat(os.path.join(root, f))
            total, latest, count = total + st.st_size, max(latest, st.st_mtime_ns), count + 1
    return f"files={count};size={total};mtime={latest}"


def _default_hasher(model: ModelSource, endpoint_url: str | None) -> str:
    return model_digest(model, endpoint_url=endpoint_url)


class DigestCache:
    def __init__(self, *, hasher: Hasher = _default_hasher, fingerprint: Fingerprint = fingerprint) -> None:
        self._hasher = hasher
        self._fingerprint = fingerprint
        self._digests: dict[tuple[str, ...], str] = {}
        self._locks: dict[tuple[str, ...], asyncio.Lock] = {}
        self.hashes = 0  # how many times bytes were actually hashed (for tests and metrics)

    def _fingerprints(self, model: ModelSource, endpoint_url: str | None) -> tuple[str, ...]:
        uris = [u for u in (model.source, model.weights) if u]
        return tuple(self._fingerprint(u, endpoint_url) for u in uris)

    async def digest(self, model: ModelSource, *, endpoint_url: str | None = None) -> str:
        ref = (
            model.source,
            model.weights or "",
            model.format.value,
            model.entrypoint or "",
            endpoint_url or "",
        )
        prints = await asyncio.to_thread(self._fingerprints, model, endpoint_url)
        key = ref + prints
        cached = self._digests.get(key)
        if cached is not None:
            return cached
        lock = self._locks.setdefault(ref, asyncio.Lock())
        async with lock:
            cached = self._digests.get(key)
            if cached is None:
                cached = await asyncio.to_thread(self._hasher, model, endpoint_url)
                self.hashes += 1
                self._digests = {k: v for k, v in self._digests.items() if k[: len(ref)] != ref}
                self._digests[key] = cached
        return cached
