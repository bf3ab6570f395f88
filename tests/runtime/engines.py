"""Real engines for the runtime tests: a small torch MLP, exported to ONNX, built with
ONNX Runtime, published to a store with a manifest, and named in a release record."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelengine.api.models import BackendName, Precision
from modelengine.api.targets import ResolvedTarget
from modelengine.backends.base import BuildOptions
from modelengine.backends.golden import GoldenSet, make_golden_samples
from modelengine.backends.onnxruntime import OnnxRuntimeBackend
from modelengine.store.base import ObjectStore
from modelengine.store.layout import engine_key, manifest_key
from modelengine.store.manifest import (
    EngineManifest,
    EngineTarget,
    ReleaseEngine,
    ReleaseRecord,
    TensorInfo,
)
from modelengine.store.publish import publish_engine, utc_now, write_release

IN_FEATURES = 8
OUT_FEATURES = 4
MAX_BATCH = 64


def export_mlp(path: Path, seed: int) -> Path:
    """A two-layer MLP x[N,8] -> y[N,4] with weights from `seed`, exported with a dynamic batch."""
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(IN_FEATURES, 16), torch.nn.Tanh(), torch.nn.Linear(16, OUT_FEATURES)
    ).eval()
    torch.onnx.export(
        model,
        (torch.zeros(2, IN_FEATURES),),
        str(path),
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        dynamo=False,
    )
    return path


def profile_inputs() -> list[TensorInfo]:
    return [
        TensorInfo(
            name="x",
            dtype="float32",
            shape=[-1, IN_FEATURES],
            min=[1, IN_FEATURES],
            opt=[8, IN_FEATURES],
            max=[MAX_BATCH, IN_FEATURES],
        )
    ]


def outputs() -> list[TensorInfo]:
    return [TensorInfo(name="y", dtype="float32", shape=[-1, OUT_FEATURES])]


@dataclass
class BuiltEngine:
    onnx: Path
    engine: Path

    def reference(self, x: np.ndarray) -> np.ndarray:
        """The model's answer, from ONNX Runtime on the exported ONNX directly."""
        import onnxruntime as ort

        session = ort.InferenceSession(str(self.onnx), providers=["CPUExecutionProvider"])
        return np.asarray(session.run(["y"], {"x": x})[0])


def build_ort(onnx: Path, out_dir: Path) -> BuiltEngine:
    result = OnnxRuntimeBackend().build(
        onnx,
        target=ResolvedTarget(BackendName.ONNXRUNTIME, None),
        options=BuildOptions(),
        out_dir=out_dir,
    )
    return BuiltEngine(onnx=onnx, engine=result.engine_path)


def publish(
    store: ObjectStore,
    engine_path: Path,
    *,
    backend: str = "onnxruntime",
    backend_version: str | None = None,
    compute_capability: str | None = None,
    product: str | None = None,
    hardware_compatibility: str = "none",
    base_name: str = "model.ort.onnx",
    golden_from: Path | None = None,
) -> EngineManifest:
    """Publish an engine file with its manifest under a build key derived from its bytes;
    with `golden_from` (its ONNX), with golden samples as the builder records them."""
    import onnxruntime

    version = backend_version or str(onnxruntime.__version__)
    golden = None if golden_from is None else golden_set(golden_from)
    data = engine_path.read_bytes()
    key = hashlib.sha256(data + f"{backend}{version}{compute_capability}{product}".encode()).hexdigest()[:32]
    manifest = EngineManifest(
        build_key=key,
        model_digest="a" * 64,
        onnx_digest="b" * 64,
        backend=backend,
        backend_version=version,
        target=EngineTarget(compute_capability=compute_capability, product=product),
        hardware_compatibility=hardware_compatibility,
        precision="fp32",
        inputs=profile_inputs(),
        outputs=outputs(),
        engine_file=base_name,
        sha256="",
        size=0,
        build_seconds=0.1,
        created=utc_now(),
        golden=None if golden is None else golden.manifest_field(profile_inputs()),
    )
    with tempfile.TemporaryDirectory() as tmp:
        golden_path = None
        if golden is not None:
            golden_path = Path(tmp) / "golden.npz"
            golden_path.write_bytes(golden.encode(profile_inputs(), outputs()))
        final, _won = publish_engine(
            store, engine_path=engine_path, base_name=base_name, manifest=manifest, golden_path=golden_path
        )
    return final


GOLDEN_RTOL = GOLDEN_ATOL = 1e-5


def golden_set(onnx: Path) -> GoldenSet:
    """Golden samples of the MLP from ONNX Runtime on its ONNX: the builder's own code."""
    return make_golden_samples(
        onnx, profile_inputs(), outputs(), precision=Precision.FP32, rtol=GOLDEN_RTOL, atol=GOLDEN_ATOL
    )


def release_entry(store: ObjectStore, manifest: EngineManifest, target: str | None = None) -> ReleaseEngine:
    cc = manifest.target.compute_capability
    return ReleaseEngine(
        target=target or (f"{manifest.backend}-cc{cc}" if cc else f"{manifest.backend}-cpu"),
        build_key=manifest.build_key,
        backend=manifest.backend,
        backend_version=manifest.backend_version,
        compute_capability=cc,
        product=manifest.target.product,
        hardware_compatibility=manifest.hardware_compatibility,
        uri=store.url_for(engine_key(manifest.build_key, manifest.engine_file)),
        manifest_uri=store.url_for(manifest_key(manifest.build_key)),
        sha256=manifest.sha256,
        size=manifest.size,
    )


def release(
    store: ObjectStore,
    engines: list[ReleaseEngine],
    *,
    namespace: str = "default",
    name: str = "mlp",
    generation: int = 1,
) -> ReleaseRecord:
    record = ReleaseRecord(
        namespace=namespace,
        name=name,
        generation=generation,
        model_digest="a" * 64,
        inputs=profile_inputs(),
        outputs=outputs(),
        engines=engines,
        updated=utc_now(),
    )
    write_release(store, record)
    return record
