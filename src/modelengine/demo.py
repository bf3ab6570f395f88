"""`modelengine demo`: the main job on its embedded default, end to end on this machine.

1. build the example's engines (ONNX Runtime for the CPU, TensorRT-RTX for compute
   capability 8.9) with the local pipeline into a local store — a second run is a cache hit;
2. start the runtime sidecar in-process, serving the release record from that store (no
   GPU here, so it selects the ONNX Runtime engine and says why);
3. send a KServe v2 inference request over HTTP and check the answer against the ONNX
   model run directly;
4. print what happened: the engines' manifests, the selection, the request's result.

It sits beside `cli.py`, above both packages it composes: the builder (which never
talks to the runtime) and the runtime's public `start_server`, used exactly as
`modelengine serve` uses it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from modelengine.api.targets import resolve_targets
from modelengine.api.validation import load_modelengine
from modelengine.builder.command import build_local, format_table
from modelengine.builder.inspect import describe_manifest
from modelengine.builder.progress import StreamReporter
from modelengine.store.open import open_store

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SPEC = REPO / "examples" / "combinednet" / "modelengine.yaml"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="build the example's engines locally, serve them, send a request",
        description="End-to-end demo on this machine: build → store → serve → infer.",
    )
    p.add_argument(
        "-f", "--file", type=Path, default=DEFAULT_SPEC, help="ModelEngine YAML (default: the example)"
    )
    p.add_argument("--store", default=str(REPO / ".demo" / "store"), help="local store directory or URI")
    p.add_argument("--batch", type=int, default=2, help="batch size of the demo request")
    p.set_defaults(func=run)


class DemoError(RuntimeError):
    exit_code = 1


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], float]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
        status = resp.status
    return status, json.loads(raw), (time.perf_counter() - start) * 1000


def _get(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return dict(json.loads(resp.read() or b"{}"))
    except urllib.error.HTTPError as err:  # not-ready answers 503 with a JSON body
        return dict(json.loads(err.read() or b"{}"))


def _get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


async def _serve_and_ask(store_uri: str, namespace: str, name: str, batch: np.ndarray) -> dict[str, Any]:
    from modelengine.runtime.server import ServerConfig, start_server

    config = ServerConfig(
        store_uri=store_uri,
        namespace=namespace,
        name=name,
        host="127.0.0.1",
        http_port=0,
        metrics_port=0,
        cache_dir=None,
    )
    server = await start_server(config)
    try:
        await server.wait_ready(timeout=120)
        ready = await asyncio.to_thread(_get, f"{server.url}/v2/health/ready")
        meta = await asyncio.to_thread(_get, f"{server.url}/v2/models/{name}")
        inp = meta["inputs"][0]
        body = {
            "inputs": [
                {
                    "name": inp["name"],
                    "shape": list(batch.shape),
                    "datatype": inp["datatype"],
                    "data": batch.ravel().tolist(),
                }
            ]
        }
        status, answer, ms = await asyncio.to_thread(_post, f"{server.url}/v2/models/{name}/infer", body)
        metrics_text = await asyncio.to_thread(_get_text, server.metrics_url) if server.metrics_url else ""
        return {
            "url": server.url,
            "ready": ready,
            "meta": meta,
            "status": status,
            "answer": answer,
            "ms": ms,
            "metrics": metrics_text,
        }
    finally:
        await server.stop()


def run(args: argparse.Namespace) -> int:
    me = load_modelengine(args.file)
    store_uri = args.store if "://" in args.store else Path(args.store).resolve().as_uri()
    spec = me.spec.model_copy(
        update={"storage": me.spec.storage.model_copy(update={"uri": store_uri, "secret_ref": None})}
    )
    me = me.model_copy(update={"spec": spec})
    store = open_store(store_uri)
    targets = resolve_targets(me.spec, []).targets
    ns, name = me.metadata.namespace, me.metadata.name
    print(f"== 1. build {ns}/{name} for {', '.join(t.name for t in targets)} into {store_uri}")
    outcomes, release_uri = build_local(me, targets, store, StreamReporter())
    print(format_table(outcomes))
    if release_uri is None:
        failed = "; ".join(f"{o.target.name}: {o.reason}" for o in outcomes if o.phase != "Ready")
        raise DemoError(f"build failed: {failed}")
    print(f"release record: {release_uri}\n")
    for o in outcomes:
        assert o.manifest is not None
        print(f"-- manifest {o.target.name}  ({o.manifest_uri})")
        print(describe_manifest(o.manifest))
        print()

    rng = np.random.default_rng(0)
    shape = [args.batch if d == -1 else d for d in me.spec.export.inputs[0].shape]
    batch = rng.random(shape, dtype=np.float32)
    print(f"== 2. serve release {ns}/{name} with the runtime sidecar, send one request (batch {args.batch})")
    result = asyncio.run(_serve_and_ask(store_uri, ns, name, batch))
    engine = result["ready"].get("engine", {})
    print(
        f"runtime at {result['url']}: ready, serving {engine.get('target')} "
        f"({engine.get('backend')} {engine.get('backend_version')})"
    )
    if result["ready"].get("selection"):
        print(f"selection: {result['ready']['selection']}")
    out = result["answer"]["outputs"][0]
    got = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])

    # Reference: the exported ONNX run directly, outside the server.
    import onnxruntime as ort

    cpu = next(o for o in outcomes if o.target.compute_capability is None)
    assert cpu.manifest is not None
    onnx_dir = Path(store_uri.removeprefix("file://")) / "models" / cpu.manifest.onnx_digest
    session = ort.InferenceSession(str(onnx_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: batch})[0]
    diff = float(np.max(np.abs(got - want)))
    print(
        f"POST /v2/models/{name}/infer → HTTP {result['status']} in {result['ms']:.1f} ms: "
        f"output {out['name']} {out['datatype']} {out['shape']}, first values {', '.join(f'{v:.4f}' for v in got.ravel()[:4])}"
    )
    print(f"max |server - ONNX reference| = {diff:.2e}")
    requests = [
        line
        for line in result["metrics"].splitlines()
        if line.startswith("modelengine_runtime_requests_total") and not line.endswith(" 0.0")
    ]
    if requests:
        print("metrics: " + "; ".join(requests))
    if diff > 1e-3:
        raise DemoError(f"the served answer differs from the ONNX reference by {diff:.2e}")
    print("\n== done: built, stored, served and answered; run it again to see the cache hit")
    return 0
