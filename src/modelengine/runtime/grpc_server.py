"""KServe v2 gRPC (`inference.GRPCInferenceService`, the Open Inference Protocol's gRPC
service) on port 8001, served by the same `DataPlane` as HTTP.

A `grpc.aio` server on the runtime's event loop: requests from both protocols meet in one
batcher, one in-flight count (hot reload drains both alike), one set of metrics. Handlers
are thin: decode the message (`grpc_codec`), call the data plane, encode the answer. A
failure maps to a gRPC status code with the same one-line, redacted message the HTTP body
carries: 400 → INVALID_ARGUMENT, 404 → NOT_FOUND, 503 → UNAVAILABLE, 413 →
RESOURCE_EXHAUSTED, anything else → INTERNAL (logged with its traceback). Methods outside
the core protocol (streaming, repository, shared memory, statistics, ...) answer
UNIMPLEMENTED (`ModelConfig`, Triton's extension, is answered: tools ask it for
`max_batch_size`), gRPC's own answer to an unknown method.

Messages: the generated classes `tritonclient[grpc]` ships (`tritonclient.grpc.service_pb2`)
rather than code generated here from KServe's `grpc_predict_v2.proto`. Triton's proto is a
field-for-field superset of KServe's (same package, service, method names and field
numbers), so KServe clients and `tritonclient.grpc` both work unmodified; taking the
classes from the client we must satisfy means the wire contract cannot drift from it, there
is no code-generation step, and tritonclient pins the protobuf runtime its generated code
needs (generated `_pb2` files checked in here would pin one protobuf major). The cost is a
pure-Python package (~1 MB) in the runtime image. Handlers are registered with
`grpc.method_handlers_generic_handler` (no generated servicer base class to subclass).

Request size: `--max-request-mib` is also gRPC's receive limit (RESOURCE_EXHAUSTED above
it, from grpc itself). Shutdown: `stop` refuses new calls and waits up to the grace period
for in-flight ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import grpc
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb

from modelengine.errors import first_line
from modelengine.logs import redact
from modelengine.runtime.dataplane import MODEL_VERSION, DataPlane
from modelengine.runtime.errors import to_http
from modelengine.runtime.grpc_codec import decode_infer, encode_infer

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"

_STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    503: grpc.StatusCode.UNAVAILABLE,
}

Method = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


async def _abort(context: grpc.aio.ServicerContext[Any, Any], err: Exception, method: str) -> NoReturn:
    status, message = to_http(err)
    if status >= 500 and status != 503:
        log.error("error serving gRPC %s", method, exc_info=err)
    await context.abort(_STATUS_CODES.get(status, grpc.StatusCode.INTERNAL), redact(message))
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


def _guarded(method: str, handler: Method) -> Method:
    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await handler(request, context)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            await _abort(context, err, method)

    return call


class InferenceService:
    """The core KServe v2 methods over one `DataPlane`."""

    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane

    async def server_live(self, _request: Any, _context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, _request: Any, _context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self._plane.ready()[0])

    async def model_ready(self, request: Any, _context: Any) -> Any:
        return pb.ModelReadyResponse(ready=self._plane.model_ready(request.name, request.version or None))

    async def server_metadata(self, _request: Any, _context: Any) -> Any:
        doc = self._plane.server_metadata()
        return pb.ServerMetadataResponse(
            name=doc["name"], version=doc["version"], extensions=doc["extensions"]
        )

    async def model_metadata(self, request: Any, _context: Any) -> Any:
        doc = self._plane.model_metadata(request.name, request.version or None)
        response = pb.ModelMetadataResponse(
            name=doc["name"], versions=doc["versions"], platform=doc["platform"]
        )
        for key, tensors in (("inputs", response.inputs), ("outputs", response.outputs)):
            for t in doc[key]:
                tensors.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        return response

    async def model_config(self, request: Any, _context: Any) -> Any:
        """The Triton-style config HTTP's `/config` answers, as Triton's `ModelConfig` message."""
        doc = self._plane.model_config(request.name, request.version or None)
        config = mc.ModelConfig(
            name=doc["name"], platform=doc["platform"], max_batch_size=doc["max_batch_size"]
        )
        for tensors, entries in ((config.input, doc["input"]), (config.output, doc["output"])):
            for t in entries:
                tensors.add(name=t["name"], data_type=mc.DataType.Value(t["data_type"]), dims=t["dims"])
        if doc["dynamic_batching"] is not None:
            config.dynamic_batching.max_queue_delay_microseconds = doc["dynamic_batching"][
                "max_queue_delay_microseconds"
            ]
        return pb.ModelConfigResponse(config=config)

    async def model_infer(self, request: Any, _context: Any) -> Any:
        plane = self._plane

        def decode() -> Any:
            return decode_infer(request, max_tensor_bytes=plane.max_tensor_bytes)

        def encode(decoded: Any, picked: list[Any]) -> Any:
            return encode_infer(
                model_name=plane.model_name,
                model_version=MODEL_VERSION,
                request_id=decoded.id,
                outputs=picked,
            )

        return await plane.run_inference(request.model_name, request.model_version or None, decode, encode)

    def handler(self) -> grpc.GenericRpcHandler:
        methods: dict[str, tuple[Method, Any, Any]] = {
            "ServerLive": (self.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
            "ServerReady": (self.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
            "ModelReady": (self.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
            "ServerMetadata": (self.server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
            "ModelMetadata": (self.model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
            "ModelConfig": (self.model_config, pb.ModelConfigRequest, pb.ModelConfigResponse),
            "ModelInfer": (self.model_infer, pb.ModelInferRequest, pb.ModelInferResponse),
        }
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                name: grpc.unary_unary_rpc_method_handler(
                    _guarded(name, fn),
                    request_deserializer=req.FromString,
                    response_serializer=resp.SerializeToString,
                )
                for name, (fn, req, resp) in methods.items()
            },
        )


class GrpcServer:
    """A started gRPC listener: `.port` (the bound one), `await .stop(grace)`."""

    def __init__(self, server: grpc.aio.Server, port: int) -> None:
        self._server = server
        self.port = port

    async def stop(self, grace: float) -> None:
        await self._server.stop(grace)


async def start_grpc(plane: DataPlane, *, host: str, port: int, max_bytes: int) -> GrpcServer:
    """Listen on host:port (0: any free port) on the running event loop."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers((InferenceService(plane).handler(),))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as err:  # grpc's "Failed to bind to address ..."
        raise OSError(f"cannot listen for gRPC on {address}: {first_line(err)}") from None
    await server.start()
    return GrpcServer(server, bound)
