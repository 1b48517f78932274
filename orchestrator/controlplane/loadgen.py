"""A bursty open-loop load, for the demo and the end-to-end test: sent to a gateway with stock
tritonclient (as a user's application would), or through an in-process shim `Client`.

Poisson arrivals whose rate follows a square wave: `low_rps` for `low_s` seconds, then `high_rps`
for `high_s` seconds, repeated. Requests go out asynchronously and are never awaited by the
sender (an open loop: a slow server does not slow the arrivals); every answer is counted by its
status (dataplane/status.py values: a gateway's error names its status first, gateway/core.py).
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np

from orchestrator.dataplane.status import STATUS_NAMES

CALL_TIMEOUT_S = 60.0  # a gRPC call the gateway has not answered by then counts as an error


class _GatewaySender:
    """Sends with stock `tritonclient.grpc` `async_infer` to a KServe v2 endpoint at host:port;
    the answer is (status, variant) from the response parameters or the error's message."""

    def __init__(self, url: str, image: np.ndarray):
        import tritonclient.grpc as grpcclient

        self._client = grpcclient.InferenceServerClient(url)
        batch = image[None]
        self._input = grpcclient.InferInput("input", list(batch.shape), "FP32")
        self._input.set_data_from_numpy(batch)

    def send(self, family: str, done) -> None:
        def answered(result, error) -> None:
            if error is not None:
                head = (error.message() or "").split(":", 1)[0]
                done(head if head in STATUS_NAMES else "error", "")
                return
            params = result.get_response().parameters
            met = params["deadline_met"].bool_param if "deadline_met" in params else True
            done("ok" if met else "late", params["variant"].string_param if "variant" in params else "")

        self._client.async_infer(family, [self._input], answered, client_timeout=CALL_TIMEOUT_S)

    def close(self) -> None:
        self._client.close()


class _ShimSender:
    """Sends with an in-process shim `Client.infer_async`."""

    def __init__(self, client, image: np.ndarray):
        self._client = client
        self._image = image

    def send(self, family: str, done) -> None:
        fut = self._client.infer_async(family, self._image)  # RuntimeError once the client closed
        fut.add_done_callback(lambda f: done(f.result().status.value, f.result().variant or ""))

    def close(self) -> None:
        pass


class BurstyLoad:
    """`target`: a gateway's gRPC address "host:port", or a shim `Client`."""

    def __init__(self, target, family: str, low_rps: float, high_rps: float, low_s: float = 40.0,
                 high_s: float = 30.0, seed: int = 0, image_shape=(3, 224, 224)):
        self.family = family
        self.low_rps, self.high_rps = low_rps, high_rps
        self.low_s, self.high_s = low_s, high_s
        self._rng = np.random.default_rng(seed)
        image = self._rng.standard_normal(image_shape).astype(np.float32)
        self._sender = _GatewaySender(target, image) if isinstance(target, str) else _ShimSender(target, image)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.sent = 0
        self.answers: Counter[str] = Counter()  # status -> count
        self.variants: Counter[str] = Counter()
        self.started = 0.0

    def rate_at(self, elapsed: float) -> float:
        period = self.low_s + self.high_s
        return self.low_rps if elapsed % period < self.low_s else self.high_rps

    def phase(self) -> str:
        return "spike" if self.rate_at(time.monotonic() - self.started) == self.high_rps else "calm"

    def start(self) -> "BurstyLoad":
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="bursty-load", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            rate = self.rate_at(next_at - self.started)
            next_at += self._rng.exponential(1.0 / rate) if rate > 0 else 0.1
            delay = next_at - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            if rate <= 0:
                continue
            with self._lock:
                self.sent += 1
            try:
                self._sender.send(self.family, self._answered)
            except RuntimeError:  # the client closed under us
                with self._lock:
                    self.sent -= 1
                return

    def _answered(self, status: str, variant: str) -> None:
        with self._lock:
            self.answers[status] += 1
            if variant and status in ("ok", "late"):
                self.variants[variant] += 1

    def stop(self, wait_s: float = 30.0) -> None:
        """Stop sending, then wait (up to `wait_s`) for the requests in flight to be answered."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and self.answered() < self.sent:
            time.sleep(0.05)
        self._sender.close()

    def answered(self) -> int:
        with self._lock:
            return sum(self.answers.values())
