"""KServe v2 gRPC messages to and from tensors: the gRPC twin of `protocol`.

`decode_infer` turns a `ModelInferRequest` into the same `InferRequest` the HTTP codec
produces, with the same checks and one-line `BadRequest` reasons naming the input: known
datatype (BYTES refused), shape rank and dimension limits, the bytes all declared shapes
need against `--max-request-mib`, and the data matching the shape. Tensor data comes
either from `raw_input_contents` (one entry per input, in input order, as tritonclient
sends it) or from the typed `contents` field of the datatype's protobuf type; FP16 has no
typed field and must be raw. `encode_infer` always answers with `raw_output_contents`
(what Triton does and what tritonclient's `as_numpy` reads first).

The messages are tritonclient's generated classes (`tritonclient.grpc.service_pb2`); see
`grpc_server` for why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from modelengine.runtime.errors import BadRequest
from modelengine.runtime.protocol import (
    InferRequest,
    OutputRequest,
    _bytes_needed,
    _shape,
    numpy_dtype,
    v2_datatype,
)

# datatype -> the InferTensorContents field holding it when sent typed (not raw)
_TYPED_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def _typed(
    tensor: Any, datatype: str, dtype: np.dtype[Any], shape: tuple[int, ...], where: str
) -> np.ndarray:
    field = _TYPED_FIELD.get(datatype)
    if field is None:
        raise BadRequest(f"{where}: {datatype} data must be sent in raw_input_contents")
    values = getattr(tensor.contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise BadRequest(
            f"{where}: {len(values)} values in contents.{field} but shape {list(shape)} holds {count}"
        )
    wide = np.asarray(values, dtype=np.bool_ if datatype == "BOOL" else None)
    if dtype.kind in "iu" and wide.size:
        info = np.iinfo(dtype)
        if wide.min() < info.min or wide.max() > info.max:
            raise BadRequest(f"{where}: value out of range for {datatype}")
    return wide.astype(dtype, copy=False).reshape(shape)


def decode_infer(message: Any, *, max_tensor_bytes: int) -> InferRequest:
    """The tensors and requested outputs of a `ModelInferRequest`; raises only `BadRequest`."""
    if not message.inputs:
        raise BadRequest("request needs a non-empty 'inputs' list")
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise BadRequest(
            f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs (one per input, or none)"
        )
    inputs: dict[str, np.ndarray] = {}
    budget = max_tensor_bytes
    for i, tensor in enumerate(message.inputs):
        name = tensor.name
        where = f"input {name}"
        if not name:
            raise BadRequest(f"inputs[{i}]: must have a 'name'")
        if name in inputs:
            raise BadRequest(f"{where}: given twice")
        dtype = numpy_dtype(tensor.datatype, where)
        shape = _shape(list(tensor.shape), where)
        need = _bytes_needed(shape, dtype, where, budget)
        budget -= need
        if raw:
            data = raw[i]
            if len(data) != need:
                raise BadRequest(
                    f"{where}: {len(data)} bytes of raw_input_contents but shape {list(shape)} of "
                    f"{tensor.datatype} needs {need} bytes"
                )
            inputs[name] = np.frombuffer(data, dtype=dtype).reshape(shape)
        elif tensor.HasField("contents"):
            inputs[name] = _typed(tensor, tensor.datatype, dtype, shape, where)
        else:
            raise BadRequest(f"{where}: no contents and no raw_input_contents")
    outputs: list[OutputRequest] | None = None
    if message.outputs:
        outputs = []
        for wanted in message.outputs:
            if "classification" in wanted.parameters:
                raise BadRequest(f"output {wanted.name}: the classification extension is not supported")
            outputs.append(OutputRequest(wanted.name, True))
    return InferRequest(inputs=inputs, id=message.id or None, outputs=outputs, binary_output=True)


def encode_infer(
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Sequence[tuple[str, np.ndarray, bool]],
) -> Any:
    """A `ModelInferResponse` carrying every output as raw bytes."""
    response = pb.ModelInferResponse(model_name=model_name, model_version=model_version, id=request_id or "")
    for name, arr, _binary in outputs:
        response.outputs.add(name=name, datatype=v2_datatype(arr.dtype), shape=arr.shape)
        response.raw_output_contents.append(np.ascontiguousarray(arr).tobytes())
    return response
