"""What learning a model's digest costs the operator, against the model's size, in one run.

For a tiny model and a multi-GB one (default 2 GiB, uploaded to moto's S3 server in
64 MiB multipart parts) it measures, each in a fresh process so peak memory is its own:

- ours: what the operator does now (`operator.sources.ModelSources.resolve`): the source's
  identity from one HEAD, then one GET of the small source record (written beforehand, as
  the resolve Job leaves it);
- before: what the operator did before (`store.digest.model_digest`): download the model
  and hash it, with the operator's own credentials.

It prints, per model and path: S3 requests, bytes received, seconds and peak RSS.

    python benchmarks/operator_model_size.py              # 2 GiB
    python benchmarks/operator_model_size.py --gib 0.25   # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

BUCKET = "model-size-bench"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1"}
PART = 64 << 20


def spec(source: str, endpoint: str) -> dict[str, Any]:
    return {
        "apiVersion": "modelengine.io/v1alpha1",
        "kind": "ModelEngine",
        "metadata": {"name": "sized", "namespace": "default"},
        "spec": {
            "model": {"source": source, "format": "onnx"},
            "export": {"inputs": [{"name": "x", "shape": [1, 8]}]},
            "targets": [{"cpu": True}],
            "storage": {"uri": f"s3://{BUCKET}/store", "endpointUrl": endpoint},
        },
    }


def upload(client: Any, key: str, size: int) -> None:
    if size <= PART:
        client.put_object(Bucket=BUCKET, Key=key, Body=b"\0" * size)
        return
    chunk = os.urandom(1 << 20) * (PART >> 20)
    upload_id = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    parts = []
    for number in range(1, size // PART + 1):
        etag = client.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk)[
            "ETag"
        ]
        parts.append({"ETag": etag, "PartNumber": number})
    client.complete_multipart_upload(
        Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
    )


def write_record(doc: dict[str, Any], endpoint: str) -> None:
    from modelengine.api.validation import parse_modelengine
    from modelengine.store.s3 import S3Store, s3_client
    from modelengine.store.sources import make_source_record, source_identity, write_source_record

    me = parse_modelengine(doc, source="benchmark")
    client = s3_client(endpoint_url=endpoint, credentials=CREDENTIALS)
    identity = source_identity(me.spec, client=client)
    assert identity is not None
    record = make_source_record(
        identity,
        model_digest="a" * 64,
        export_digest="b" * 64,
        onnx_file="model.onnx",
        export_record="export.json",
    )
    write_source_record(S3Store(BUCKET, "store", client=client), record)


def worker(path: str, doc: dict[str, Any]) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    from modelengine.api.validation import parse_modelengine

    me = parse_modelengine(doc, source="benchmark")
    counted = {"requests": 0, "bytes": 0}
    seen: list[Any] = []  # the responses themselves: ids of collected ones would be reused

    def count(http_response: Any, model: Any, **_: Any) -> None:
        if any(r is http_response for r in seen):  # a handler on two emitters sees it twice
            return
        seen.append(http_response)
        counted["requests"] += 1
        if model.name != "HeadObject":  # a HEAD's Content-Length is the object's, not its body's
            counted["bytes"] += int(http_response.headers.get("content-length") or 0)

    start = time.perf_counter()
    if path == "ours":
        from modelengine.operator.sources import ModelSources
        from modelengine.operator.storage import StoreProvider

        async def none(namespace: str, name: str) -> dict[str, str] | None:
            return None

        stores = StoreProvider(read_secret=none)

        async def run() -> str | None:
            client = await stores.s3_client_for("default", me.spec.storage)
            client.meta.events.register("after-call.s3", count)
            store = await stores.store_for("default", me.spec.storage)
            sources = ModelSources(api=None, stores=stores, cache=None, builds=None, config=None)  # type: ignore[arg-type]
            resolution = await sources.resolve(("default", "sized"), {}, me, store)
            return resolution.digest

        digest = asyncio.run(run())
        assert digest == "a" * 64, digest
    else:
        import botocore.session

        from modelengine.store.digest import model_digest

        # The old path made its own clients: count every S3 response in this process.
        original = botocore.session.Session.create_client

        def create_client(self: Any, *args: Any, **kwargs: Any) -> Any:
            client = original(self, *args, **kwargs)
            client.meta.events.register("after-call.s3", count)
            return client

        botocore.session.Session.create_client = create_client  # type: ignore[method-assign]
        model_digest(me.spec.model, endpoint_url=me.spec.storage.endpoint_url)
    seconds = time.perf_counter() - start
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec.
    status = Path("/proc/self/status").read_text()
    peak_mb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024
    return {**counted, "seconds": round(seconds, 3), "peak_rss_mb": round(peak_mb, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gib", type=float, default=2.0, help="size of the large model (GiB)")
    parser.add_argument("--worker", choices=["ours", "before"], help=argparse.SUPPRESS)
    parser.add_argument("--doc", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, json.loads(args.doc))))
        return

    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request lines
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {**os.environ, **CREDENTIALS, "PYTHONPATH": str(ROOT / "src")}
    os.environ.update(CREDENTIALS)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    sizes = {"tiny": 4096, "large": int(args.gib * (1 << 30)) // PART * PART or PART}
    print(
        f"{'model':>6} {'size':>10} {'path':>7} {'requests':>9} {'bytes in':>14} {'seconds':>8} {'peak RSS':>9}"
    )
    try:
        for label, size in sizes.items():
            key = f"models/{label}.onnx"
            t = time.perf_counter()
            upload(client, key, size)
            uploaded = time.perf_counter() - t
            doc = spec(f"s3://{BUCKET}/{key}", endpoint)
            write_record(doc, endpoint)
            for path in ("ours", "before"):
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", path, "--doc", json.dumps(doc)],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=True,
                )
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(
                    f"{label:>6} {size / (1 << 20):>8.0f}Mi {path:>7} {r['requests']:>9} {r['bytes']:>14,} "
                    f"{r['seconds']:>8.2f} {r['peak_rss_mb']:>7.0f}MB"
                )
            print(f"{'':>6} (upload of {label}: {uploaded:.1f} s)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
