"""The shim's transport: one model on one Triton server over gRPC (tritonclient), the
`Transport` of dataplane/transport.py."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as grpcclient

from orchestrator.catalog import TensorSpec
from orchestrator.dataplane.transport import Done, Outputs


class TritonTransport:
    """Batches to `model` at `url` (host:port, gRPC); a call fails (gRPC DEADLINE_EXCEEDED) when
    not answered within the timeout it is given, `timeout_s` at most."""

    def __init__(self, url: str, model: str, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...],
                 timeout_s: float):
        self.url, self.model, self.timeout_s = url, model, timeout_s
        self.input_specs, self.output_specs = inputs, outputs
        self._client = grpcclient.InferenceServerClient(url)
        self._requested = [grpcclient.InferRequestedOutput(s.name) for s in outputs]

    def _inputs(self, arrays: dict[str, np.ndarray]) -> list:
        out = []
        for spec in self.input_specs:
            arr = arrays[spec.name]
            inp = grpcclient.InferInput(spec.name, list(arr.shape), spec.dtype)
            inp.set_data_from_numpy(arr)
            out.append(inp)
        return out

    def _outputs(self, result) -> Outputs:
        return {s.name: result.as_numpy(s.name) for s in self.output_specs}

    def infer(self, inputs: dict[str, np.ndarray], timeout_s: float) -> Outputs:
        result = self._client.infer(self.model, self._inputs(inputs), outputs=self._requested,
                                    client_timeout=min(timeout_s, self.timeout_s))
        return self._outputs(result)

    def infer_async(self, inputs: dict[str, np.ndarray], done: Done, timeout_s: float) -> None:
        def callback(result, error) -> None:
            if error is not None:
                done(None, error)
                return
            try:
                outputs = self._outputs(result)
            except Exception as e:  # noqa: BLE001 - a malformed answer is a failed call
                done(None, e)
                return
            done(outputs, None)
        self._client.async_infer(self.model, self._inputs(inputs), callback=callback, outputs=self._requested,
                                 client_timeout=min(timeout_s, self.timeout_s))

    def close(self) -> None:
        self._client.close()


def describe_failure(device_id: str, url: str, variant: str, error: Exception) -> tuple[bool, str]:
    """(whether the device looks unreachable, a one-line message naming it) for a failed call
    (a tritonclient error has `status()` and `message()`; any other exception its text)."""
    status = ""
    if hasattr(error, "status") and callable(error.status):
        status = str(error.status() or "")
    text = error.message() if hasattr(error, "message") and callable(error.message) else str(error)
    unreachable = "UNAVAILABLE" in status or "failed to connect" in text.lower() or "connection refused" in text.lower()
    what = "unreachable" if unreachable else f"failed serving {variant}"
    return unreachable, f"device {device_id} at {url} {what}: {text.strip().splitlines()[0] if text else error!r}"
