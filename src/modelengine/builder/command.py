"""`modelengine build -f FILE`: the whole pipeline locally, no cluster, the same YAML.

Targets come from the spec (or `--target`, which replaces them); `auto` targets expand to
the GPU kinds given with `--gpu-kind PRODUCT=CC` (there is no cluster to ask). When every
target is Ready the release record is written, so `modelengine serve` can serve it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from modelengine.api.models import BackendName, ModelEngine, Target
from modelengine.api.targets import GpuKind, ResolvedTarget, resolve_targets
from modelengine.api.validation import SpecError, load_modelengine, semantic_problems
from modelengine.builder.pipeline import Pipeline, PipelineError, TargetOutcome
from modelengine.builder.progress import Reporter, StreamReporter
from modelengine.errors import InputError
from modelengine.store.base import ObjectStore, StoreError
from modelengine.store.open import open_store
from modelengine.store.publish import write_release
from modelengine.store.release import make_release


class BuildInputError(InputError):
    """A spec, flag or store the local build cannot start from; one line."""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "build",
        help="build a ModelEngine's engines locally into a store",
        description="Run the whole pipeline (export, verify, build, validate, publish) on this machine.",
    )
    p.add_argument("-f", "--file", required=True, type=Path, help="ModelEngine YAML")
    p.add_argument(
        "--store", help="store URI (file:///dir, ./dir or s3://bucket/prefix); default: spec.storage.uri"
    )
    p.add_argument("--s3-endpoint", help="S3 endpoint URL (MinIO, moto); default: spec.storage.endpointUrl")
    p.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="T",
        help="replace the spec's targets: cpu, 8.9, tensorrt-rtx:8.9, tensorrt:9.0 (repeatable)",
    )
    p.add_argument(
        "--gpu-kind",
        action="append",
        default=[],
        metavar="PRODUCT=CC",
        help="a GPU kind `auto` targets expand to, e.g. NVIDIA-L4=8.9 (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print the outcomes as JSON on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="print only warnings and the result")
    p.set_defaults(func=run)


def parse_target(text: str) -> Target:
    value = text.strip()
    backend: BackendName | None = None
    if ":" in value:
        name, _, value = value.partition(":")
        try:
            backend = BackendName(name)
        except ValueError:
            raise BuildInputError(
                f"--target {text}: unknown backend {name!r} (one of {', '.join(b.value for b in BackendName)})"
            ) from None
    if value in ("cpu", "onnxruntime"):
        return Target(cpu=True, backend=backend)
    value = value.removeprefix("cc").removeprefix("sm")
    if value.replace(".", "", 1).isdigit() and "." in value:
        return Target(compute_capability=value, backend=backend)
    raise BuildInputError(f"--target {text}: expected cpu, a compute capability like 8.9, or backend:8.9")


def parse_gpu_kind(text: str) -> GpuKind:
    product, sep, cc = text.partition("=")
    if not sep or not product or "." not in cc:
        raise BuildInputError(f"--gpu-kind {text}: expected PRODUCT=CC, e.g. NVIDIA-L4=8.9")
    return GpuKind(product=product, compute_capability=cc)


def prepare(args: argparse.Namespace) -> tuple[ModelEngine, list[ResolvedTarget], list[str], ObjectStore]:
    me = load_modelengine(args.file)
    spec = me.spec
    if args.target:
        spec = spec.model_copy(update={"targets": [parse_target(t) for t in args.target]})
        problems = semantic_problems(spec)
        if problems:
            raise SpecError(problems, source="--target")
    storage = spec.storage
    if args.store:
        uri = args.store if "://" in args.store else Path(args.store).resolve().as_uri()
        storage = storage.model_copy(update={"uri": uri, "secret_ref": None})
    if args.s3_endpoint:
        storage = storage.model_copy(update={"endpoint_url": args.s3_endpoint})
    spec = spec.model_copy(update={"storage": storage})
    me = me.model_copy(update={"spec": spec})
    kinds = [parse_gpu_kind(k) for k in args.gpu_kind]
    resolution = resolve_targets(spec, kinds)
    skipped = list(resolution.skipped)
    if any(t.auto for t in spec.targets) and not kinds:
        skipped.append("auto: no GPU kinds given (use --gpu-kind PRODUCT=CC; there is no cluster to ask)")
    if not resolution.targets:
        raise BuildInputError("nothing to build: " + ("; ".join(skipped) or "no targets"))
    try:
        store = open_store(storage.uri, endpoint_url=storage.endpoint_url, region=storage.region)
    except StoreError as err:
        raise BuildInputError(str(err)) from None
    return me, resolution.targets, skipped, store


def build_local(
    me: ModelEngine, targets: list[ResolvedTarget], store: ObjectStore, reporter: Reporter
) -> tuple[list[TargetOutcome], str | None]:
    """Run the pipeline; when every target is Ready, write the release record."""
    with Pipeline(me, store=store, reporter=reporter) as pipeline:
        try:
            outcomes = pipeline.run(targets)
        except PipelineError as err:  # only the shared model load escapes `run`: the input
            raise BuildInputError(f"{err.stage}: {err}") from None
        # A StoreError goes up as it is: a store fault mid-build exits 3 (infrastructure).
    release_uri = None
    if all(o.phase == "Ready" for o in outcomes):
        record = make_release(
            store,
            namespace=me.metadata.namespace,
            name=me.metadata.name,
            generation=1,
            engines=[(o.target.name, o.manifest) for o in outcomes if o.manifest is not None],
        )
        release_uri = write_release(store, record)
    return outcomes, release_uri


def run(args: argparse.Namespace) -> int:
    me, targets, skipped, store = prepare(args)
    reporter = StreamReporter(quiet=args.quiet)
    reporter.info(f"{me.metadata.namespace}/{me.metadata.name}: {len(targets)} target(s) → {store.uri}")
    for line in skipped:
        reporter.warn(f"skipped {line}")
    outcomes, release_uri = build_local(me, targets, store, reporter)
    if args.json:
        json.dump(
            {"outcomes": [o.summary() for o in outcomes], "release": release_uri, "skipped": skipped},
            sys.stdout,
            indent=2,
        )
        print()
    else:
        print(format_table(outcomes))
        if release_uri:
            print(f"release record: {release_uri}")
    failed = [o for o in outcomes if o.phase != "Ready"]
    for o in failed:
        print(f"modelengine build: {o.target.name} failed: {o.reason}", file=sys.stderr)
    # Bad input only when every failure was the input's (a bad model fails every target alike).
    codes = {o.exit_code or 1 for o in failed}
    return 0 if not failed else (2 if codes == {2} else 1)


def format_table(outcomes: list[TargetOutcome]) -> str:
    rows = [("TARGET", "BACKEND", "VERSION", "BUILD KEY", "RESULT", "SIZE", "SECONDS", "ENGINE")]
    for o in outcomes:
        m = o.manifest
        result = "failed" if o.phase != "Ready" else ("cached" if o.cached else "built")
        rows.append(
            (
                o.target.name,
                o.target.backend.value,
                o.backend_version,
                o.build_key[:12],
                result,
                f"{m.size / 1e6:.2f} MB" if m else "-",
                f"{o.seconds:.1f}",
                o.engine_uri or (o.reason or "-")[:80],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in rows
    )
