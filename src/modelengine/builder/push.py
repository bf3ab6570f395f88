"""`modelengine push -f FILE --store s3://...`: upload a local model, print the cluster YAML.

A ModelEngine YAML written for `modelengine build` names its model by a local path (`.`,
`model.pt`). A builder pod cannot read that, so `push` uploads what the path names into
the store, content-addressed, and prints the same YAML with the path replaced by the
object's URI, ready for `kubectl apply -f -` or a GitOps repository:

    sources/<sha256 of the file>/<file name>        a file (model.pt, model.onnx, weights)
    sources/<digest of the folder>/<relative path>  a folder (python code + weights), as
                                                    s3://.../sources/<digest>/ (trailing /)

The folder digest covers relative paths and bytes with the model digest's skip rules
(caches, .pyc), and the same files are uploaded, so a pod that downloads the prefix
hashes the same model digest as `modelengine build` does locally. Objects already in the
store are not uploaded again; pushing twice prints the same YAML. Weights inside the
pushed folder become a URI inside it. Sources that already are URIs (`s3://`, or a
`file://` path with `spec.build.image`, which lives in the image) are left as they are.
Progress goes to stderr; stdout holds only the YAML: the input text with the rewritten
values replaced in place (comments and layout kept), or re-dumped where an edit would be
ambiguous.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path
from typing import Any, TextIO

import yaml

from modelengine.api.validation import SpecError, cluster_source_problems, load_modelengine, parse_modelengine
from modelengine.errors import InputError
from modelengine.store.base import ObjectStore, StoreError
from modelengine.store.digest import content_digest, content_files, local_path
from modelengine.store.layout import pushed_source_prefix
from modelengine.store.open import open_store


class PushError(InputError):
    """A model that cannot be pushed as given."""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "push",
        help="upload a local model to S3 and print the YAML with its source rewritten",
        description=(
            "Upload the model a ModelEngine YAML names by a local path (file or folder, weights,"
            " calibration data) into the store, content-addressed, and print the same YAML with"
            " those paths rewritten to s3:// URIs: `modelengine push -f me.yaml --store"
            " s3://bucket/prefix | kubectl apply -f -`."
        ),
    )
    p.add_argument("-f", "--file", required=True, type=Path, help="ModelEngine YAML")
    p.add_argument("--store", help="s3://bucket/prefix to upload into (default: spec.storage.uri)")
    p.add_argument(
        "--endpoint-url",
        "--s3-endpoint",
        dest="endpoint_url",
        help="S3 endpoint URL (MinIO, moto); default: spec.storage.endpointUrl, then $AWS_ENDPOINT_URL",
    )
    p.add_argument("--region", help="S3 region (default: $AWS_REGION / $AWS_DEFAULT_REGION)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    text = _read(args.file)
    me = load_modelengine(args.file)
    uri = args.store or me.spec.storage.uri
    if not uri.startswith("s3://"):
        raise PushError(f"--store {uri}: a cluster's pods read models from S3; give s3://bucket/prefix")
    try:
        store = open_store(
            uri, endpoint_url=args.endpoint_url or me.spec.storage.endpoint_url, region=args.region
        )
    except StoreError as err:
        raise PushError(str(err)) from None
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    (doc,) = [d for d in docs if isinstance(d, dict) and d.get("kind") == "ModelEngine"]
    before = copy.deepcopy(doc)
    push_document(doc, base=args.file.resolve().parent, store=store, log=sys.stderr)
    sys.stdout.write(rewrite_text(text, before, doc, docs))
    return 0


def rewrite_text(text: str, before: dict[str, Any], after: dict[str, Any], docs: list[Any]) -> str:
    """The input text with each rewritten source value replaced in place (comments and
    layout kept); the whole document set re-dumped when an edit is not unambiguous."""
    edited = text
    for key, old, new in _changes(before, after):
        value = re.escape(old)
        pattern = re.compile(
            rf"(?P<pre>\b{key}:[ \t]*)(?P<q>['\"]?){value}(?P=q)(?=[ \t]*(?:#.*)?$|[ \t]*[,}}])",
            re.MULTILINE,
        )
        found = list(pattern.finditer(edited))
        if len(found) != 1:
            return yaml.safe_dump_all(docs, sort_keys=False)
        m = found[0]
        edited = edited[: m.start()] + m["pre"] + m["q"] + new + m["q"] + edited[m.end() :]
    try:
        same = [d for d in yaml.safe_load_all(edited) if d is not None] == docs
    except yaml.YAMLError:
        same = False
    return edited if same else yaml.safe_dump_all(docs, sort_keys=False)


def _changes(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(key, old value, new value) of each rewritten source."""
    out = []
    for section, key in (("model", "source"), ("model", "weights"), ("build", "calibration")):
        old = (before["spec"].get(section) or {}).get(key)
        new = (after["spec"].get(section) or {}).get(key)
        if old != new and isinstance(old, str) and isinstance(new, str):
            out.append((key, old, new))
    return out


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as err:
        raise PushError(f"{path}: cannot read file: {err.strerror}") from None


def push_document(doc: dict[str, Any], *, base: Path, store: ObjectStore, log: TextIO) -> None:
    """Upload the local sources `doc` names (paths relative to `base`) and rewrite them in
    place to their URIs in `store`; afterwards a pod can read every source."""
    spec = doc["spec"]
    model = spec["model"]
    image = (spec.get("build") or {}).get("image")
    folder: tuple[Path, str] | None = None
    source = _local(model["source"], base, image)
    if source is not None:
        model["source"] = _upload(source, store, log)
        if source.is_dir():
            folder = (source.resolve(), model["source"])
    weights = _local(model.get("weights"), base, image)
    if weights is not None:
        inside = folder is not None and weights.resolve().is_relative_to(folder[0])
        if folder is not None and inside and weights.resolve() in content_files(folder[0]):
            model["weights"] = folder[1] + weights.resolve().relative_to(folder[0]).as_posix()
        else:
            model["weights"] = _upload(weights, store, log)
    build = spec.get("build") or {}
    calibration = _local(build.get("calibration"), base, image)
    if calibration is not None:
        build["calibration"] = _upload(calibration, store, log)
    try:
        problems = cluster_source_problems(parse_modelengine(doc).spec)
    except SpecError as err:
        problems = err.problems
    if problems:
        raise PushError(problems[0])


def _local(value: str | None, base: Path, image: str | None) -> Path | None:
    """The local path a source names, None when it is already readable in a cluster."""
    if not value:
        return None
    if "://" in value and not value.startswith("file://"):
        return None  # s3:// stays; other schemes are refused by the final check
    if value.startswith("file://") and image:
        return None  # a path inside the custom builder image
    path = local_path(value) if "://" in value else Path(value)
    assert path is not None
    path = path if path.is_absolute() else base / path
    if not path.exists():
        raise PushError(f"{value}: no such file or folder (relative to {base})")
    return path


def _upload(path: Path, store: ObjectStore, log: TextIO) -> str:
    """Upload a file or folder under its content digest; returns its URI."""
    digest = content_digest(path)
    prefix = pushed_source_prefix(digest)
    if path.is_dir():
        files = [(f, f.relative_to(path).as_posix()) for f in content_files(path)]
        if not files:
            raise PushError(f"{path}: the folder holds no files")
        uri = store.url_for(prefix)
    else:
        files = [(path, path.name)]
        uri = store.url_for(prefix + path.name)
    total = sum(f.stat().st_size for f, _ in files)
    sent = 0
    for file, rel in files:
        if not store.exists(prefix + rel):
            store.put_file(prefix + rel, file)
            sent += 1
    kept = len(files) - sent
    print(
        f"modelengine push: {path} → {uri} ({len(files)} file(s), {total / 1e6:.2f} MB;"
        f" {sent} uploaded, {kept} already in the store)",
        file=log,
        flush=True,
    )
    return uri
