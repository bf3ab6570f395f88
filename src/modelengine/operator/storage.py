"""Store access for the operator: one client per (store, credentials), from the Secret.

The operator reads manifests and writes release records with the credentials of the
Secret the ModelEngine references (the same one its builder Jobs get through `envFrom`),
or with its own ambient credentials (IRSA, env) when the spec names none. Secrets are read
once and cached briefly, so 500 ModelEngines sharing one Secret cost one GET; their values
live only in the boto3 client, never in a status, event or log line.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable
from typing import Any

from modelengine.api.models import StorageSpec
from modelengine.store.base import ObjectStore, StoreError
from modelengine.store.open import open_store

SecretReader = Callable[[str, str], Awaitable[dict[str, str] | None]]
"""(namespace, name) → the Secret's base64 `data`, or None when it does not exist."""

SECRET_TTL_SECONDS = 300.0


class StoreProvider:
    def __init__(self, *, read_secret: SecretReader, clock: Callable[[], float] = time.monotonic) -> None:
        self._read_secret = read_secret
        self._clock = clock
        self._secrets: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}
        self._stores: dict[tuple[str, str | None, str | None, tuple[tuple[str, str], ...]], ObjectStore] = {}

    async def _credentials(self, namespace: str, storage: StorageSpec) -> dict[str, str]:
        if storage.secret_ref is None:
            return {}
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

    async def store_for(self, namespace: str, storage: StorageSpec) -> ObjectStore:
        creds = await self._credentials(namespace, storage)
        region = storage.region or creds.get("AWS_REGION") or creds.get("AWS_DEFAULT_REGION")
        key = (storage.uri, storage.endpoint_url, region, tuple(sorted(creds.items())))
        store = self._stores.get(key)
        if store is None:
            store = _open(storage, region, creds)
            self._stores[key] = store
        return store


def _open(storage: StorageSpec, region: str | None, creds: dict[str, str]) -> ObjectStore:
    if not storage.uri.startswith("s3://") or not creds.get("AWS_ACCESS_KEY_ID"):
        return open_store(storage.uri, endpoint_url=storage.endpoint_url, region=region)
    import boto3
    from botocore.config import Config

    from modelengine.store.s3 import S3Store

    client: Any = boto3.client(
        "s3",
        endpoint_url=storage.endpoint_url,
        region_name=region or "us-east-1",
        aws_access_key_id=creds.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=creds.get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=creds.get("AWS_SESSION_TOKEN"),
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10),
    )
    bucket, _, prefix = storage.uri[len("s3://") :].partition("/")
    return S3Store(bucket, prefix, endpoint_url=storage.endpoint_url, region=region, client=client)
