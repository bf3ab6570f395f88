"""`modelengine builder`: the entry point of the builder Job — one target, one summary.

`modelengine builder --resolve` is the entry point of the resolve Job (see
`builder/resolve.py`): no target, no build key; it records the source's model digest and
exports its ONNX once, and its summary names the digest and the ONNX key.

Contract with the operator (see docs/operator.md):
  env MODELENGINE_RESOURCE      the ModelEngine as JSON (apiVersion, kind, metadata, spec)
  env MODELENGINE_TARGET        {"backend": ..., "computeCapability": ..., "product": ...}
  env MODELENGINE_BUILD_KEY     the key the operator computed; a different key here means
                                the builder image differs from what the operator was told
                                (usually the backend version), and the build is refused
  env MODELENGINE_BACKEND_VERSION  the backend version the operator planned the key with; a
                                builder whose installed version differs refuses, naming both
  env MODELENGINE_TERMINATION_LOG  where the JSON summary goes (/dev/termination-log)
  store credentials             boto3's usual env vars, from the referenced Secret
Exit 0: published or already cached; 1: the build failed (reason in the summary);
2: bad input. The builder never talks to the Kubernetes API.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from modelengine.api.models import BackendName
from modelengine.api.targets import ResolvedTarget
from modelengine.api.validation import SpecError, parse_modelengine
from modelengine.builder.pipeline import Pipeline, PipelineError, TargetOutcome
from modelengine.builder.progress import StreamReporter
from modelengine.errors import InputError
from modelengine.store.base import StoreError
from modelengine.store.open import open_store

DEFAULT_TERMINATION_LOG = "/dev/termination-log"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "builder",
        help="builder Job entry point: build one target (reads MODELENGINE_* env)",
        description="Build one target of a ModelEngine and write a JSON summary to the termination log.",
    )
    p.add_argument(
        "--resource", type=Path, help="ModelEngine JSON/YAML file (default: $MODELENGINE_RESOURCE)"
    )
    p.add_argument(
        "--resolve",
        action="store_true",
        help="resolve step: record the source's model digest and export its ONNX once (no target)",
    )
    p.add_argument("--target", help="target JSON (default: $MODELENGINE_TARGET)")
    p.add_argument("--build-key", help="expected build key (default: $MODELENGINE_BUILD_KEY)")
    p.add_argument(
        "--backend-version", help="expected backend version (default: $MODELENGINE_BACKEND_VERSION)"
    )
    p.add_argument(
        "--termination-log", type=Path, help="summary path (default: $MODELENGINE_TERMINATION_LOG)"
    )
    p.set_defaults(func=run)


class BuilderInputError(InputError):
    """The Job's target, resource or environment cannot be used; one line."""


def parse_target(raw: str) -> ResolvedTarget:
    try:
        doc = json.loads(raw)
        return ResolvedTarget(
            backend=BackendName(doc["backend"]),
            compute_capability=doc.get("computeCapability"),
            product=doc.get("product"),
        )
    except (ValueError, KeyError, TypeError) as err:
        raise BuilderInputError(f"invalid target {raw[:200]!r}: {err}") from None


def _resource(args: argparse.Namespace) -> dict[str, Any]:
    if args.resource:
        import yaml

        try:
            doc = yaml.safe_load(args.resource.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise BuilderInputError(f"cannot read {args.resource}: {err}") from None
    else:
        raw = os.environ.get("MODELENGINE_RESOURCE")
        if not raw:
            raise BuilderInputError("no ModelEngine given (--resource or MODELENGINE_RESOURCE)")
        try:
            doc = json.loads(raw)
        except ValueError as err:
            raise BuilderInputError(f"MODELENGINE_RESOURCE is not JSON: {err}") from None
    if not isinstance(doc, dict):
        raise BuilderInputError("the ModelEngine resource is not an object")
    doc.pop("status", None)
    meta = doc.get("metadata") or {}
    doc["metadata"] = {"name": meta.get("name", "unnamed"), "namespace": meta.get("namespace", "default")}
    return doc


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    text = json.dumps(summary, separators=(",", ":"))
    try:
        path.write_text(text[:4000])
    except OSError as err:
        print(f"modelengine builder: cannot write termination log {path}: {err.strerror}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    log_path = Path(
        args.termination_log or os.environ.get("MODELENGINE_TERMINATION_LOG", DEFAULT_TERMINATION_LOG)
    )
    if args.resolve:
        return run_resolve(args, log_path)
    raw_target = args.target or os.environ.get("MODELENGINE_TARGET")
    expected_key = args.build_key or os.environ.get("MODELENGINE_BUILD_KEY")
    expected_version = args.backend_version or os.environ.get("MODELENGINE_BACKEND_VERSION")
    try:
        if not raw_target:
            raise BuilderInputError("no target given (--target or MODELENGINE_TARGET)")
        target = parse_target(raw_target)
        me = parse_modelengine(_resource(args), source="ModelEngine")
        storage = me.spec.storage
        store = open_store(storage.uri, endpoint_url=storage.endpoint_url, region=storage.region)
    except (BuilderInputError, SpecError, StoreError) as err:
        summary = {"phase": "Failed", "reason": str(err), "buildKey": expected_key, "cached": False}
        write_summary(log_path, summary)
        raise
    reporter = StreamReporter(sys.stdout)
    reporter.info(f"building {me.metadata.namespace}/{me.metadata.name} for {target.name} into {store.uri}")
    with Pipeline(me, store=store, reporter=reporter) as pipeline:
        try:
            ((_, key, version),) = pipeline.plan([target])
            if expected_version and version != expected_version:
                backend = target.backend.value
                raise PipelineError(
                    "plan",
                    f"backend version mismatch: this builder image has {backend} {version} but the operator "
                    f"planned the build for {backend} {expected_version}; set the operator's --backend-version "
                    f"{backend}={version} (chart: operator.backendVersions) or use a builder image with "
                    f"{backend} {expected_version}",
                )
            if expected_key and key != expected_key:
                raise PipelineError(
                    "plan",
                    f"build key mismatch: this builder computes {key[:12]} ({target.backend.value} {version}) "
                    f"but the operator expected {expected_key[:12]}; the builder image's backend version "
                    "differs from the operator's --backend-version",
                )
            outcome = pipeline.build_target(target, key, version)
        except (PipelineError, StoreError) as err:
            stage = getattr(err, "stage", "store")
            outcome = TargetOutcome(
                target,
                expected_key or "",
                "",
                "Failed",
                reason=f"{stage}: {err}" if stage == "store" else str(err),
            )
    write_summary(log_path, outcome.summary())
    print(json.dumps(outcome.summary()))
    if outcome.phase != "Ready":
        print(f"modelengine builder: error: {outcome.reason}", file=sys.stderr)
        return 1
    return 0


def run_resolve(args: argparse.Namespace, log_path: Path) -> int:
    from modelengine.builder.resolve import ResolveOutcome, resolve_source

    try:
        me = parse_modelengine(_resource(args), source="ModelEngine")
        storage = me.spec.storage
        store = open_store(storage.uri, endpoint_url=storage.endpoint_url, region=storage.region)
    except (BuilderInputError, SpecError, StoreError) as err:
        write_summary(log_path, ResolveOutcome("Failed", reason=str(err)).summary())
        raise
    reporter = StreamReporter(sys.stdout)
    reporter.info(
        f"resolving {me.spec.model.source} of {me.metadata.namespace}/{me.metadata.name} into {store.uri}"
    )
    try:
        outcome = resolve_source(me, store=store, reporter=reporter)
    except (PipelineError, StoreError) as err:
        stage = getattr(err, "stage", "store")
        outcome = ResolveOutcome("Failed", reason=f"{stage}: {err}" if stage == "store" else str(err))
    write_summary(log_path, outcome.summary())
    print(json.dumps(outcome.summary()))
    if outcome.phase != "Ready":
        print(f"modelengine builder: error: {outcome.reason}", file=sys.stderr)
        return 1
    return 0
