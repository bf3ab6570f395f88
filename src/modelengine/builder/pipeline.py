"""The build pipeline: model → ONNX (once per export digest) → verify → engine per target.

    model digest ─────────┬─ per target: build key → manifest in store? ─ yes → cached (no work)
                          └─ any miss: ONNX in store? ─ no → load, export, verify → upload ONNX,
                                                                 export.json LAST
                             per missing target: timing cache → build → golden samples → validate
                                                 → upload engine, golden samples, manifest LAST
                                                 → timing cache

The model digest comes from the store's source record when there is one (a cluster
source: `s3://` or a path inside the builder image, see `store.sources`), so a build whose
ONNX is already stored neither downloads the model nor exports it; otherwise the model is
fetched and hashed. The same code serves the local CLI (`modelengine build`, all targets) and the builder Job
(`modelengine builder`, one target). A failed check publishes nothing for that target:
no manifest, and the reason is one line. Heavy modules (torch via export/verify, the
backends' libraries) are imported only when a stage needs them, so a run where every
target is cached imports neither torch nor TensorRT.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelengine.api.models import BackendName, ModelEngine, ModelFormat
from modelengine.api.targets import ResolvedTarget, build_key, export_digest
from modelengine.api.tensors import TensorInfo
from modelengine.backends.base import Backend, BuildOptions
from modelengine.backends.registry import get_backend
from modelengine.builder.progress import Reporter, StreamReporter, Timings
from modelengine.errors import BuildFailed, first_line, utc_now
from modelengine.store.base import NotFound, ObjectStore
from modelengine.store.digest import digest_local
from modelengine.store.export_record import EXPORT_RECORD_NAME, BranchRecord, ExportRecord, ExportVerification
from modelengine.store.golden import GOLDEN_BASE_NAME, GoldenSample
from modelengine.store.layout import engine_key, manifest_key, model_key, model_prefix, timing_cache_key
from modelengine.store.manifest import EngineManifest, EngineTarget, ValidationFigures
from modelengine.store.open import fetch
from modelengine.store.publish import publish_engine, read_manifest
from modelengine.store.s3 import s3_client
from modelengine.store.sources import (
    InvalidSourceRecord,
    SourceIdentity,
    SourceRecord,
    is_s3,
    read_source_record,
    source_identity,
)
from modelengine.store.trust import confine

if TYPE_CHECKING:
    from modelengine.backends.golden import GoldenSet


class PipelineError(BuildFailed):
    """A stage failed; the message is the one-line cause shown to the user.

    `exit_code` is the cause's when it has one (a bad model is bad input: 2), else 1.
    """

    def __init__(self, stage: str, message: str, *, exit_code: int | None = None) -> None:
        self.stage = stage
        if exit_code is not None:
            self.exit_code = exit_code
        super().__init__(message)


@dataclass
class TargetOutcome:
    target: ResolvedTarget
    build_key: str
    backend_version: str
    phase: str  # "Ready" | "Failed"
    cached: bool = False
    manifest: EngineManifest | None = None
    reason: str | None = None
    manifest_uri: str | None = None
    engine_uri: str | None = None
    seconds: float = 0.0
    exit_code: int = 0  # of the failure: 2 bad input (the model), 1 a failed build, 3 the store

    def summary(self) -> dict[str, Any]:
        """The builder's termination message (small JSON, < 4 KiB)."""
        m = self.manifest
        return {
            "buildKey": self.build_key,
            "target": self.target.name,
            "phase": self.phase,
            "cached": self.cached,
            "reason": self.reason[:1500] if self.reason else None,
            "manifestUri": self.manifest_uri,
            "uri": self.engine_uri,
            "sha256": m.sha256 if m else None,
            "size": m.size if m else None,
            "backend": self.target.backend.value,
            "backendVersion": self.backend_version,
            "buildSeconds": round(m.build_seconds, 3) if m else None,
        }


BackendFactory = Callable[[BackendName], Backend]


class Pipeline:
    """Builds the engines of one ModelEngine into one store."""

    def __init__(
        self,
        me: ModelEngine,
        *,
        store: ObjectStore,
        reporter: Reporter | None = None,
        work_dir: Path | None = None,
        backend_factory: BackendFactory = get_backend,
        validate_samples: int = 4,
        source_records: bool = True,
    ) -> None:
        self.me = me
        self.spec = me.spec
        self.store = store
        self.reporter: Reporter = reporter or StreamReporter()
        self.timings = Timings()
        self._backend_factory = backend_factory
        self._backends: dict[BackendName, Backend] = {}
        self._own_work_dir = work_dir is None
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="modelengine-build-"))
        self._model_digest: str | None = None
        self._use_records = source_records
        self._identity: tuple[SourceIdentity | None] | None = None
        self._record: tuple[SourceRecord | None] | None = None
        self._fetched = False
        self._source_path: Path | None = None
        self._weights_path: Path | None = None
        self._onnx: tuple[Path, ExportRecord] | None = None
        self._validate_samples = validate_samples

    # -- helpers --------------------------------------------------------------------

    def backend(self, name: BackendName) -> Backend:
        if name not in self._backends:
            self._backends[name] = self._backend_factory(name)
        return self._backends[name]

    def close(self) -> None:
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def endpoint_url(self) -> str | None:
        return self.spec.storage.endpoint_url

    # -- stages ---------------------------------------------------------------------

    def source_identity(self, *, fresh: bool = False) -> SourceIdentity | None:
        """The model's identity (HEAD / ListObjectsV2 only), None for a local source."""
        if self._identity is None or fresh:
            model = self.spec.model
            remote = any(u and is_s3(u) for u in (model.source, model.weights))
            client = (
                s3_client(endpoint_url=self.endpoint_url, region=self.spec.storage.region) if remote else None
            )
            try:
                self._identity = (source_identity(self.spec, client=client),)
            except NotFound as err:
                raise PipelineError("load", f"cannot read model: {err}") from None
        return self._identity[0]

    def source_record(self) -> SourceRecord | None:
        """The store's record of this source, None on a miss (or a record that does not validate)."""
        if self._record is None:
            identity = self.source_identity()
            record = None
            if identity is not None:
                try:
                    record = read_source_record(self.store, identity)
                except InvalidSourceRecord as err:
                    self.reporter.warn(f"{err}; ignoring it")
            self._record = (record,)
        return self._record[0]

    def model_digest(self) -> str:
        """From the source record when there is one, else fetch the model and hash it."""
        if self._model_digest is None:
            record = self.source_record() if self._use_records else None
            if record is not None:
                self._model_digest = record.model_digest
                self.reporter.info(f"model digest {record.model_digest[:12]} from the source record")
            else:
                self._fetch_model()
        assert self._model_digest is not None
        return self._model_digest

    def _fetch_model(self) -> None:
        """Download the model (and weights) and hash what was fetched; a digest already
        known from a source record must match (the record is only a shortcut)."""
        if self._fetched:
            return
        model = self.spec.model
        with self.timings.measure("load", self.reporter, model.source) as t:
            try:
                src_dir = self.work_dir / "model"
                src_dir.mkdir(parents=True, exist_ok=True)
                name = Path(model.source.rstrip("/")).name or "model"
                self._source_path = fetch(model.source, src_dir / name, endpoint_url=self.endpoint_url)
                if model.weights:
                    wname = Path(model.weights).name or "weights"
                    self._weights_path = fetch(model.weights, src_dir / wname, endpoint_url=self.endpoint_url)
                digest = digest_local(model, self._source_path, self._weights_path)
            except NotFound as err:
                raise PipelineError("load", f"cannot read model: {err}") from None
            if self._model_digest is not None and digest != self._model_digest:
                raise PipelineError(
                    "load",
                    f"model {model.source} hashes to {digest[:12]} but its source record says "
                    f"{self._model_digest[:12]}: the record is stale; run the resolve step again",
                )
            self._model_digest = digest
            self._fetched = True
            t.detail = f"model digest {digest[:12]}"

    def onnx_in_store(self) -> bool:
        """Whether the ONNX of this model + export recipe is already stored (export record present)."""
        return self.store.exists(model_key(export_digest(self.model_digest(), self.spec), EXPORT_RECORD_NAME))

    def plan(self, targets: list[ResolvedTarget]) -> list[tuple[ResolvedTarget, str, str]]:
        """(target, build key, backend version) for each target."""
        digest = self.model_digest()
        out = []
        for target in targets:
            version = self.backend(target.backend).version()
            key = build_key(model_digest=digest, spec=self.spec, target=target, backend_version=version)
            out.append((target, key, version))
        return out

    def ensure_onnx(self) -> tuple[Path, ExportRecord]:
        """The exported ONNX for this model + export recipe: from the store, or exported now."""
        if self._onnx is not None:
            return self._onnx
        digest = export_digest(self.model_digest(), self.spec)
        onnx_dir = self.work_dir / "onnx" / digest[:16]
        record_key = model_key(digest, EXPORT_RECORD_NAME)
        try:
            record = ExportRecord.from_json(
                self.store.get_bytes(record_key), where=f"export record {self.store.url_for(record_key)}"
            )
        except NotFound:
            record = None
        if record is not None:
            with self.timings.measure("export", self.reporter) as t:
                for name in record.files:
                    self.store.get_file(model_key(digest, name), confine(onnx_dir, name))
                t.cached = True
                t.detail = f"ONNX {digest[:12]} from the store"
            for w in record.warnings:
                self.reporter.warn(w)
            self._onnx = (onnx_dir / record.files[0], record)
            return self._onnx
        self._onnx = self._export_and_verify(digest, onnx_dir)
        return self._onnx

    def _export_and_verify(self, digest: str, onnx_dir: Path) -> tuple[Path, ExportRecord]:
        from modelengine.export import ExportError, export_onnx, load_model
        from modelengine.verify import VerificationError, verify_export

        self._fetch_model()
        assert self._source_path is not None
        progress = self.reporter.info
        with self.timings.measure("export", self.reporter, f"method {self.spec.export.method.value}") as t:
            try:
                loaded = load_model(
                    self.spec.model, source_path=self._source_path, weights_path=self._weights_path
                )
                result = export_onnx(self.spec, loaded, out_dir=onnx_dir, progress=progress)
            except ExportError as err:
                raise PipelineError("export", str(err), exit_code=err.exit_code) from None
            t.detail = f"ONNX opset {result.opset}, {len(result.branches)} data-dependent branch(es)"
        with self.timings.measure("verify", self.reporter) as t:
            try:
                report = verify_export(self.spec, loaded, result, progress=progress)
            except VerificationError as err:
                raise PipelineError("verify", str(err)) from None
            t.detail = (
                f"{report.samples} samples, max abs error {report.max_abs_error:.2e}"
                if self.spec.model.format is not ModelFormat.ONNX
                else "ONNX model checked in ONNX Runtime"
            )
        # Verification restates the exporter's branch warnings with its verdict; keep its version.
        located = [b.location for b in report.branches]
        export_only = [w for w in result.warnings if not any(loc in w for loc in located)]
        warnings = list(dict.fromkeys([*export_only, *report.warnings]))
        for w in warnings:
            self.reporter.warn(w)
        files = [result.onnx_path.name] + [f.name for f in result.files if f.name != result.onnx_path.name]
        record = ExportRecord(
            export_digest=digest,
            model_digest=self.model_digest(),
            files=files,
            inputs=result.inputs,
            outputs=result.outputs,
            warnings=warnings,
            verification=ExportVerification(
                samples=report.samples,
                max_abs_error=report.max_abs_error,
                max_rel_error=report.max_rel_error,
                branches=[
                    BranchRecord(location=b.location, code=b.code, verdict=b.verdict) for b in report.branches
                ],
            ),
        )
        with self.timings.measure("upload", self.reporter, "ONNX") as t:
            for name in files:
                self.store.put_file(model_key(digest, name), onnx_dir / name)
            self.store.put_bytes(model_key(digest, EXPORT_RECORD_NAME), record.to_json())
            t.detail = f"{self.store.url_for(model_prefix(digest))}"
        return onnx_dir / files[0], record

    def build_target(self, target: ResolvedTarget, key: str, version: str) -> TargetOutcome:
        started = time.perf_counter()
        outcome = TargetOutcome(target=target, build_key=key, backend_version=version, phase="Failed")
        existing = read_manifest(self.store, key)
        if existing is not None:
            self.reporter.info(f"{target.name}: engine {key[:12]} already in the store, nothing to build")
            return self._ready(outcome, existing, cached=True, started=started)
        onnx_path, record = self.ensure_onnx()
        backend = self.backend(target.backend)
        options = self._build_options(record)
        cache_key = timing_cache_key(target.backend.value, version, target.name)
        cache: bytes | None = None
        if target.backend is BackendName.TENSORRT:
            try:
                cache = self.store.get_bytes(cache_key)
            except NotFound:
                cache = None
        out_dir = self.work_dir / "engines" / key
        with self.timings.measure("build", self.reporter, target.name) as t:
            build_start = time.perf_counter()
            try:
                result = backend.build(
                    onnx_path,
                    target=target,
                    options=options,
                    out_dir=out_dir,
                    timing_cache=cache,
                    progress=self.reporter.info,
                )
            except Exception as err:
                raise PipelineError("build", f"{target.name}: {first_line(err)}") from None
            build_seconds = time.perf_counter() - build_start
            size = result.engine_path.stat().st_size
            t.detail = f"{target.name}: {size / 1e6:.2f} MB engine"
        inputs = with_profiles(result.inputs, record.inputs)
        outputs = result.outputs or record.outputs
        with self.timings.measure("validate", self.reporter, target.name) as t:
            golden, golden_path = self._golden(onnx_path, inputs, outputs, out_dir)
            figures = self._validate(
                backend, result.engine_path, onnx_path, inputs, golden.samples if golden_path else []
            )
            t.detail = (
                f"max abs error {figures.max_abs_error:.2e} (tolerance {figures.atol:g})"
                if figures.ran
                else (figures.note or "build-only check")
            ) + f"; {len(golden.samples)} golden sample(s) for acceptance at load"
        manifest = EngineManifest(
            build_key=key,
            model_digest=self.model_digest(),
            onnx_digest=record.export_digest,
            backend=target.backend.value,
            backend_version=version,
            target=EngineTarget(compute_capability=target.compute_capability, product=target.product),
            hardware_compatibility=self.spec.build.hardware_compatibility,
            precision=self.spec.build.precision.value,
            inputs=inputs,
            outputs=outputs,
            engine_file=backend.engine_file,
            sha256="",
            size=0,
            validation=figures,
            golden=None if golden_path is None else golden.manifest_field(inputs),
            build_seconds=round(build_seconds, 3),
            created=utc_now(),
            builder=socket.gethostname(),
        )
        with self.timings.measure("upload", self.reporter, target.name) as t:
            final, ours = publish_engine(
                self.store,
                engine_path=result.engine_path,
                base_name=backend.engine_file,
                manifest=manifest,
                golden_path=golden_path,
            )
            if result.timing_cache:
                self.store.put_bytes(cache_key, result.timing_cache)
            t.detail = "published" if ours else "another builder published this key first; using theirs"
        shutil.rmtree(out_dir, ignore_errors=True)
        return self._ready(outcome, final, cached=not ours, started=started)

    def _ready(
        self, outcome: TargetOutcome, manifest: EngineManifest, *, cached: bool, started: float
    ) -> TargetOutcome:
        outcome.phase = "Ready"
        outcome.cached = cached
        outcome.manifest = manifest
        outcome.manifest_uri = self.store.url_for(manifest_key(manifest.build_key))
        outcome.engine_uri = self.store.url_for(engine_key(manifest.build_key, manifest.engine_file))
        outcome.seconds = time.perf_counter() - started
        return outcome

    def _build_options(self, record: ExportRecord) -> BuildOptions:
        build = self.spec.build
        calibration = None
        if build.calibration:
            calibration = fetch(
                build.calibration, self.work_dir / "calibration.npz", endpoint_url=self.endpoint_url
            )
        return BuildOptions(
            precision=build.precision,
            workspace_mib=build.workspace_mi_b,
            optimization_level=build.optimization_level,
            hardware_compatibility=build.hardware_compatibility,
            calibration=calibration,
            inputs=tuple(record.inputs),
        )

    def _golden(
        self, onnx_path: Path, inputs: list[TensorInfo], outputs: list[TensorInfo], out_dir: Path
    ) -> tuple[GoldenSet, Path | None]:
        """Golden samples from the ONNX reference, written beside the engine (None: none fit)."""
        from modelengine.backends.golden import make_golden_samples

        verify = self.spec.export.verify
        try:
            golden = make_golden_samples(
                onnx_path,
                inputs,
                outputs,
                precision=self.spec.build.precision,
                rtol=verify.rtol,
                atol=verify.atol,
            )
        except Exception as err:
            raise PipelineError("validate", f"golden samples: {first_line(err)}") from None
        if golden.note:
            self.reporter.warn(f"golden samples: {golden.note}")
        if not golden.samples:
            self.reporter.warn(
                "no golden sample fits the size cap: the runtime will load this engine unchecked"
            )
            return golden, None
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / GOLDEN_BASE_NAME
        path.write_bytes(golden.encode(inputs, outputs))
        return golden, path

    def _validate(
        self,
        backend: Backend,
        engine_path: Path,
        onnx_path: Path,
        inputs: list[TensorInfo],
        golden: list[GoldenSample],
    ) -> ValidationFigures:
        from modelengine.backends.validate import validate_engine

        verify = self.spec.export.verify
        try:
            return validate_engine(
                backend,
                engine_path,
                onnx_path,
                inputs,
                precision=self.spec.build.precision,
                samples=self._validate_samples,
                rtol=verify.rtol,
                atol=verify.atol,
                golden=golden,
            )
        except Exception as err:
            raise PipelineError("validate", first_line(err)) from None

    # -- whole runs -----------------------------------------------------------------

    def run(self, targets: list[ResolvedTarget]) -> list[TargetOutcome]:
        """Build every target; a failure of one target does not stop the others,
        but an export or verification failure fails them all (they share the ONNX)."""
        planned = self.plan(targets)
        outcomes: list[TargetOutcome] = []
        shared_failure: PipelineError | None = None
        for target, key, version in planned:
            if shared_failure is not None:
                outcomes.append(TargetOutcome(target, key, version, "Failed", reason=str(shared_failure)))
                continue
            try:
                outcomes.append(self.build_target(target, key, version))
            except PipelineError as err:
                self.reporter.warn(f"{target.name}: {err.stage} failed: {err}")
                outcomes.append(
                    TargetOutcome(target, key, version, "Failed", reason=str(err), exit_code=err.exit_code)
                )
                if err.stage in ("load", "export", "verify"):
                    shared_failure = err
        return outcomes


def with_profiles(built: list[TensorInfo], exported: list[TensorInfo]) -> list[TensorInfo]:
    """The engine's inputs, with the spec's min/opt/max where the backend did not report them."""
    if not built:
        return exported
    by_name = {t.name: t for t in exported}
    out = []
    for t in built:
        ref = by_name.get(t.name)
        if t.min is None and ref is not None:
            t = t.model_copy(update={"min": ref.min, "opt": ref.opt, "max": ref.max})
        out.append(t)
    return out
