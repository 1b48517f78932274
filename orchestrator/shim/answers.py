"""The client's answers: each request's `Result`, set on its future exactly once, counted, and
recorded in the telemetry the control plane plans from."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import Future, InvalidStateError

import numpy as np

from orchestrator.dataplane.queue import met
from orchestrator.dataplane.status import Status
from orchestrator.shim.result import Result
from orchestrator.shim.worker import RouteKey, ShimRequest
from orchestrator.telemetry import Telemetry


class Answers:
    """Thread-safe. `counts`: submitted, answered, each Status's value, retries, failed calls, ..."""

    def __init__(self, telemetry: Telemetry):
        self.telemetry = telemetry
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    def finish(self, future: Future, family: str, result: Result) -> None:
        self.telemetry.record_result(family, time.time(), result.status, latency_ms=result.latency_ms,
                                     variant=result.variant, device_id=result.device_id)
        with self._lock:
            self.counts["answered"] += 1
            self.counts[result.status.value] += 1
            if future.done():
                self.counts["duplicates" if not future.cancelled() else "cancelled"] += 1
                return
        try:
            future.set_result(result)
        except InvalidStateError:  # cancelled by the caller meanwhile
            self.count("cancelled")

    def served(self, key: RouteKey, batch: list[ShimRequest], outputs: dict[str, np.ndarray], now: float,
               service_s: float) -> None:
        """A batch came back: each request gets its sample of the outputs, ok or late."""
        for i, r in enumerate(batch):
            status = Status.OK if r.deadline_s is None or met(now, r.deadline_s) else Status.LATE
            outs = {name: (arr[i:i + 1] if r.batched else arr[i]) for name, arr in outputs.items()}
            self.finish(r.future, r.family, Result(status, outs, key.variant, key.device_id,
                                                   (now - r.arrival_s) * 1000.0, "", r.id, r.plan_version,
                                                   len(batch), service_s * 1000.0))

    def cut(self, key: RouteKey, r: ShimRequest, now: float, waited_s: float) -> None:
        """Its batch's call was cut at the deadline: a missed deadline, with no outputs."""
        error = (f"Deadline Exceeded: cut at the deadline, {key.variant} on {key.device_id} had not answered "
                 f"in {waited_s * 1000:.0f} ms")
        self.finish(r.future, r.family, Result(Status.DROPPED, None, key.variant, key.device_id,
                                               (now - r.arrival_s) * 1000.0, error, r.id, r.plan_version))

    def dropped(self, key: RouteKey, r: ShimRequest, now: float) -> None:
        """The route's policy found the request can no longer meet its deadline."""
        left_ms = (r.deadline_s - now) * 1000.0 if r.deadline_s is not None else 0.0
        error = f"dropped: {left_ms:.1f} ms left before the deadline, less than {key.variant} on {key.device_id} needs"
        self.finish(r.future, r.family, Result(Status.DROPPED, None, key.variant, key.device_id,
                                               (now - r.arrival_s) * 1000.0, error, r.id, r.plan_version))

    def shed(self, future: Future, family: str, budget_ms: float, request_id: int,
             plan_version: int) -> None:
        """Routing found every route of the family would answer after the deadline (load
        shedding, dataplane/routing.py): answered dropped at once, sent nowhere."""
        error = (f"dropped: every route of {family!r} would answer after the {budget_ms:g} ms deadline "
                 f"(predicted from their queues and batches in flight, plan version {plan_version})")
        self.finish(future, family, Result(Status.DROPPED, None, "", "", 0.0, error, request_id, plan_version))

    def failed(self, key: RouteKey, r: ShimRequest, now: float, message: str) -> None:
        tried = f" (devices tried: {', '.join(r.tried)})" if len(r.tried) > 1 else ""
        self.finish(r.future, r.family, Result(Status.ERROR, None, key.variant, key.device_id,
                                               (now - r.arrival_s) * 1000.0, message + tried, r.id, r.plan_version))

    def unserved(self, future: Future, family: str, latency_ms: float, why: str, request_id: int,
                 plan_version: int) -> None:
        """No route of the plan serves the request's family."""
        self.finish(future, family, Result(Status.UNSERVED, None, "", "", latency_ms, why, request_id, plan_version))
