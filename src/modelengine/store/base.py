"""The object store interface: a flat key space of immutable-ish blobs.

Design: the pipeline, the operator and the runtime all talk to storage through this one
small interface, so `file://` (local demo, tests) and `s3://` (clusters) are
interchangeable. Keys are '/'-separated paths relative to the store's root URI. Writes
are whole-object (S3 semantics): a reader never sees half an object, and `put_*` of a key
that already exists replaces it. Publishing order (artifacts first, manifest last) is
the caller's job, see `publish.py`.

Errors are `StoreError` subclasses with a one-line message that never contains
credentials: the store URI is shown, secrets never are. A `StoreError` is an
`InfrastructureError` (exit 3: the store failed or holds something wrong); `NotFound`
exits 2 when it reaches the CLI, since a missing object there is one the user named.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from modelengine.errors import EXIT_INPUT, InfrastructureError


class StoreError(InfrastructureError, RuntimeError):
    """A store operation failed; the message is one line, safe to log and show."""


class NotFound(StoreError):
    """The key does not exist."""

    exit_code = EXIT_INPUT


class InvalidStoreConfig(StoreError):
    """A store URI, bucket name or endpoint that cannot work: the user's input (exit 2)."""

    exit_code = EXIT_INPUT


@runtime_checkable
class ObjectStore(Protocol):
    """What every store backend offers. `uri` is the store root, credential-free."""

    @property
    def uri(self) -> str: ...

    def url_for(self, key: str) -> str:
        """Full URI of a key (for status and manifests)."""
        ...

    def exists(self, key: str) -> bool: ...

    def get_bytes(self, key: str) -> bytes: ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_file(self, key: str, dest: Path) -> None:
        """Download to `dest` (written under a temporary name, then renamed)."""
        ...

    def put_file(self, key: str, src: Path) -> None: ...

    def list(self, prefix: str) -> Iterator[str]:
        """Keys under `prefix`, in no particular order."""
        ...

    def delete(self, key: str) -> None:
        """Remove one key; a missing key is not an error."""
        ...

    def size(self, key: str) -> int: ...
