"""The models measured, and each one exported and built into an ONNX Runtime engine.

CombinedNet is the seed's model from examples/; the ResNet-style net and the wide MLP are
defined here. `build_engine` exports ONNX with a dynamic batch axis, builds the ORT engine
the way `modelengine serve` loads it, and writes the manifest the server is started with.
"""

from __future__ import annotations

import hashlib
import importlib.util
import warnings
from pathlib import Path
from typing import Any

from modelengine.api.models import BackendName
from modelengine.api.targets import ResolvedTarget
from modelengine.api.tensors import TensorInfo
from modelengine.backends.base import BuildOptions, Engine
from modelengine.errors import utc_now
from modelengine.runtime.ort_serving import ServingOnnxRuntimeBackend
from modelengine.store.manifest import EngineManifest, EngineTarget
from modelengine.store.open import sha256_file

from . import MAX_BATCH, ROOT
from .servers import ort_threads


def combinednet() -> Any:
    spec = importlib.util.spec_from_file_location("combinednet", ROOT / "examples/combinednet/combinednet.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.plain()


def resnet_style() -> Any:
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.skip = (
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                if stride != 1 or cin != cout
                else nn.Identity()
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.b1(self.c1(x)))
            return torch.relu(self.b2(self.c2(y)) + self.skip(x))

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, 2, 1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        Block(32, 32, 1),
        Block(32, 64, 2),
        Block(64, 128, 2),
        Block(128, 128, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, 10),
    ).eval()


def wide_mlp() -> Any:
    """Weight-heavy (10M parameters): batch 1 is a memory-bound matrix-vector product per
    layer, batch 64 reuses each weight 64 times. The kind of model CPU batching pays for."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(3 * 32 * 32, 2048),
        nn.ReLU(),
        nn.Linear(2048, 2048),
        nn.ReLU(),
        nn.Linear(2048, 10),
    ).eval()


MODELS: dict[str, tuple[Any, tuple[int, ...]]] = {
    "combinednet": (combinednet, (3, 32, 32)),
    "resnet-style": (resnet_style, (3, 64, 64)),
    "wide-mlp": (wide_mlp, (3, 32, 32)),
}


def build_engine(name: str, work: Path) -> tuple[Path, Engine, tuple[int, ...]]:
    """Export + ORT build + manifest.json; returns (manifest path, loaded engine, sample shape)."""
    import torch

    factory, sample = MODELS[name]
    model = factory()
    onnx = work / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, *sample),),
            str(onnx),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            dynamo=False,
        )
    backend = ServingOnnxRuntimeBackend(intra_op_threads=ort_threads())
    out = work / name
    result = backend.build(
        onnx, target=ResolvedTarget(BackendName.ONNXRUNTIME, None), options=BuildOptions(), out_dir=out
    )
    inputs = [
        TensorInfo(
            name="input",
            dtype="float32",
            shape=[-1, *sample],
            min=[1, *sample],
            opt=[1, *sample],
            max=[MAX_BATCH, *sample],
        )
    ]
    outputs = [TensorInfo(name=o.name, dtype=o.dtype, shape=o.shape) for o in result.outputs]
    manifest = EngineManifest(
        # Real digests: the server reads the manifest as an untrusted store document.
        build_key=hashlib.sha256(f"bench-{name}".encode()).hexdigest()[:32],
        model_digest=sha256_file(onnx),
        onnx_digest=sha256_file(onnx),
        backend=backend.name.value,
        backend_version=backend.version(),
        target=EngineTarget(),
        precision="fp32",
        inputs=inputs,
        outputs=outputs,
        engine_file=result.engine_path.name,
        sha256=sha256_file(result.engine_path),
        size=result.engine_path.stat().st_size,
        build_seconds=0.0,
        created=utc_now(),
    )
    path = out / "manifest.json"
    path.write_text(manifest.model_dump_json(indent=2))
    engine = backend.load(result.engine_path, inputs=inputs, outputs=outputs)
    return path, engine, sample
