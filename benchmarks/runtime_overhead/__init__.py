"""Runtime overhead: a direct engine call vs the same inference through the HTTP server,
and throughput with dynamic batching off vs on, side by side in one run.

For each model (the seed's CombinedNet on 3x32x32 from examples/, and a ResNet-style net
on 3x64x64 defined here) the script exports ONNX with a dynamic batch axis, builds the
ONNX Runtime engine, writes its manifest, and then measures:

- latency (batch 1, sequential): `Engine.infer` in this process (the baseline), then the
  same input through `modelengine serve` (a separate process, as in a pod) over one
  keep-alive connection, with a JSON body and with the binary-data extension, and a bare
  aiohttp handler answering the same bytes (the floor of HTTP itself). The client is a
  minimal keep-alive HTTP/1.1 client on a raw socket (pre-built request, reads the status,
  Content-Length and the body, decodes the tensor): `http.client` spent ~0.2 ms per
  request of its own parsing headers, which is client cost, not server overhead;
- throughput (requests/s, batch 1 each) at 1, 8 and 64 concurrent clients (aiohttp,
  binary), once with `--no-batching` and once with dynamic batching, with the server's
  batch-size histogram over the 64-client phase (how full the batches it formed were);
- KServe v2 gRPC throughput and client p50/p99 at 1, 8 and 64 clients (batch-1
  `ModelInfer` with raw contents, one channel per client), with dynamic batching; with
  `--triton-python`, Triton's gRPC endpoint on the same engine file takes turns with ours
  at each level. Target: >= 1.5x Triton's gRPC throughput at 64 clients, lower p99.

Targets (docs/runtime.md): p50 HTTP overhead (binary) <= 0.3 ms over the direct call;
>= 3x throughput with batching at 64 clients. Overhead is reported raw (HTTP p50 minus
direct p50, what the target is checked against) and with the bare-HTTP floor subtracted
as well (what the server adds beyond an empty aiohttp handler).

    python -m benchmarks.runtime_overhead                    # all models (~2 minutes on 2 cores)
    python -m benchmarks.runtime_overhead --quick            # smoke run (CombinedNet, short)
    python -m benchmarks.runtime_overhead --plot docs/runtime-throughput.png --json out.json
    python -m benchmarks.runtime_overhead --grpc-only --triton-python build/triton-venv/bin/python

(from the repository root). The package's modules, one job each: `models` (the models,
exported and built into an ONNX Runtime engine with its manifest), `servers` (`modelengine
serve`, a bare aiohttp handler and Triton, each in its own process), `client` (request
bodies, the keep-alive socket client, latency and throughput loops), `grpc_client` (the gRPC
load), `report` (the figures,
the table, the targets, the plot) and `run` (the command line and the order of the phases).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Runnable from a checkout without installing the project.
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

CONCURRENCY = (1, 8, 64)
MAX_BATCH = 64
