"""What a reconcile needs before it can plan, each failure reported in status.

A valid spec (admission's rules checked again: an older CRD may lack them), the store
opened with the ModelEngine's Secret, and the model's digest from its source record (or
a resolve Job under way). When one is missing the ModelEngine gets a status that says
which and why — an invalid spec, a store or source fault (then retried with backoff),
"resolving the model source" — and reconcile stops there. Objects the API server refused
are reported as Events and retried with backoff, never silently.
"""

from __future__ import annotations

from typing import Any, NoReturn

from modelengine.api.models import ModelEngine
from modelengine.api.validation import SpecError, cluster_source_problems, parse_modelengine
from modelengine.errors import first_line
from modelengine.logs import redact
from modelengine.operator.informers import Informers
from modelengine.operator.kube import ApiError
from modelengine.operator.sources import ModelSources, SourceError
from modelengine.operator.status import desired_status, parse_status
from modelengine.operator.status_writer import StatusWriter
from modelengine.operator.storage import StoreProvider
from modelengine.operator.workqueue import Key
from modelengine.store.base import ObjectStore, StoreError


class Inputs:
    def __init__(
        self, *, status: StatusWriter, cache: Informers, sources: ModelSources, stores: StoreProvider
    ) -> None:
        self._status = status
        self._cache = cache
        self._sources = sources
        self._stores = stores

    async def parse(self, key: Key, body: dict[str, Any], generation: int | None) -> ModelEngine | None:
        """The spec as the API models read it; an invalid one is reported in status."""
        try:
            me = parse_modelengine(
                {
                    "apiVersion": body.get("apiVersion"),
                    "kind": body.get("kind"),
                    "metadata": {"name": key[1], "namespace": key[0]},
                    "spec": body.get("spec"),
                }
            )
            # Admission refuses these too (CEL); an older CRD may not have, so say it here.
            problems = cluster_source_problems(me.spec)
            if problems:
                raise SpecError(problems)
            return me
        except SpecError as err:
            await self._write_no_engines(key, body, generation, None, problems=err.problems)
            self._cache.set_plan(key, set())
            return None

    async def model_digest(
        self, key: Key, body: dict[str, Any], me: ModelEngine, generation: int | None, store: ObjectStore
    ) -> str | None:
        """The model's digest from its source record; None while a resolve Job works on it."""
        source = me.spec.model.source
        try:
            resolution = await self._sources.resolve(key, body, me, store)
        except SourceError as err:
            await self._fail(key, body, generation, None, f"spec.model.source {source}: {err}")
        except (StoreError, OSError) as err:
            await self._fail(
                key, body, generation, None, f"spec.model.source {source}: {redact(first_line(err))}"
            )
        if resolution.digest is not None:
            return resolution.digest
        self._cache.set_plan(key, {resolution.resolve_key} if resolution.resolve_key else set())
        await self._write_no_engines(
            key,
            body,
            generation,
            None,
            waiting=resolution.waiting,
            error=f"spec.model.source {source}: {resolution.failed}" if resolution.failed else None,
            error_reason="ResolveFailed",
        )
        if resolution.failed and resolution.failed.startswith("the API server refused"):
            self.report_refused(key, body, [resolution.failed])
        return None

    async def store(
        self, key: Key, body: dict[str, Any], me: ModelEngine, generation: int | None
    ) -> ObjectStore:
        try:
            return await self._stores.store_for(key[0], me.spec.storage)
        except StoreError as err:
            await self._fail(key, body, generation, None, f"spec.storage: {redact(first_line(err))}")

    async def _fail(
        self, key: Key, body: dict[str, Any], generation: int | None, digest: str | None, message: str
    ) -> NoReturn:
        """Report a problem that leaves no engine knowable (store, model) in status, then retry later."""
        await self._write_no_engines(key, body, generation, digest, error=message)
        raise StoreError(message) from None

    async def _write_no_engines(
        self, key: Key, body: dict[str, Any], generation: int | None, digest: str | None, **why: Any
    ) -> None:
        """Write the status of a ModelEngine that has no engines to show (`why`: see desired_status)."""
        desired = desired_status(
            engines=[],
            skipped=[],
            orphaned=[],
            generation=generation,
            model_digest=digest,
            current=parse_status(body.get("status")),
            **why,
        )
        await self._status.write(key, body, desired, cached=self._cache.modelengines.get(key))

    def report_refused(self, key: Key, body: dict[str, Any], reasons: list[str]) -> None:
        """Objects the API server refused: an Event each, then a retry with backoff (never silent)."""
        if not reasons:
            return
        for reason in reasons:
            self._status.post_event(body, "Warning", "CreateRefused", reason[:1000])
        raise ApiError(422, "; ".join(reasons))
