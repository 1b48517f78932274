"""The gateway's KServe v2 gRPC endpoint (Triton's `inference.GRPCInferenceService`, from the
stubs that ship with tritonclient): ServerLive, ServerReady, ServerMetadata, ModelReady,
ModelMetadata, ModelConfig, ModelInfer and ModelStreamInfer. Errors abort the call with the
status Triton gives (core.Code) and a one-line message.
"""

from __future__ import annotations

import logging
from concurrent import futures

import grpc
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from orchestrator.gateway.core import VERSION, Code, Gateway, GatewayError
from orchestrator.gateway.tensors import grpc_parameter, grpc_response, parse_grpc

log = logging.getLogger(__name__)

MAX_MESSAGE = 256 << 20  # bytes, each way


def _abort(context, e: GatewayError):
    context.abort(getattr(grpc.StatusCode, e.code.grpc), e.message)


class _Service(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, gateway: Gateway):
        self.gateway = gateway

    def _call(self, context, fn):
        try:
            return fn()
        except GatewayError as e:
            _abort(context, e)
        except grpc.RpcError:
            raise
        except Exception as e:  # never a stack trace to the client
            log.exception("gateway: gRPC call failed")
            _abort(context, GatewayError(Code.INTERNAL, f"internal error: {type(e).__name__}"))

    def ServerLive(self, request, context):  # noqa: N802 (the service's names)
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):  # noqa: N802
        return service_pb2.ServerReadyResponse(ready=self.gateway.ready())

    def ServerMetadata(self, request, context):  # noqa: N802
        return service_pb2.ServerMetadataResponse(name="orchestrator", version=VERSION,
                                                  extensions=["binary_tensor_data"])

    def ModelReady(self, request, context):  # noqa: N802
        return service_pb2.ModelReadyResponse(ready=self.gateway.model_ready(request.name, request.version))

    def ModelMetadata(self, request, context):  # noqa: N802
        def metadata():
            m = self.gateway.metadata(request.name, request.version)
            tensor = service_pb2.ModelMetadataResponse.TensorMetadata
            return service_pb2.ModelMetadataResponse(
                name=m["name"], versions=m["versions"], platform=m["platform"],
                inputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in m["inputs"]],
                outputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in m["outputs"]])
        return self._call(context, metadata)

    def ModelConfig(self, request, context):  # noqa: N802
        def config():
            c = self.gateway.config(request.name, request.version)

            def tensors(kind, rows):
                return [kind(name=t["name"], data_type=model_config_pb2.DataType.Value(t["data_type"]), dims=t["dims"])
                        for t in rows]
            return service_pb2.ModelConfigResponse(config=model_config_pb2.ModelConfig(
                name=c["name"], platform=c["platform"], max_batch_size=c["max_batch_size"],
                input=tensors(model_config_pb2.ModelInput, c["input"]),
                output=tensors(model_config_pb2.ModelOutput, c["output"])))
        return self._call(context, config)

    def _infer(self, request):
        """A ModelInferRequest's ModelInferResponse; GatewayError when it fails."""
        with self.gateway.metrics.request(request.model_name, request.model_version, "grpc") as outcome:
            inputs = parse_grpc(request)
            outputs = [o.name for o in request.outputs] or None
            classes = {o.name: o.parameters["classification"].int64_param for o in request.outputs
                       if "classification" in o.parameters}
            serve_late = "serve_late" in request.parameters and request.parameters["serve_late"].bool_param
            answer = outcome.answer = self.gateway.infer(request.model_name, inputs, outputs,
                                                         deadline_ms=grpc_parameter(request, "deadline_ms"),
                                                         version=request.model_version, serve_late=serve_late,
                                                         classification=classes)
        return grpc_response(answer, request.id, service_pb2)

    def ModelInfer(self, request, context):  # noqa: N802
        return self._call(context, lambda: self._infer(request))

    def ModelStreamInfer(self, request_iterator, context):  # noqa: N802
        """One answer per request, in order; a failed request is an `error_message` answer and
        the stream goes on, as Triton's."""
        for request in request_iterator:
            try:
                yield service_pb2.ModelStreamInferResponse(infer_response=self._infer(request))
            except GatewayError as e:
                yield service_pb2.ModelStreamInferResponse(error_message=e.message)
            except Exception as e:  # never a stack trace to the client
                log.exception("gateway: streamed inference failed")
                yield service_pb2.ModelStreamInferResponse(error_message=f"internal error: {type(e).__name__}")


class GrpcEndpoint:
    """Serves `gateway` over gRPC at host:port (0: a free port, then `.port`) until `close`."""

    def __init__(self, gateway: Gateway, host: str = "127.0.0.1", port: int = 8001, workers: int = 32):
        options = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gateway-grpc"),
                                   options=options)
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(_Service(gateway), self._server)
        self.host = host
        try:
            self.port: int = self._server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:  # grpcio raises where older versions returned 0
            self.port = 0
        if self.port == 0:
            raise OSError(f"address {host}:{port} is in use or not available for gRPC")
        self._server.start()

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"

    def close(self, grace_s: float = 1.0) -> None:
        self._server.stop(grace_s).wait()
