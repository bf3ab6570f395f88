"""Property tests (Hypothesis) of every parser that reads untrusted bytes.

Store documents (manifest, release record, export record, source record): random and
adversarial documents, built by mutating valid ones with hostile values (path traversal,
absolute paths, huge numbers, deep nesting, wrong types) or from raw bytes, either parse
or raise the documented error (`UntrustedDocument` / `InvalidSourceRecord`, both
`StoreError`), and when one parses, every local path derived from it stays inside the
cache root. The runtime's protocol decoder: any body and header either decodes into
tensors that match their declared shapes and fit the byte limit, or raises `BadRequest`.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelengine.runtime.errors import BadRequest
from modelengine.runtime.protocol import parse_request
from modelengine.store.export_record import ExportRecord
from modelengine.store.file import FileStore
from modelengine.store.layout import source_record_key
from modelengine.store.sources import (
    InvalidSourceRecord,
    ObjectIdentity,
    SourceIdentity,
    make_source_record,
    read_source_record,
)
from modelengine.store.trust import (
    UntrustedDocument,
    confine,
    engine_object_key,
    parse_manifest,
    parse_release,
)

from .test_documents import KEY, SHA, manifest, release

SETTINGS = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

HOSTILE_STRINGS = st.sampled_from(
    [
        "../../../../tmp/x/.ssh", "/etc/passwd", "..", ".", "", "a/../../b", "engines/../../x", "\x00",
        "file:///etc/passwd", "s3://other-bucket/engines/x/authorized_keys", "%2e%2e%2f", "~root", "\\..\\x",
        "é" * 300, KEY.upper(), SHA[:-1], "x" * 5000, f"s3://b/p/engines/{KEY}/../../../authorized_keys",
    ]
)  # fmt: skip
JSON_LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False), st.text(max_size=40), HOSTILE_STRINGS,
)  # fmt: skip
JSON = st.recursive(
    JSON_LEAF,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a JSON document."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    doc[path[0]] = _set(doc[path[0]], path[1:], value)
    return doc


def _like(value: Any) -> st.SearchStrategy[Any]:
    """A replacement that keeps the value's type (so some mutated documents still parse)."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(min_value=-2, max_value=2**40)
    if isinstance(value, str):
        safe = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)
        hexes = st.sampled_from([KEY, SHA, "f" * 32, "0" * 64])
        return st.one_of(safe, hexes, HOSTILE_STRINGS, st.text(max_size=20))
    return JSON


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    """A valid document with up to three values replaced: same-typed, hostile or random JSON."""
    doc = json.loads(valid)
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        current: Any = doc
        for part in path:
            current = current[part]
        doc = _set(doc, path, draw(st.one_of(_like(current), JSON)))
    return json.dumps(doc).encode()


def documents(valid: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(mutated(valid), st.binary(max_size=200), JSON.map(lambda d: json.dumps(d).encode()))


@SETTINGS
@given(raw=documents(manifest()))
def test_manifest_parser_refuses_or_yields_a_confined_file(raw: bytes, tmp_path_factory: Any) -> None:
    cache = tmp_path_factory.getbasetemp() / "cache"
    try:
        parsed = parse_manifest(raw, where="doc", build_key=KEY)
    except UntrustedDocument as err:
        assert "\n" not in str(err)
        return
    assert confine(cache, parsed.build_key, parsed.engine_file).is_relative_to(cache.resolve())


@SETTINGS
@given(raw=documents(release()))
def test_release_parser_refuses_or_names_only_its_own_keys(raw: bytes, tmp_path_factory: Any) -> None:
    cache = tmp_path_factory.getbasetemp() / "cache"
    try:
        record = parse_release(raw, where="doc")
    except UntrustedDocument as err:
        assert "\n" not in str(err)
        return
    for engine in record.engines:
        key = engine_object_key(engine.uri, engine.build_key)
        assert key.startswith(f"engines/{engine.build_key}/") and key.count("/") == 2
        dest = confine(cache, engine.build_key, key.rsplit("/", 1)[-1])
        assert dest.is_relative_to(cache.resolve())


EXPORT_RECORD = json.dumps(
    {"export_digest": SHA, "model_digest": SHA, "files": ["model.onnx"], "inputs": [], "outputs": []}
).encode()


@SETTINGS
@given(raw=documents(EXPORT_RECORD))
def test_export_record_parser_refuses_or_yields_confined_files(raw: bytes, tmp_path_factory: Any) -> None:
    work = tmp_path_factory.getbasetemp() / "work"
    try:
        record = ExportRecord.from_json(raw)
    except UntrustedDocument:
        return
    for name in record.files:
        assert confine(work, name).is_relative_to(work.resolve())


IDENTITY = SourceIdentity(
    source=ObjectIdentity(uri="s3://models/m.pt", etag='"abc"', size=10, objects=1),
    format="torchscript",
    export={"method": "trace"},
)
SOURCE_RECORD = json.dumps(
    make_source_record(
        IDENTITY, model_digest=SHA, export_digest=SHA, onnx_file="model.onnx", export_record="export.json"
    ).to_wire()
).encode()


@SETTINGS
@given(raw=documents(SOURCE_RECORD))
def test_source_record_reader_refuses_or_yields_keys_of_its_export(raw: bytes, tmp_path_factory: Any) -> None:
    store = FileStore(tmp_path_factory.mktemp("store"))
    store.put_bytes(source_record_key(IDENTITY.key), raw)
    try:
        record = read_source_record(store, IDENTITY)
    except InvalidSourceRecord:
        return
    assert record is not None
    assert record.onnx_key.startswith(f"models/{record.export_digest}/") and ".." not in record.onnx_key


# -- the runtime's protocol decoder --------------------------------------------------

DATATYPES = st.sampled_from(["FP32", "FP16", "INT64", "INT8", "BOOL", "UINT8", "BYTES", "FP8", "", None, 3])
SHAPES = st.one_of(
    st.lists(st.integers(min_value=-2, max_value=8), max_size=5),
    st.lists(st.integers(min_value=-(2**64), max_value=2**64), max_size=20),
    st.just([0, 2**62]),
    st.just([1] * 10_000),
    JSON,
)
LIMIT = 1 << 16


VALID_TYPES = {"FP32": np.float32, "INT64": np.int64, "INT8": np.int8, "BOOL": np.bool_}


@st.composite
def well_formed_tensor(draw: st.DrawFn, i: int) -> tuple[dict[str, Any], bytes]:
    """A tensor whose data fits its shape (JSON or binary), so decoding can succeed."""
    datatype = draw(st.sampled_from(sorted(VALID_TYPES)))
    shape = draw(st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=3))
    values: np.ndarray = np.zeros(math.prod(shape), VALID_TYPES[datatype])
    tensor: dict[str, Any] = {"name": f"in{i}", "datatype": datatype, "shape": shape}
    if draw(st.booleans()):
        tensor["parameters"] = {"binary_data_size": values.nbytes}
        return tensor, values.tobytes()
    tensor["data"] = values.tolist()
    return tensor, b""


@st.composite
def infer_requests(draw: st.DrawFn) -> tuple[bytes, str | None]:
    inputs = []
    binary = b""
    for i in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            tensor, raw = draw(well_formed_tensor(i))
            inputs.append(tensor)
            binary += raw
            continue
        tensor = {"name": draw(st.sampled_from(["x", "y", f"in{i}"])), "datatype": draw(DATATYPES)}
        tensor["shape"] = draw(SHAPES)
        if draw(st.booleans()):
            size = draw(st.integers(min_value=-1, max_value=64))
            tensor["parameters"] = {"binary_data_size": size}
            binary += draw(st.binary(min_size=0, max_size=max(size, 0) + 4))
        else:
            tensor["data"] = draw(st.one_of(JSON, st.lists(st.floats(allow_nan=True), max_size=16)))
        inputs.append(tensor)
    doc: dict[str, Any] = {"inputs": inputs}
    if draw(st.booleans()):
        doc["outputs"] = draw(st.one_of(JSON, st.just([{"name": "y", "parameters": {"binary_data": True}}])))
    header = json.dumps(doc).encode()
    if binary:
        valid = str(len(header))
        length = draw(
            st.one_of(st.just(valid), st.just(valid), st.text(max_size=6), st.integers(-5, 10**6).map(str))
        )
        return header + binary, length
    if draw(st.booleans()):
        return header, draw(st.one_of(st.just(str(len(header))), st.text(max_size=6)))
    return header, None


@SETTINGS
@given(
    request=st.one_of(infer_requests(), st.tuples(st.binary(max_size=300), st.none() | st.text(max_size=8)))
)
def test_protocol_decoder_yields_fitting_tensors_or_bad_request(request: tuple[bytes, str | None]) -> None:
    body, header_length = request
    try:
        parsed = parse_request(body, header_length, max_tensor_bytes=LIMIT)
    except BadRequest as err:
        assert str(err) and "\n" not in str(err)
        return
    total = 0
    for arr in parsed.inputs.values():
        assert isinstance(arr, np.ndarray) and arr.size == math.prod(arr.shape)
        total += arr.nbytes
    assert total <= LIMIT
