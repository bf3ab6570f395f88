"""`modelengine inspect URI`: show a manifest (engine), a release record, or an export record."""

from __future__ import annotations

import argparse
import json
from typing import Any

from modelengine.errors import InputError
from modelengine.store.base import StoreError
from modelengine.store.manifest import EngineManifest, ReleaseRecord
from modelengine.store.open import split_object_uri


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="show a manifest or release record from a store",
        description="URI of a manifest.json, an engines/<key>/ folder or a releases/<ns>/<name>.json.",
    )
    p.add_argument("uri", help="e.g. file:///tmp/store/engines/<key>/manifest.json or s3://bucket/...")
    p.add_argument("--s3-endpoint", help="S3 endpoint URL")
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    p.set_defaults(func=run)


class InspectError(InputError):
    """The URI names nothing readable, or no JSON document."""


def run(args: argparse.Namespace) -> int:
    uri: str = args.uri
    if uri.rstrip("/").split("/")[-2:-1] == ["engines"] or uri.endswith("/"):
        uri = uri.rstrip("/") + "/manifest.json"
    store, key = split_object_uri(uri, endpoint_url=args.s3_endpoint)
    try:
        raw = store.get_bytes(key)
    except StoreError as err:
        raise InspectError(str(err)) from None
    try:
        doc = json.loads(raw)
    except ValueError:
        raise InspectError(f"{uri} is not JSON") from None
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    if "buildKey" in doc or "build_key" in doc:
        print(describe_manifest(EngineManifest.model_validate(doc)))
    elif "engines" in doc:
        print(describe_release(ReleaseRecord.model_validate(doc)))
    else:
        print(json.dumps(doc, indent=2))
    return 0


def describe_manifest(m: EngineManifest) -> str:
    target = (m.target.compute_capability and f"compute capability {m.target.compute_capability}") or "cpu"
    if m.target.product:
        target += f" ({m.target.product})"
    lines = [
        f"engine      {m.engine_file}  {m.size / 1e6:.2f} MB  sha256 {m.sha256[:16]}…",
        f"build key   {m.build_key}",
        f"backend     {m.backend} {m.backend_version}  precision {m.precision}  target {target}",
        f"model       digest {m.model_digest[:16]}…  onnx {m.onnx_digest[:16]}…",
    ]
    for t in m.inputs:
        prof = f" min {t.min} opt {t.opt} max {t.max}" if t.min and t.min != t.max else ""
        lines.append(f"input       {t.name} {t.dtype} {t.shape}{prof}")
    for t in m.outputs:
        lines.append(f"output      {t.name} {t.dtype} {t.shape}")
    if m.validation:
        v = m.validation
        if v.ran:
            lines.append(
                f"validation  {v.samples} samples, max abs {v.max_abs_error:.2e}, max rel {v.max_rel_error:.2e}"
                f" (rtol {v.rtol:g}, atol {v.atol:g}) {'passed' if v.passed else 'FAILED'}"
            )
        else:
            lines.append(f"validation  not run here: {v.note or 'backend cannot execute on this machine'}")
    if m.golden:
        g = m.golden
        points = ", ".join(f"{s.label} {s.shapes}" for s in g.samples)
        lines.append(
            f"acceptance  {len(g.samples)} golden sample(s): {points} (rtol {g.rtol:g}, atol {g.atol:g})  {g.file}"
        )
        if g.note:
            lines.append(f"            {g.note}")
    else:
        lines.append("acceptance  no golden samples: the runtime serves this engine without the check")
    lines.append(f"built       {m.created} in {m.build_seconds:.2f}s by {m.builder or '?'}")
    return "\n".join(lines)


def describe_release(r: ReleaseRecord) -> str:
    lines = [f"release     {r.namespace}/{r.name}  generation {r.generation}  updated {r.updated}"]
    for e in r.engines:
        lines.append(f"  {e.target:<28} {e.backend} {e.backend_version}  {e.size / 1e6:.2f} MB  {e.uri}")
    return "\n".join(lines)
