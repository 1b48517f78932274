"""A gateway as the load generator and the live bench reach it: over the network with stock
`tritonclient.grpc`, as an application would, behind the shim `Client`'s one method
`infer_async(family, inputs, deadline_ms) -> Future[Result]`, so that either drives them.

Each answer becomes the `Result` the shim would have given: the response parameters (variant,
device, service_ms, batch_size, plan_version, deadline_met) for an answer; for an error the
status its message starts with (the gateway names the data plane's status first: core.py), else
error. Latency is the client's: from the call to the answer. A call the gateway has not
answered in `call_timeout_s` is an error.
"""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import Future

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from orchestrator.dataplane.status import STATUS_NAMES, Status
from orchestrator.gateway.core import NUMPY_TO_TRITON
from orchestrator.shim.result import Result


class RemoteGateway:
    """Sends one sample per request to the KServe v2 gRPC endpoint at `url` (host:port)."""

    def __init__(self, url: str, call_timeout_s: float = 60.0):
        self.url = url
        self._client = grpcclient.InferenceServerClient(url)
        self._timeout_s = call_timeout_s
        self._inputs: dict[str, str] = {}  # family -> its input's name, from the model metadata
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def _input_name(self, family: str) -> str:
        with self._lock:
            name = self._inputs.get(family)
        if name is None:
            name = self._client.get_model_metadata(family).inputs[0].name
            with self._lock:
                self._inputs[family] = name
        return name

    def infer_async(self, family: str, inputs: np.ndarray, deadline_ms: float | None = None) -> Future:
        """One sample (no batch dimension); the Future resolves to its Result, exactly once."""
        request_id = next(self._ids)
        future: Future = Future()
        started = time.perf_counter()
        try:
            name = self._input_name(family)
        except InferenceServerException as e:  # the gateway does not serve the family (yet)
            future.set_result(_result(None, e, request_id, (time.perf_counter() - started) * 1000.0))
            return future
        batch = np.ascontiguousarray(inputs[None])
        tensor = grpcclient.InferInput(name, list(batch.shape), NUMPY_TO_TRITON.get(batch.dtype.str, "FP32"))
        tensor.set_data_from_numpy(batch)

        def answered(result, error) -> None:
            latency_ms = (time.perf_counter() - started) * 1000.0
            future.set_result(_result(result, error, request_id, latency_ms))

        parameters = {"deadline_ms": deadline_ms} if deadline_ms is not None else None
        self._client.async_infer(family, [tensor], answered, parameters=parameters, client_timeout=self._timeout_s)
        return future

    def close(self) -> None:
        self._client.close()


def _result(result, error, request_id: int, latency_ms: float) -> Result:
    if error is not None:
        message = error.message() or str(error)
        head = message.split(":", 1)[0]
        status = Status(head) if head in STATUS_NAMES else Status.ERROR
        return Result(status, None, "", "", latency_ms, error=message, request_id=request_id)
    params = result.get_response().parameters

    def param(name: str, kind: str, default):
        return getattr(params[name], kind) if name in params else default

    outputs = {o.name: result.as_numpy(o.name) for o in result.get_response().outputs}
    late = not param("deadline_met", "bool_param", True)
    return Result(Status.LATE if late else Status.OK, outputs, param("variant", "string_param", ""),
                  param("device", "string_param", ""), latency_ms, request_id=request_id,
                  plan_version=param("plan_version", "int64_param", 0),
                  batch_size=param("batch_size", "int64_param", 0),
                  service_ms=param("service_ms", "double_param", 0.0))
