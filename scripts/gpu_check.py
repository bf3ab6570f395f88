"""Run on a machine with an NVIDIA GPU: what the runtime sees and selects there.

    python scripts/gpu_check.py --store .demo/store     # after `modelengine demo`

Prints the accelerator NVML reports, the engine the runtime selects from the demo's
release record (and why the others were refused), serves it and sends one request, and
times the PyTorch model on that GPU as a baseline. Used on the lent H100 (compute
capability 9.0, which TensorRT-RTX cannot target): the expected selection is the ONNX
Runtime CPU fallback, with the TRT-RTX engine refused for a reason that names the GPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from modelengine.api.models import BackendName  # noqa: E402
from modelengine.api.versions import installed_version  # noqa: E402
from modelengine.runtime import accelerator  # noqa: E402
from modelengine.runtime.selection import candidates, select_engine  # noqa: E402
from modelengine.runtime.server import ServerConfig, start_server  # noqa: E402
from modelengine.store.open import open_store  # noqa: E402
from modelengine.store.publish import read_release  # noqa: E402


def post(url: str, body: dict[str, object]) -> dict[str, object]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return dict(json.loads(resp.read()))


async def serve_once(store_uri: str) -> None:
    server = await start_server(
        ServerConfig(
            store_uri=store_uri,
            namespace="default",
            name="combinednet",
            host="127.0.0.1",
            http_port=0,
            metrics_port=None,
        )
    )
    try:
        await server.wait_ready(120)
        print("ready detail:", json.dumps(server.ready_detail()))
        x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
        body = {
            "inputs": [
                {"name": "input", "shape": [2, 3, 32, 32], "datatype": "FP32", "data": x.ravel().tolist()}
            ]
        }
        answer = await asyncio.to_thread(post, f"{server.url}/v2/models/combinednet/infer", body)
        out = answer["outputs"][0]  # type: ignore[index]
        print("infer:", out["name"], out["shape"])  # type: ignore[index]
    finally:
        await server.stop()


def torch_baseline() -> None:
    import torch

    sys.path.insert(0, str(ROOT / "examples" / "combinednet"))
    import combinednet

    model = combinednet.plain().eval().cuda()
    for batch in (1, 16):
        x = torch.rand(batch, 3, 32, 32, device="cuda")
        with torch.no_grad():
            for _ in range(20):
                model(x)
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(200):
                model(x)
            torch.cuda.synchronize()
        print(
            f"torch eager on {torch.cuda.get_device_name()}: batch {batch}: {(time.perf_counter() - start) / 200 * 1e3:.3f} ms"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=str(ROOT / ".demo" / "store"))
    args = parser.parse_args()
    accel = accelerator.detect()
    print("accelerator:", accel.describe())
    store_uri = Path(args.store).resolve().as_uri()
    record = read_release(open_store(store_uri), "default", "combinednet")
    if record is None:
        print("no release record: run `modelengine demo` first")
        return 1
    installed = {b.value: v for b in BackendName if (v := installed_version(b))}
    for why, engine in candidates(accel, record):
        print(f"candidate: {engine.target}: {why}")
    selection = select_engine(accel, record, installed)
    print("selected:", selection.reason)
    for line in selection.skipped:
        print("refused:", line)
    asyncio.run(serve_once(store_uri))
    torch_baseline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
