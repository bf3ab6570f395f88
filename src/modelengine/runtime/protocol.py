"""The Open Inference Protocol (KServe v2) codec: request bodies in, response bodies out.

Pure functions over bytes and numpy arrays, no HTTP: the server hands over the body and
the `Inference-Header-Content-Length` header, gets back tensors or a `BadRequest` with a
one-line reason naming the input and what is wrong with it.

Binary-data extension (as tritonclient speaks it): the body is a JSON header of the
given length followed by raw tensor bytes, in the order of the inputs that carry a
`binary_data_size` parameter. Outputs are returned as binary when the request asks for
it per output (`parameters.binary_data`) or for all (`parameters.binary_data_output`);
the response then has the same layout and header. BYTES tensors are refused cleanly.

Limits: a declared shape is checked before anything is allocated: at most `MAX_RANK`
dimensions, each at most `MAX_DIM`, and the bytes all inputs' shapes need at most
`max_tensor_bytes` (the server passes `--max-request-mib`). So `[0, 2**62]` or 10,000
dimensions are a 400 naming the input, never numpy's "array is too big" as a 500.

JSON goes through orjson where installed (the runtime extra has it): parsing and writing
tensors as JSON is most of the cost of a JSON request, and orjson writes numpy arrays
directly, about 20x faster than `json.dumps(arr.tolist())`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelengine.errors import first_line
from modelengine.runtime.errors import BadRequest

HEADER_LENGTH = "Inference-Header-Content-Length"
MAX_RANK = 16
MAX_DIM = 2**31 - 1
DEFAULT_MAX_TENSOR_BYTES = 64 * 2**20

_TO_NUMPY = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
_FROM_NUMPY = {v: k for k, v in _TO_NUMPY.items()}


def v2_datatype(dtype: str | np.dtype[Any]) -> str:
    """KServe v2 datatype name of a numpy dtype (name)."""
    return _FROM_NUMPY.get(np.dtype(dtype), "BYTES")


def numpy_dtype(datatype: str, where: str) -> np.dtype[Any]:
    if datatype == "BYTES":
        raise BadRequest(f"{where}: BYTES tensors are not supported by this model server")
    dtype = _TO_NUMPY.get(datatype)
    if dtype is None:
        raise BadRequest(f"{where}: unknown datatype {datatype!r} (expected one of {', '.join(_TO_NUMPY)})")
    return dtype


@dataclass
class OutputRequest:
    name: str
    binary: bool


@dataclass
class InferRequest:
    inputs: dict[str, np.ndarray]
    id: str | None = None
    outputs: list[OutputRequest] | None = None  # None: all outputs
    binary_output: bool = False  # request-level binary_data_output
    params: dict[str, Any] = field(default_factory=dict)


def _params(doc: Mapping[str, Any], where: str) -> dict[str, Any]:
    params = doc.get("parameters", {})
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise BadRequest(f"{where}: 'parameters' must be an object")
    return params


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise BadRequest(f"{where}: 'shape' must be a list of integers")
    if len(value) > MAX_RANK:
        raise BadRequest(f"{where}: rank {len(value)} exceeds the limit of {MAX_RANK} dimensions")
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise BadRequest(f"{where}: 'shape' must be a list of integers")
    if any(d < 0 for d in value):
        raise BadRequest(f"{where}: negative dimension in shape {value}")
    if any(d > MAX_DIM for d in value):
        raise BadRequest(f"{where}: dimension over {MAX_DIM} in shape {value}")
    return tuple(value)


def _bytes_needed(shape: tuple[int, ...], dtype: np.dtype[Any], where: str, budget: int) -> int:
    """Bytes the declared shape needs; refused when over what is left of the request budget."""
    need = math.prod(shape) * dtype.itemsize
    if need > budget:
        raise BadRequest(
            f"{where}: shape {list(shape)} of {v2_datatype(dtype)} needs {need} bytes, over the "
            f"{budget} bytes left of the request limit (--max-request-mib)"
        )
    return need


def _json_tensor(data: Any, dtype: np.dtype[Any], shape: tuple[int, ...], where: str) -> np.ndarray:
    """A tensor from JSON `data`: flat or nested lists, strictly numbers (or booleans for BOOL)."""
    count = math.prod(shape)
    try:
        arr = np.array(data)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise BadRequest(f"{where}: 'data' is not a regular list of numbers") from None
    if arr.size != count:
        raise BadRequest(f"{where}: {arr.size} values in 'data' but shape {list(shape)} holds {count}")
    if arr.size == 0:
        return np.zeros(shape, dtype)
    kind = arr.dtype.kind
    if dtype == np.bool_:
        if kind != "b":
            raise BadRequest(f"{where}: BOOL data must be true/false")
        return arr.reshape(shape)
    if kind not in "iuf":
        what = "booleans" if kind == "b" else "non-numeric values"
        raise BadRequest(f"{where}: {what} in 'data' of a {v2_datatype(dtype)} tensor")
    if dtype.kind in "iu":
        if kind == "f":
            raise BadRequest(f"{where}: {v2_datatype(dtype)} data must be integers")
        info = np.iinfo(dtype)
        if arr.min() < info.min or arr.max() > info.max:
            raise BadRequest(f"{where}: value out of range for {v2_datatype(dtype)}")
    return arr.astype(dtype, copy=False).reshape(shape)


def parse_request(
    body: bytes, header_length: str | None, *, max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES
) -> InferRequest:
    """Decode a v2 infer request body (JSON, or JSON header + binary tensors).

    Raises only `BadRequest`; `max_tensor_bytes` bounds what all input shapes may need.
    """
    if header_length is not None:
        try:
            hlen = int(header_length)
        except ValueError:
            raise BadRequest(f"{HEADER_LENGTH} header is not an integer: {header_length[:20]!r}") from None
        if not 0 < hlen <= len(body):
            raise BadRequest(f"{HEADER_LENGTH} {hlen} does not fit a body of {len(body)} bytes")
        header, binary = body[:hlen], memoryview(body)[hlen:]
    else:
        header, binary = body, memoryview(b"")
    try:
        doc = _loads(header)
    except (ValueError, RecursionError) as err:
        raise BadRequest(f"malformed JSON request: {first_line(err)}") from None
    if not isinstance(doc, dict):
        raise BadRequest("request must be a JSON object")
    params = _params(doc, "request")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("request needs a non-empty 'inputs' list")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    budget = max_tensor_bytes
    for i, raw in enumerate(raw_inputs):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise BadRequest(f"inputs[{i}]: must be an object with a 'name'")
        name = raw["name"]
        where = f"input {name}"
        if name in inputs:
            raise BadRequest(f"{where}: given twice")
        dtype = numpy_dtype(str(raw.get("datatype", "")), where)
        shape = _shape(raw.get("shape"), where)
        budget -= _bytes_needed(shape, dtype, where, budget)
        iparams = _params(raw, where)
        size = iparams.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BadRequest(f"{where}: binary_data_size must be a non-negative integer")
            expected = math.prod(shape) * dtype.itemsize
            if size != expected:
                raise BadRequest(
                    f"{where}: binary_data_size {size} but shape {list(shape)} of {v2_datatype(dtype)} "
                    f"needs {expected} bytes"
                )
            if offset + size > len(binary):
                raise BadRequest(f"{where}: binary data ends after {len(binary) - offset} of {size} bytes")
            inputs[name] = np.frombuffer(binary[offset : offset + size], dtype=dtype).reshape(shape)
            offset += size
        elif "data" in raw:
            inputs[name] = _json_tensor(raw["data"], dtype, shape, where)
        else:
            raise BadRequest(f"{where}: no 'data' and no binary_data_size parameter")
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data left over after the inputs")
    outputs: list[OutputRequest] | None = None
    binary_default = bool(params.get("binary_data_output", False))
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise BadRequest("'outputs' must be a list")
        outputs = []
        for i, raw in enumerate(raw_outputs):
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                raise BadRequest(f"outputs[{i}]: must be an object with a 'name'")
            oparams = _params(raw, f"output {raw['name']}")
            if "classification" in oparams:
                raise BadRequest(f"output {raw['name']}: the classification extension is not supported")
            outputs.append(OutputRequest(raw["name"], bool(oparams.get("binary_data", binary_default))))
    req_id = doc.get("id")
    return InferRequest(
        inputs=inputs,
        id=str(req_id) if req_id is not None else None,
        outputs=outputs,
        binary_output=binary_default,
        params=params,
    )


def encode_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Sequence[tuple[str, np.ndarray, bool]],
) -> tuple[bytes, int | None]:
    """Body of an infer response and, when it carries binary data, the JSON header length."""
    docs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    finite = True
    for name, arr, binary in outputs:
        doc: dict[str, Any] = {"name": name, "datatype": v2_datatype(arr.dtype), "shape": list(arr.shape)}
        if binary:
            raw = np.ascontiguousarray(arr).tobytes()
            doc["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            flat = np.ascontiguousarray(arr).ravel()
            if flat.dtype.kind == "f" and not np.isfinite(flat).all():
                finite = False
            doc["data"] = flat
        docs.append(doc)
    head: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": docs}
    if request_id is not None:
        head["id"] = request_id
    header = _dumps(head, finite=finite)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def _dumps_std(doc: dict[str, Any]) -> bytes:
    def default(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return value.tolist()
        raise TypeError(type(value).__name__)

    return json.dumps(doc, separators=(",", ":"), default=default).encode()


try:
    import orjson

    def _loads(raw: bytes) -> Any:
        return orjson.loads(raw)

    def _dumps(doc: dict[str, Any], *, finite: bool = True) -> bytes:
        # orjson writes NaN/Infinity as null; the stdlib keeps them (as Triton does)
        if not finite:
            return _dumps_std(doc)
        return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)

except ImportError:  # pragma: no cover - orjson is part of the runtime extra

    def _loads(raw: bytes) -> Any:
        return json.loads(raw)

    def _dumps(doc: dict[str, Any], *, finite: bool = True) -> bytes:
        del finite
        return _dumps_std(doc)
