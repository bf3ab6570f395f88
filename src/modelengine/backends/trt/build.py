"""The build path TensorRT and TensorRT-RTX share: parse, profile, build, describe I/O.

`build_plan` takes the library objects a backend created (builder, network, parser,
config) plus a `LogSink` fed by the backend's logger, and does everything both libraries
do alike: parse the ONNX by path (torch writes weights as external data beside the
.onnx, which only a path-based parse finds), turn parser errors into one line naming the
op and node, set the optimization profile from the spec's min/opt/max, set the
workspace and optimization level, build, and describe the engine's I/O from the parsed
network and the profile (TRT-RTX engines cannot be deserialized without a GPU, so the
I/O cannot come from the engine). The backends set what differs on `config` before
calling it.

The profile logic (`plan_profile`) is a pure function over `NetTensor`s so that it is
tested without any TensorRT library.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from modelengine.api.tensors import TensorInfo
from modelengine.backends.base import BackendError, BuildOptions, Progress, UnsupportedModel
from modelengine.errors import first_line

# TensorRT DataType member names -> numpy dtype names (the manifest's vocabulary).
DTYPE_NAMES: dict[str, str] = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "UINT8": "uint8",
    "FP8": "float8_e4m3fn",
    "INT4": "int4",
    "FP4": "float4_e2m1fn",
}


class LogSink:
    """Messages from a TensorRT logger; a backend's ILogger subclass feeds `add`.

    Severity ranks follow TensorRT: 0 internal error, 1 error, 2 warning, 3 info, 4 verbose.
    """

    def __init__(self) -> None:
        self.messages: list[tuple[int, str]] = []

    def add(self, severity: int, message: str) -> None:
        if severity <= 2:  # info and verbose are noise for a one-line reason
            self.messages.append((severity, message))

    def errors(self) -> list[str]:
        return [m for s, m in self.messages if s <= 1]

    def warnings(self) -> list[str]:
        return [m for s, m in self.messages if s == 2]

    def reason(self, default: str) -> str:
        errors = self.errors()
        return first_line(errors[-1]) if errors else default


def make_logger(trt: Any, sink: LogSink) -> Any:
    """An ILogger of the given TensorRT module (tensorrt or tensorrt_rtx) feeding `sink`."""

    class _Logger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            sink.add(int(severity), msg)

    return _Logger()


# --- the slice of the TensorRT API used here (both libraries satisfy it) ---------------


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class TensorLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def shape(self) -> Iterable[int]: ...
    @property
    def dtype(self) -> _Named: ...


class NetworkLike(Protocol):
    @property
    def num_inputs(self) -> int: ...
    @property
    def num_outputs(self) -> int: ...
    def get_input(self, index: int) -> TensorLike: ...
    def get_output(self, index: int) -> TensorLike: ...


class ParserErrorLike(Protocol):
    def desc(self) -> str: ...
    def node(self) -> int: ...
    def node_name(self) -> str: ...
    def node_operator(self) -> str: ...


class ParserLike(Protocol):
    def parse_from_file(self, model: str) -> bool: ...
    @property
    def num_errors(self) -> int: ...
    def get_error(self, index: int) -> ParserErrorLike: ...


class ProfileLike(Protocol):
    def set_shape(self, input: str, min: Sequence[int], opt: Sequence[int], max: Sequence[int]) -> None: ...


class ConfigLike(Protocol):
    def add_optimization_profile(self, profile: Any) -> int: ...
    def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None: ...

    builder_optimization_level: int


class BuilderLike(Protocol):
    def create_optimization_profile(self) -> Any: ...
    def build_serialized_network(self, network: Any, config: Any) -> Any: ...


# --- pure parts ----------------------------------------------------------------------


@dataclass(frozen=True)
class NetTensor:
    """A network input or output as parsed: name, numpy dtype name, shape (-1 dynamic)."""

    name: str
    dtype: str
    shape: tuple[int, ...]


def describe(tensor: TensorLike) -> NetTensor:
    dt = tensor.dtype.name
    return NetTensor(tensor.name, DTYPE_NAMES.get(dt, dt.lower()), tuple(int(d) for d in tensor.shape))


def network_io(network: NetworkLike) -> tuple[list[NetTensor], list[NetTensor]]:
    ins = [describe(network.get_input(i)) for i in range(network.num_inputs)]
    outs = [describe(network.get_output(i)) for i in range(network.num_outputs)]
    return ins, outs


def plan_profile(network_inputs: Sequence[NetTensor], requested: Sequence[TensorInfo]) -> list[TensorInfo]:
    """Min/opt/max per network input from the spec's inputs, checked against the network.

    Static inputs need no spec entry (min = opt = max = shape). A dynamic input needs
    min/opt/max (or a static shape in the spec); every problem is one line naming the
    input and the dimension.
    """
    by_name = {t.name: t for t in requested}
    names = {t.name for t in network_inputs}
    unknown = [n for n in by_name if n not in names]
    if unknown:
        raise BackendError(
            f"the spec names input(s) {', '.join(unknown)} that the ONNX model does not have "
            f"(it has {', '.join(t.name for t in network_inputs)})"
        )
    out: list[TensorInfo] = []
    for net in network_inputs:
        shape = list(net.shape)
        spec = by_name.get(net.name)
        if spec is None or spec.min is None or spec.opt is None or spec.max is None:
            fixed = list(spec.shape) if spec is not None else shape
            if -1 in fixed:
                raise BackendError(
                    f"input {net.name} has dynamic dimensions {shape}: the spec must give min/opt/max"
                )
            bounds = (fixed, fixed, fixed)
        else:
            bounds = (list(spec.min), list(spec.opt), list(spec.max))
        for label, dims in zip(("min", "opt", "max"), bounds, strict=True):
            if len(dims) != len(shape):
                raise BackendError(
                    f"input {net.name}: {label} {dims} has rank {len(dims)} but the ONNX input {shape} has rank {len(shape)}"
                )
            for d, (want, have) in enumerate(zip(dims, shape, strict=True)):
                if want < 1:
                    raise BackendError(f"input {net.name}: {label}[{d}] = {want} must be at least 1")
                if have != -1 and want != have:
                    raise BackendError(
                        f"input {net.name}: {label}[{d}] = {want} but the ONNX fixes dimension {d} to {have}"
                    )
        lo, mid, hi = bounds
        for d in range(len(shape)):
            if not lo[d] <= mid[d] <= hi[d]:
                raise BackendError(
                    f"input {net.name}: dimension {d} needs min <= opt <= max, got {lo[d]}, {mid[d]}, {hi[d]}"
                )
        out.append(TensorInfo(name=net.name, dtype=net.dtype, shape=shape, min=lo, opt=mid, max=hi))
    return out


def parser_reason(parser: ParserLike, onnx_path: Path) -> str:
    """The parser's first error as one line, naming the node and its op when known."""
    if parser.num_errors == 0:
        return f"cannot parse {onnx_path.name}"
    err = parser.get_error(0)
    desc = first_line(err.desc())
    if err.node() >= 0 and err.node_operator():
        name = err.node_name() or f"#{err.node()}"
        return f"unsupported node {name!r} (op {err.node_operator()}) in {onnx_path.name}: {desc}"
    return f"cannot parse {onnx_path.name}: {desc}"


# --- the shared build ------------------------------------------------------------------


@dataclass
class Plan:
    engine: bytes
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]


def build_plan(
    *,
    builder: BuilderLike,
    network: NetworkLike,
    parser: ParserLike,
    config: ConfigLike,
    workspace_pool: Any,
    onnx_path: Path,
    options: BuildOptions,
    sink: LogSink,
    progress: Progress,
    library: str,
    before_build: Callable[[Any, list[TensorInfo]], None] | None = None,
) -> Plan:
    """Parse, profile, build. `before_build(profile, inputs)` lets a backend finish the
    config once the profile exists (full TensorRT's calibration profile); profile is None
    when every input is static."""
    progress(f"parsing {onnx_path.name} with {library}")
    if not parser.parse_from_file(str(onnx_path)):
        raise UnsupportedModel(parser_reason(parser, onnx_path))
    net_in, net_out = network_io(network)
    inputs = plan_profile(net_in, options.inputs)
    profile: Any = None
    if any(-1 in t.shape for t in inputs):
        profile = builder.create_optimization_profile()
        for t in inputs:
            assert t.min is not None and t.opt is not None and t.max is not None
            profile.set_shape(t.name, t.min, t.opt, t.max)
        if config.add_optimization_profile(profile) < 0:
            raise BackendError(
                f"{library} rejected the optimization profile: {sink.reason('invalid profile')}"
            )
    config.set_memory_pool_limit(workspace_pool, options.workspace_mib << 20)
    config.builder_optimization_level = options.optimization_level
    if before_build is not None:
        before_build(profile, inputs)
    progress(f"building the engine with {library} (optimization level {options.optimization_level})")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"{library} build failed: {sink.reason('no reason given by the builder')}")
    engine = bytes(memoryview(serialized))
    if not engine:
        raise BackendError(f"{library} build produced an empty engine")
    outputs = [TensorInfo(name=t.name, dtype=t.dtype, shape=list(t.shape)) for t in net_out]
    return Plan(engine=engine, inputs=inputs, outputs=outputs)
