"""Model sources: a model's digest from its source record, never from its bytes.

The operator learns a model's digest from the small source record the resolve step
writes (`store.sources`), keyed by the source's identity: URI + ETag/VersionId + size for
an s3:// object, a listing hash for an s3:// folder, URI + image for a `file://` path
inside a custom builder image. Computing the identity is one HEAD (or one listing) with
the ModelEngine's own credentials, cached for a few seconds; the record itself never
changes once written and is cached for good. So a multi-GB model costs the operator the
same few hundred bytes of I/O as a tiny one.

On a miss the answer is a resolve Job (CPU, with the ModelEngine's Secret), shared by
every ModelEngine of the same source: it hashes the model, exports the ONNX once and
writes the record last. Its Job carries the build-key label `resolve-<identity>` so the
informers wake every ModelEngine waiting for it, like a build.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modelengine.api.models import ModelEngine
from modelengine.api.targets import export_recipe
from modelengine.errors import first_line
from modelengine.logs import redact
from modelengine.operator.build_jobs import job_state, resolve_job, resolve_job_name, resolve_key
from modelengine.operator.builds import Builds
from modelengine.operator.config import OperatorConfig
from modelengine.operator.informers import Informers
from modelengine.operator.kube import ApiError, KubeApi
from modelengine.operator.storage import StoreProvider
from modelengine.operator.workqueue import Key
from modelengine.store.base import ObjectStore, StoreError
from modelengine.store.sources import SourceIdentity, SourceRecord, read_source_record, source_identity

IDENTITY_TTL_SECONDS = 10.0


class SourceError(StoreError):
    """The model source cannot be read in a cluster (a local path, a missing object)."""


@dataclass(frozen=True)
class Resolution:
    """Either the model's digest, or what the ModelEngine waits for / failed on."""

    digest: str | None = None
    waiting: str | None = None  # a resolve Job is running
    failed: str | None = None  # the resolve Job failed: its reason
    resolve_key: str | None = None  # the build-key label of the resolve Job to wait on


class ModelSources:
    def __init__(
        self,
        *,
        api: KubeApi,
        stores: StoreProvider,
        cache: Informers,
        builds: Builds,
        config: OperatorConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._stores = stores
        self._cache = cache
        self._builds = builds
        self._config = config
        self._clock = clock
        self._identities: dict[tuple[str, ...], tuple[float, SourceIdentity]] = {}
        self._records: dict[tuple[str, str], SourceRecord] = {}  # (store, identity) → record

    async def resolve(
        self, key: Key, body: dict[str, Any], me: ModelEngine, store: ObjectStore
    ) -> Resolution:
        identity = await self._identity(key[0], me)
        cached = self._records.get((store.uri, identity.key))
        if cached is None:
            cached = await asyncio.to_thread(read_source_record, store, identity)
            if cached is not None:
                self._records[(store.uri, identity.key)] = cached
        if cached is not None:
            return Resolution(digest=cached.model_digest)
        return await self._resolve_job(key, body, me, identity)

    async def _identity(self, namespace: str, me: ModelEngine) -> SourceIdentity:
        model, storage = me.spec.model, me.spec.storage
        ref = (
            namespace,
            model.source,
            model.weights or "",
            model.format.value,
            model.entrypoint or "",
            me.spec.build.image or "",
            storage.endpoint_url or "",
            storage.secret_ref.name if storage.secret_ref else "",
            json.dumps(export_recipe(me.spec), sort_keys=True),
        )
        now = self._clock()
        hit = self._identities.get(ref)
        if hit is not None and now - hit[0] < IDENTITY_TTL_SECONDS:
            return hit[1]
        needs_s3 = any(u.startswith("s3://") for u in (model.source, model.weights or ""))
        client = await self._stores.s3_client_for(namespace, storage) if needs_s3 else None
        try:
            identity = await asyncio.to_thread(source_identity, me.spec, client=client)
        except StoreError as err:
            raise SourceError(redact(first_line(err))) from None
        if identity is None:
            raise SourceError(
                "a local path cannot be read in a cluster: upload it with `modelengine push` "
                "(s3://) or bake it into spec.build.image and use an absolute file:// URI"
            )
        self._identities[ref] = (now, identity)
        return identity

    async def _resolve_job(
        self, key: Key, body: dict[str, Any], me: ModelEngine, identity: SourceIdentity
    ) -> Resolution:
        label = resolve_key(identity.key)
        name = resolve_job_name(identity.key)
        job = self._cache.jobs.get((key[0], name))
        if job is not None and not (job.get("metadata") or {}).get("deletionTimestamp"):
            state = job_state(job)
            if state == "Failed":
                return Resolution(failed=await self._builds.failure_reason(key[0], job), resolve_key=label)
            if state == "Succeeded":
                # The record should be there now; a stale Job (TTL) without it is re-run.
                return Resolution(
                    failed="the resolve Job succeeded but wrote no source record", resolve_key=label
                )
            return Resolution(waiting=f"resolving the model source (Job {name})", resolve_key=label)
        manifest = resolve_job(
            me=me,
            uid=(body.get("metadata") or {}).get("uid"),
            generation=int((body.get("metadata") or {}).get("generation") or 1),
            identity=identity.key,
            config=self._config,
        )
        try:
            await self._builds.start(key, manifest, kind="resolve")
        except ApiError as err:
            if not 400 <= err.status < 500 or err.status == 429:
                raise
            return Resolution(
                failed=f"the API server refused Job {name}: {redact(first_line(err))}", resolve_key=label
            )
        return Resolution(waiting=f"resolving the model source (Job {name})", resolve_key=label)
