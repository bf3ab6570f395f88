"""The resolve step: learn a source's model digest once, export its ONNX once, record both.

Run as a short CPU Job (`modelengine builder --resolve`) with the ModelEngine's Secret
through `envFrom`, when the operator finds no source record for a source's identity:

    identity (HEAD / list) → record present and ONNX stored? ─ yes → nothing to do
      → no: download the source (file or folder prefix), hash it → ONNX of that digest
        stored? ─ no → load, export, verify, upload ONNX + export record
      → identity again (unchanged while we worked, else fail: the bytes we hashed may not
        be the ones the identity names) → write the source record LAST

Per-target builders then read the record for the digest and reuse the stored ONNX: the
model is downloaded and exported once per source, not once per target, and the operator
never touches model bytes. The summary (termination message) is small JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelengine.api.models import ModelEngine
from modelengine.api.targets import export_digest
from modelengine.builder.pipeline import Pipeline, PipelineError
from modelengine.builder.progress import Reporter
from modelengine.store.base import ObjectStore
from modelengine.store.export_record import EXPORT_RECORD_NAME, ExportRecord
from modelengine.store.layout import model_key, source_record_key
from modelengine.store.sources import make_source_record, write_source_record


@dataclass
class ResolveOutcome:
    phase: str  # "Ready" | "Failed"
    cached: bool = False
    model_digest: str | None = None
    export_digest: str | None = None
    onnx_key: str | None = None
    onnx_uri: str | None = None
    record_uri: str | None = None
    exported: bool = False
    reason: str | None = None

    def summary(self) -> dict[str, Any]:
        """The resolve Job's termination message (small JSON, < 4 KiB)."""
        return {
            "step": "resolve",
            "phase": self.phase,
            "cached": self.cached,
            "modelDigest": self.model_digest,
            "exportDigest": self.export_digest,
            "onnxKey": self.onnx_key,
            "onnxUri": self.onnx_uri,
            "recordUri": self.record_uri,
            "exported": self.exported,
            "reason": self.reason[:1500] if self.reason else None,
        }


def resolve_source(
    me: ModelEngine, *, store: ObjectStore, reporter: Reporter, pipeline: Pipeline | None = None
) -> ResolveOutcome:
    """Resolve the ModelEngine's source into a source record; raises PipelineError."""
    own = pipeline is None
    p = pipeline or Pipeline(me, store=store, reporter=reporter)
    try:
        return _resolve(p, store, reporter)
    finally:
        if own:
            p.close()


def _resolve(p: Pipeline, store: ObjectStore, reporter: Reporter) -> ResolveOutcome:
    identity = p.source_identity()
    if identity is None:
        raise PipelineError(
            "load",
            f"{p.spec.model.source}: a cluster source is s3://bucket/key, s3://bucket/prefix/ or "
            "file:///abs/path with spec.build.image (upload a local model with `modelengine push`)",
        )
    record = p.source_record()
    if record is not None and store.exists(record.onnx_key) and store.exists(record.export_record_key):
        reporter.info(
            f"source record {identity.key[:12]} found: digest {record.model_digest[:12]}, ONNX stored"
        )
        return _outcome(
            store, record.model_digest, record.export_digest, record.onnx_key, identity.key, cached=True
        )

    digest = p.model_digest()
    onnx_digest = export_digest(digest, p.spec)
    exported = not p.onnx_in_store()
    if exported:
        _, export = p.ensure_onnx()
    else:
        reporter.info(f"ONNX {onnx_digest[:12]} already in the store, not exporting again")
        export = ExportRecord.from_json(store.get_bytes(model_key(onnx_digest, EXPORT_RECORD_NAME)))
    if p.source_identity(fresh=True) != identity:
        raise PipelineError(
            "load", f"{p.spec.model.source} changed while it was being resolved; run the resolve step again"
        )
    record = make_source_record(
        identity,
        model_digest=digest,
        export_digest=onnx_digest,
        onnx_file=export.files[0],
        export_record=EXPORT_RECORD_NAME,
    )
    reporter.info(f"source record written: {write_source_record(store, record)}")
    outcome = _outcome(store, digest, onnx_digest, record.onnx_key, identity.key, cached=False)
    outcome.exported = exported
    return outcome


def _outcome(
    store: ObjectStore, digest: str, onnx_digest: str, onnx_key: str, identity: str, *, cached: bool
) -> ResolveOutcome:
    return ResolveOutcome(
        phase="Ready",
        cached=cached,
        model_digest=digest,
        export_digest=onnx_digest,
        onnx_key=onnx_key,
        onnx_uri=store.url_for(onnx_key),
        record_uri=store.url_for(source_record_key(identity)),
    )
