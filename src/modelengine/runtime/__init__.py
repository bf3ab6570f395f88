"""The runtime sidecar: serve the engine built for this node's accelerator over KServe v2.

Modules, one job each, data flowing one way:

- `accelerator`: what this machine has (NVML product + compute capability, or CPU).
- `selection`: a pure function picking the engine of a release record for an accelerator.
- `loader`: download, sha256 check, backend load, warm-up of one selected engine.
- `batching`: merges concurrent requests along the batch dimension.
- `dataplane`: the one object handlers talk to (models, readiness, inference, hot swap).
- `reload`: watches the release record and swaps engines without failing a request.
- `protocol` / `errors`: the Open Inference Protocol codec and its error mapping.
- `server` / `metrics`: aiohttp apps on the HTTP and metrics ports; `start_server()`.

Nothing here imports torch, export, verify, builder or operator.
"""
