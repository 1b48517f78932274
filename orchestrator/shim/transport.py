"""The shim's transport: one model on one Triton server over gRPC (tritonclient), the
`Transport` of dataplane/transport.py."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as grpcclient

from orchestrator.catalog import TensorSpec
from orchestrator.dataplane.transport import Done, Outputs


class TritonTransport:
    """Batches to `model` at `url` (host:port, gRPC); a call longer than `timeout_s` fails."""

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

    def infer(self, inputs: dict[str, np.ndarray]) -> Outputs:
        result = self._client.infer(self.model, self._inputs(inputs), outputs=self._requested,
                                    client_timeout=self.timeout_s)
        return self._outputs(result)

    def infer_async(self, inputs: dict[str, np.ndarray], done: Done) -> None:
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
                                 client_timeout=self.timeout_s)

    def close(self) -> None:
        self._client.close()
