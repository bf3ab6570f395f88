"""The pipeline end to end on real parts: real export, real ORT and TRT-RTX builds, real stores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelengine.api import load_modelengine
from modelengine.api.models import BackendName, ModelEngine, Target
from modelengine.api.targets import ResolvedTarget, resolve_targets
from modelengine.backends.base import Backend
from modelengine.backends.registry import get_backend
from modelengine.builder.pipeline import Pipeline
from modelengine.builder.progress import RecordingReporter
from modelengine.store.file import FileStore
from modelengine.store.golden import read_golden
from modelengine.store.layout import manifest_key
from modelengine.store.open import open_store
from modelengine.store.publish import read_manifest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples/combinednet/modelengine.yaml"
SIGNED = ROOT / "examples/combinednet/modelengine-signed.yaml"


def example(store_uri: str, targets: list[Target], path: Path = EXAMPLE, **storage: Any) -> ModelEngine:
    me = load_modelengine(path)
    st = me.spec.storage.model_copy(update={"uri": store_uri, "secret_ref": None, **storage})
    spec = me.spec.model_copy(update={"targets": targets, "storage": st})
    return me.model_copy(update={"spec": spec})


class CountingBackends:
    """Real backends, counting build calls."""

    def __init__(self) -> None:
        self.builds = 0

    def __call__(self, name: BackendName) -> Backend:
        backend = get_backend(name)
        real_build = backend.build
        counter = self

        def build(*args: Any, **kwargs: Any) -> Any:
            counter.builds += 1
            return real_build(*args, **kwargs)

        backend.build = build  # type: ignore[method-assign]
        return backend


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One real build of the example for the CPU and for compute capability 8.9."""
    store_dir = tmp_path_factory.mktemp("store")
    me = example(store_dir.as_uri(), [Target(cpu=True), Target(compute_capability="8.9")])
    targets = resolve_targets(me.spec, []).targets
    backends = CountingBackends()
    reporter = RecordingReporter()
    with Pipeline(me, store=open_store(store_dir.as_uri()), reporter=reporter, backend_factory=backends) as p:
        outcomes = p.run(targets)
        stages = [s.name for s in p.timings.stages if not s.cached]
    return {
        "me": me,
        "store": store_dir,
        "outcomes": outcomes,
        "builds": backends.builds,
        "stages": stages,
        "reporter": reporter,
    }


def test_builds_cpu_and_rtx_engines_with_manifests(built: dict[str, Any]) -> None:
    outcomes = built["outcomes"]
    assert [o.phase for o in outcomes] == ["Ready", "Ready"], [o.reason for o in outcomes]
    assert built["builds"] == 2
    assert built["stages"].count("export") == 1  # one ONNX for every target
    store = open_store(built["store"].as_uri())
    for o in outcomes:
        m = read_manifest(store, o.build_key)
        assert m is not None and m.sha256 == o.manifest.sha256
        assert m.size > 1000
        assert m.inputs[0].min == [1, 3, 32, 32] and m.inputs[0].max == [16, 3, 32, 32]
    cpu = next(o for o in outcomes if o.target.backend is BackendName.ONNXRUNTIME).manifest
    rtx = next(o for o in outcomes if o.target.backend is BackendName.TENSORRT_RTX).manifest
    assert cpu.validation is not None and cpu.validation.ran and cpu.validation.passed
    assert rtx.validation is not None and not rtx.validation.ran  # cannot execute without a GPU
    assert rtx.target.compute_capability == "8.9"


def test_second_identical_build_does_no_work(built: dict[str, Any]) -> None:
    me: ModelEngine = built["me"]
    backends = CountingBackends()
    with Pipeline(
        me, store=open_store(built["store"].as_uri()), reporter=RecordingReporter(), backend_factory=backends
    ) as p:
        outcomes = p.run(resolve_targets(me.spec, []).targets)
        stages = {s.name for s in p.timings.stages}
    assert all(o.phase == "Ready" and o.cached for o in outcomes)
    assert backends.builds == 0
    assert stages == {"load"}  # no export, verify, build, validate or upload
    assert [o.manifest for o in outcomes] == [o.manifest for o in built["outcomes"]]


def test_new_target_reuses_the_stored_onnx(built: dict[str, Any], tmp_path: Path) -> None:
    me = example(built["store"].as_uri(), [Target(compute_capability="8.6")])
    with Pipeline(me, store=open_store(built["store"].as_uri()), reporter=RecordingReporter()) as p:
        (outcome,) = p.run([ResolvedTarget(BackendName.TENSORRT_RTX, "8.6")])
        export = next(s for s in p.timings.stages if s.name == "export")
    assert outcome.phase == "Ready" and not outcome.cached
    assert export.cached  # the ONNX came from the store, not from a new export
    assert outcome.build_key not in {o.build_key for o in built["outcomes"]}


def test_export_record_is_snake_case_and_an_older_camel_case_one_still_serves(
    built: dict[str, Any], tmp_path: Path
) -> None:
    (record_path,) = Path(built["store"]).glob("models/*/export.json")
    doc = json.loads(record_path.read_text())
    assert {"export_digest", "model_digest", "files", "verification"} <= set(doc)
    assert "max_abs_error" in doc["verification"]
    # A store written by an older builder holds the camelCase spelling: no export again.
    shutil.copytree(built["store"], tmp_path / "store")
    old = {"exportDigest": doc.pop("export_digest"), "modelDigest": doc.pop("model_digest"), **doc}
    verification = old["verification"]
    verification["maxAbsError"] = verification.pop("max_abs_error")
    verification["maxRelError"] = verification.pop("max_rel_error")
    (tmp_path / "store" / record_path.relative_to(built["store"])).write_text(json.dumps(old))
    store_uri = (tmp_path / "store").as_uri()
    me = example(store_uri, [Target(compute_capability="7.5")])
    with Pipeline(me, store=open_store(store_uri), reporter=RecordingReporter()) as p:
        (outcome,) = p.run([ResolvedTarget(BackendName.TENSORRT_RTX, "7.5")])
        export = next(s for s in p.timings.stages if s.name == "export")
    assert outcome.phase == "Ready", outcome.reason
    assert export.cached and outcome.manifest is not None
    assert outcome.manifest.onnx_digest == old["exportDigest"]


def test_cpu_engine_honours_the_batch_profile(built: dict[str, Any]) -> None:
    from modelengine.backends.base import InferenceInputError

    outcome = next(o for o in built["outcomes"] if o.target.backend is BackendName.ONNXRUNTIME)
    store = open_store(built["store"].as_uri())
    m = outcome.manifest
    path = Path(built["store"]) / "engines" / m.build_key / m.engine_file
    engine = get_backend(BackendName.ONNXRUNTIME).load(path, inputs=m.inputs, outputs=m.outputs)
    for batch in (1, 7, 16):
        out = engine.infer({"input": np.random.rand(batch, 3, 32, 32).astype(np.float32)})
        assert next(iter(out.values())).shape[0] == batch
    with pytest.raises(InferenceInputError, match="outside the engine's profile"):
        engine.infer({"input": np.random.rand(17, 3, 32, 32).astype(np.float32)})
    assert store.exists(manifest_key(m.build_key))


def test_frozen_branch_fails_and_publishes_nothing(tmp_path: Path) -> None:
    if not SIGNED.exists():
        pytest.skip("signed-gate example missing")
    me = example(tmp_path.as_uri(), [Target(cpu=True)], path=SIGNED)
    with Pipeline(me, store=open_store(tmp_path.as_uri()), reporter=RecordingReporter()) as p:
        (outcome,) = p.run(resolve_targets(me.spec, []).targets)
    assert outcome.phase == "Failed"
    assert "control flow frozen by tracing" in (outcome.reason or "")
    assert not list(open_store(tmp_path.as_uri()).list("engines/"))


def test_summary_is_small_json(built: dict[str, Any]) -> None:
    for o in built["outcomes"]:
        text = json.dumps(o.summary())
        assert len(text) < 4096
        assert json.loads(text)["phase"] == "Ready"


def test_every_engine_carries_golden_samples_of_the_onnx_reference(built: dict[str, Any]) -> None:
    """CPU and TRT-RTX alike (the RTX engine cannot run here: its samples are its only check)."""
    import onnxruntime as ort

    store = open_store(built["store"].as_uri())
    for o in built["outcomes"]:
        m = read_manifest(store, o.build_key)
        assert m is not None and m.golden is not None and m.validation is not None
        assert [(s.label, s.shapes) for s in m.golden.samples] == [
            ("min", [[1, 3, 32, 32]]),
            ("opt", [[4, 3, 32, 32]]),
            ("max", [[16, 3, 32, 32]]),
        ]
        assert (m.golden.rtol, m.golden.atol) == (m.validation.rtol, m.validation.atol)
        samples = read_golden(store, m.build_key, m.golden, inputs=m.inputs, outputs=m.outputs)
        onnx = Path(built["store"]) / "models" / m.onnx_digest / "model.onnx"
        session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
        for sample in samples:
            (want,) = session.run(None, sample.inputs)
            (got,) = sample.outputs.values()
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


class RecordingStore(FileStore):
    """A real file store that remembers the order of its writes."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.writes: list[str] = []

    def put_bytes(self, key: str, data: bytes) -> None:
        self.writes.append(key)
        super().put_bytes(key, data)

    def put_file(self, key: str, src: Path) -> None:
        self.writes.append(key)
        super().put_file(key, src)


def test_golden_samples_are_published_before_the_manifest(built: dict[str, Any]) -> None:
    me = example(built["store"].as_uri(), [Target(cpu=True)])
    store = RecordingStore(Path(built["store"]))
    with Pipeline(me, store=store, reporter=RecordingReporter()) as p:
        (outcome,) = p.run([ResolvedTarget(BackendName.TENSORRT_RTX, "7.5")])
    assert outcome.phase == "Ready" and not outcome.cached, outcome.reason
    m = outcome.manifest
    assert m is not None and m.golden is not None
    prefix = f"engines/{m.build_key}/"
    ours = [k.removeprefix(prefix) for k in store.writes if k.startswith(prefix)]
    assert ours == [m.engine_file, m.golden.file, "manifest.json"]
    assert m.golden.file == f"golden.{m.golden.sha256[:12]}.npz"
