"""A bursty open-loop load, for the demo and the end-to-end test: sent to a gateway with stock
tritonclient (gateway/remote.py, as a user's application would), or through an in-process shim
`Client`: either one's `infer_async`.

Poisson arrivals whose rate follows a square wave: `low_rps` for `low_s` seconds, then `high_rps`
for `high_s` seconds, repeated. Requests go out asynchronously and are never awaited by the
sender (an open loop: a slow server does not slow the arrivals); every answer is counted by its
status.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np

from orchestrator.gateway.remote import RemoteGateway


class BurstyLoad:
    """`target`: a gateway's gRPC address "host:port" (reached with tritonclient), or a shim `Client`."""

    def __init__(self, target, family: str, low_rps: float, high_rps: float, low_s: float = 40.0,
                 high_s: float = 30.0, seed: int = 0, image_shape=(3, 224, 224)):
        self.family = family
        self.low_rps, self.high_rps = low_rps, high_rps
        self.low_s, self.high_s = low_s, high_s
        self._rng = np.random.default_rng(seed)
        self._image = self._rng.standard_normal(image_shape).astype(np.float32)
        self._remote = RemoteGateway(target) if isinstance(target, str) else None
        self._target = self._remote or target
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
            try:
                fut = self._target.infer_async(self.family, self._image)
            except RuntimeError:  # the client closed under us
                return
            with self._lock:
                self.sent += 1
            fut.add_done_callback(self._answered)

    def _answered(self, fut) -> None:
        result = fut.result()
        with self._lock:
            self.answers[result.status.value] += 1
            if result.variant and result.status.answered:
                self.variants[result.variant] += 1

    def stop(self, wait_s: float = 30.0) -> None:
        """Stop sending, then wait (up to `wait_s`) for the requests in flight to be answered."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and self.answered() < self.sent:
            time.sleep(0.05)
        if self._remote is not None:
            self._remote.close()

    def answered(self) -> int:
        with self._lock:
            return sum(self.answers.values())
