"""How a route sends a batch: the `Transport` a driver gives each (device, variant) route. The
shim's is Triton over gRPC (shim/transport.py); `FakeTransport` answers in-process, for fast tests
of the data plane's logic (integration tests keep the real Triton)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

import numpy as np

from orchestrator.catalog import TensorSpec

Outputs = dict[str, np.ndarray]
Done = Callable[[Outputs | None, Exception | None], None]


class Transport(Protocol):
    """Sends batches to one model on one device. `inputs` are batched arrays by input name;
    outputs come back by output name, batch first. A call not answered within `timeout_s`
    seconds fails (the route worker passes its batch's deadline)."""

    def infer(self, inputs: dict[str, np.ndarray], timeout_s: float) -> Outputs:
        """Send and wait; raises on failure."""
        ...

    def infer_async(self, inputs: dict[str, np.ndarray], done: Done, timeout_s: float) -> None:
        """Send; `done(outputs, None)` or `done(None, error)` is called once, from any thread."""
        ...

    def close(self) -> None: ...


class FakeTransport:
    """Answers every batch with zeros of the outputs' shapes after `latency_s(batch size)`
    seconds (0: at once, in the sending thread), and records the batch sizes it was sent.
    `fail`, when set, is raised for every batch instead; a call slower than its timeout fails
    with `TimeoutError` once the timeout has passed, as a gRPC deadline does."""

    def __init__(self, outputs: tuple[TensorSpec, ...], latency_s: Callable[[int], float] = lambda n: 0.0):
        self.outputs = outputs
        self.latency_s = latency_s
        self.batches: list[int] = []
        self.fail: Exception | None = None
        self._lock = threading.Lock()

    def _answer(self, n: int) -> Outputs:
        if self.fail is not None:
            raise self.fail
        return {s.name: np.zeros((n, *(d if d > 0 else 1 for d in s.shape)), dtype=np.float32)
                for s in self.outputs}

    def _batch_size(self, inputs: dict[str, np.ndarray]) -> int:
        n = len(next(iter(inputs.values())))
        with self._lock:
            self.batches.append(n)
        return n

    def infer(self, inputs: dict[str, np.ndarray], timeout_s: float) -> Outputs:
        n = self._batch_size(inputs)
        delay = self.latency_s(n)
        if delay > 0:
            threading.Event().wait(min(delay, timeout_s))
        if delay > timeout_s:
            raise TimeoutError(f"Deadline Exceeded: no answer within {timeout_s * 1000:.0f} ms")
        return self._answer(n)

    def infer_async(self, inputs: dict[str, np.ndarray], done: Done, timeout_s: float) -> None:
        n = self._batch_size(inputs)
        delay = self.latency_s(n)

        def answer() -> None:
            try:
                if delay > timeout_s:
                    raise TimeoutError(f"Deadline Exceeded: no answer within {timeout_s * 1000:.0f} ms")
                outputs = self._answer(n)
            except Exception as e:  # noqa: BLE001 - handed to the route, as a failed call
                done(None, e)
                return
            done(outputs, None)
        delay = min(delay, timeout_s)
        if delay > 0:
            timer = threading.Timer(delay, answer)
            timer.daemon = True
            timer.start()
        else:
            answer()

    def close(self) -> None:
        pass
