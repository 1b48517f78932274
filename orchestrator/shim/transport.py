"""The shim's transport: one model on one Triton server over gRPC (tritonclient), the
`Transport` of dataplane/transport.py."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as grpcclient

from orchestrator.catalog import TensorSpec
from orchestrator.dataplane.transport import Done, Outputs, QueueTimeout

EXPIRED_MESSAGE = "Request timeout expired"  # Triton's answer to a request its queue policy timed out


def queue_timeout_us(queue_timeout_s: float | None) -> int | None:
    """Triton's per-request timeout (microseconds, at least 1; 0 would mean none) for a batch
    that must start within `queue_timeout_s`; None: no limit. The model's queue policy must allow
    the override (triton/control.py, `apply_instance_config`)."""
    if queue_timeout_s is None or queue_timeout_s == float("inf"):
        return None
    return max(1, int(queue_timeout_s * 1e6))


def as_queue_timeout(error: Exception) -> Exception:
    """`QueueTimeout` for Triton's rejection of a request that waited past its timeout (gRPC
    UNAVAILABLE, which must not pass for an unreachable server); any other error as it is."""
    text = error.message() if hasattr(error, "message") and callable(error.message) else str(error)
    if text and EXPIRED_MESSAGE in text:
        return QueueTimeout(text.strip())
    return error


class TritonTransport:
    """Batches to `model` at `url` (host:port, gRPC); a call fails (gRPC DEADLINE_EXCEEDED) when
    not answered within the timeout it is given, `timeout_s` at most, and with `QueueTimeout`
    when Triton had not started it within its queue timeout."""

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

    def infer(self, inputs: dict[str, np.ndarray], timeout_s: float, queue_timeout_s: float | None = None) -> Outputs:
        try:
            result = self._client.infer(self.model, self._inputs(inputs), outputs=self._requested,
                                        client_timeout=min(timeout_s, self.timeout_s),
                                        timeout=queue_timeout_us(queue_timeout_s))
        except Exception as e:  # noqa: BLE001 - re-raised, as a QueueTimeout where it is one
            raise as_queue_timeout(e) from None
        return self._outputs(result)

    def infer_async(self, inputs: dict[str, np.ndarray], done: Done, timeout_s: float,
                    queue_timeout_s: float | None = None) -> None:
        def callback(result, error) -> None:
            if error is not None:
                done(None, as_queue_timeout(error))
                return
            try:
                outputs = self._outputs(result)
            except Exception as e:  # noqa: BLE001 - a malformed answer is a failed call
                done(None, e)
                return
            done(outputs, None)
        self._client.async_infer(self.model, self._inputs(inputs), callback=callback, outputs=self._requested,
                                 client_timeout=min(timeout_s, self.timeout_s),
                                 timeout=queue_timeout_us(queue_timeout_s))

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
