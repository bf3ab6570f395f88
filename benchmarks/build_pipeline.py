"""Time the build pipeline per stage, against the bare export + build calls, in one run.

For each example model (CombinedNet, the ResNet-style net) and each backend (onnxruntime,
tensorrt-rtx for compute capability 8.9) it runs `Pipeline` into a fresh file store and
prints the seconds per stage (load, export, verify, build, validate, upload), then the
same build again (the cache-hit path: no export, no build), then the bare baseline: the
plain `torch.onnx.export` call plus the backend's build call on the same model, with none
of the pipeline's checks. The ratio pipeline / bare is the figure the design bounds
(≤ 1.5× without verification's extra work; verification is reported separately).

    python benchmarks/build_pipeline.py            # both models, both backends
    python benchmarks/build_pipeline.py --quick    # CombinedNet, onnxruntime only (smoke)
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from modelengine.api import load_modelengine  # noqa: E402
from modelengine.api.models import BackendName, ModelEngine, Target  # noqa: E402
from modelengine.api.targets import ResolvedTarget, resolve_targets  # noqa: E402
from modelengine.backends.base import BuildOptions  # noqa: E402
from modelengine.backends.registry import get_backend  # noqa: E402
from modelengine.builder.pipeline import Pipeline  # noqa: E402
from modelengine.builder.progress import RecordingReporter  # noqa: E402
from modelengine.store.open import open_store  # noqa: E402

STAGES = ["load", "export", "verify", "build", "validate", "upload"]
MODELS = {
    "combinednet": ROOT / "examples/combinednet/modelengine.yaml",
    "resnet": ROOT / "examples/resnet/modelengine.yaml",
}
TARGETS = {
    BackendName.ONNXRUNTIME: Target(cpu=True),
    BackendName.TENSORRT_RTX: Target(compute_capability="8.9"),
}


def with_target(me: ModelEngine, backend: BackendName, store_uri: str) -> ModelEngine:
    storage = me.spec.storage.model_copy(update={"uri": store_uri, "secret_ref": None})
    spec = me.spec.model_copy(update={"targets": [TARGETS[backend]], "storage": storage})
    return me.model_copy(update={"spec": spec})


def run_pipeline(me: ModelEngine) -> tuple[dict[str, float], float, bool]:
    store = open_store(me.spec.storage.uri)
    targets = resolve_targets(me.spec, []).targets
    start = time.perf_counter()
    with Pipeline(me, store=store, reporter=RecordingReporter()) as pipeline:
        outcomes = pipeline.run(targets)
        stages = {name: pipeline.timings.total(name) for name in STAGES}
    total = time.perf_counter() - start
    ok = all(o.phase == "Ready" for o in outcomes)
    if not ok:
        print(f"  build failed: {[o.reason for o in outcomes]}", file=sys.stderr)
    return stages, total, all(o.cached for o in outcomes)


def bare(me: ModelEngine, backend: BackendName, work: Path) -> float:
    """The calls a user would make by hand: torch.onnx.export, then the backend build."""
    import torch

    model_dir = Path(me.spec.model.source.removeprefix("file://"))
    module_name, _, factory = (me.spec.model.entrypoint or "").partition(":")
    sys.path.insert(0, str(model_dir))
    try:
        module: Any = getattr(importlib.import_module(module_name), factory)().eval()
    finally:
        sys.path.remove(str(model_dir))
    spec_in = me.spec.export.inputs[0]
    _, opt, _ = spec_in.profile()
    start = time.perf_counter()
    onnx_path = work / "bare.onnx"
    with torch.no_grad():
        torch.onnx.export(
            module,
            (torch.rand(*opt),),
            str(onnx_path),
            input_names=[spec_in.name],
            output_names=me.spec.export.outputs,
            dynamic_axes={spec_in.name: {0: "batch"}},
            opset_version=me.spec.export.opset,
            dynamo=False,
        )
    target = ResolvedTarget(backend, None if backend is BackendName.ONNXRUNTIME else "8.9")
    lo, mid, hi = spec_in.profile()
    from modelengine.api.tensors import TensorInfo

    info = TensorInfo(
        name=spec_in.name, dtype=spec_in.dtype.value, shape=spec_in.shape, min=lo, opt=mid, max=hi
    )
    get_backend(backend).build(
        onnx_path, target=target, options=BuildOptions(inputs=(info,)), out_dir=work / "bare"
    )
    return time.perf_counter() - start


def main() -> int:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CombinedNet with onnxruntime only")
    parser.add_argument("--repeat", type=int, default=3, help="measured rounds per row (median reported)")
    args = parser.parse_args()
    models = {"combinednet": MODELS["combinednet"]} if args.quick else MODELS
    backends = (
        [BackendName.ONNXRUNTIME] if args.quick else [BackendName.ONNXRUNTIME, BackendName.TENSORRT_RTX]
    )
    header = ["model", "backend", *STAGES, "total", "cache hit", "bare", "ratio*"]
    rows: list[list[str]] = []
    for model_name, yaml_path in models.items():
        base = load_modelengine(yaml_path)
        for backend in backends:
            runs = []
            # Round 0 warms imports and caches (torch, the exporter, the backend); not reported.
            for _round in range(args.repeat + 1):
                with tempfile.TemporaryDirectory(prefix="me-bench-") as tmp:
                    me = with_target(base, backend, Path(tmp, "store").as_uri())
                    bare_s = bare(me, backend, Path(tmp))
                    stages, total, _ = run_pipeline(me)
                    _, hit_total, cached = run_pipeline(me)
                    runs.append((total, stages, hit_total, cached, bare_s))
            measured = runs[1:]
            # Per column medians over the rounds. The ratio is the median of each round's
            # own ratio: the bare calls and the pipeline of one round run back to back, so
            # they see the same machine load (other jobs share it), which a ratio of two
            # separately taken medians would not.
            stages = {s: statistics.median(r[1][s] for r in measured) for s in STAGES}
            total = statistics.median(r[0] for r in measured)
            hit_total = statistics.median(r[2] for r in measured)
            cached = all(r[3] for r in measured)
            bare_s = statistics.median(r[4] for r in measured)
            # The design's bound compares the pipeline without its extra checks
            # (verification, validation) against the bare calls doing the same work.
            ratio = statistics.median((r[0] - r[1]["verify"] - r[1]["validate"]) / r[4] for r in measured)
            rows.append(
                [
                    model_name,
                    backend.value,
                    *(f"{stages[s]:.2f}" for s in STAGES),
                    f"{total:.2f}",
                    f"{hit_total:.2f}{'' if cached else ' (MISS!)'}",
                    f"{bare_s:.2f}",
                    f"{ratio:.2f}x",
                ]
            )
            print(f"measured {model_name} / {backend.value}", file=sys.stderr)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print(
        "seconds, median of --repeat rounds after a warm-up; ratio* = median over rounds of"
        " (total - verify - validate) / bare export+build of the same round; cache hit = a second identical run"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
