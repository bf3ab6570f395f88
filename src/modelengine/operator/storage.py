"""Store access for the operator: one client per (store, credentials), from the Secret.

The operator reads manifests and source records and writes release records with the
credentials of the Secret the ModelEngine references — the same one its builder Jobs get
through `envFrom`, read the same way (`store.s3.s3_client`: access keys, session token,
region and `AWS_ENDPOINT_URL`), so one Secret can never send the two to different places —
or with its own ambient credentials (IRSA, env) when the spec names none. Secrets are read
once and cached briefly, so 500 ModelEngines sharing one Secret cost one GET; their values
live only in the boto3 client, never in a status, event or log line.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from modelengine.api.models import StorageSpec
from modelengine.store.base import ObjectStore, StoreError
from modelengine.store.open import open_store
from modelengine.store.s3 import S3Store, s3_client

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SecretReader = Callable[[str, str], Awaitable[dict[str, str] | None]]
"""(namespace, name) → the Secret's base64 `data`, or None when it does not exist."""

SECRET_TTL_SECONDS = 300.0
_ClientKey = tuple[str | None, str | None, tuple[tuple[str, str], ...] | None]


class StoreProvider:
    def __init__(self, *, read_secret: SecretReader, clock: Callable[[], float] = time.monotonic) -> None:
        self._read_secret = read_secret
        self._clock = clock
        self._secrets: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}
        self._clients: dict[_ClientKey, S3Client] = {}
        self._stores: dict[tuple[str, _ClientKey], ObjectStore] = {}

    async def _credentials(self, namespace: str, storage: StorageSpec) -> dict[str, str] | None:
        """The Secret's keys, or None (this process's own credentials) when the spec names none."""
        if storage.secret_ref is None:
            return None
        key = (namespace, storage.secret_ref.name)
        cached = self._secrets.get(key)
        if cached is not None and self._clock() - cached[0] < SECRET_TTL_SECONDS:
            return cached[1]
        data = await self._read_secret(*key)
        if data is None:
            raise StoreError(f"storage Secret {namespace}/{storage.secret_ref.name} does not exist")
        decoded = {k: base64.b64decode(v).decode() for k, v in data.items()}
        self._secrets[key] = (self._clock(), decoded)
        return decoded

    async def s3_client_for(self, namespace: str, storage: StorageSpec) -> S3Client:
        """An S3 client with the ModelEngine's credentials (for model sources' metadata)."""
        creds = await self._credentials(namespace, storage)
        key: _ClientKey = (
            storage.endpoint_url,
            storage.region,
            tuple(sorted(creds.items())) if creds is not None else None,
        )
        client = self._clients.get(key)
        if client is None:
            client = s3_client(endpoint_url=storage.endpoint_url, region=storage.region, credentials=creds)
            self._clients[key] = client
        return client

    async def store_for(self, namespace: str, storage: StorageSpec) -> ObjectStore:
        if urlparse(storage.uri).scheme != "s3":
            local_key = (storage.uri, (storage.endpoint_url, storage.region, ()))
            local = self._stores.get(local_key)
            if local is None:  # opened once: a file store resolves its root on opening
                local = open_store(storage.uri, endpoint_url=storage.endpoint_url, region=storage.region)
                self._stores[local_key] = local
            return local
        client = await self.s3_client_for(namespace, storage)
        creds = await self._credentials(namespace, storage)
        key = (storage.uri, (storage.endpoint_url, storage.region, tuple(sorted((creds or {}).items()))))
        store = self._stores.get(key)
        if store is None:
            bucket, _, prefix = storage.uri[len("s3://") :].partition("/")
            if not bucket:
                raise StoreError(f"store URI {storage.uri!r} has no bucket")
            store = S3Store(bucket, prefix, client=client)
            self._stores[key] = store
        return store
