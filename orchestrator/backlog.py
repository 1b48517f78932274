"""When a request sent to a route now would be answered: the on-time test of accuracy-first routing.

The shim's route workers (shim/worker.py) and the simulator's routes (simulator.py) keep the same
state (`InFlight`: each route's batches in flight, their earliest and latest predicted finish kept
up to date), and both ask `answer_by` before routing a request (routing.py `AccuracyFirst`,
`budget_use`).
The estimate counts, from the profile's batch latencies:

* the route's own work: its batches in flight (their predicted finish times; when the oldest is
  already overdue the others wait that much longer) and its queue, cut into batches of its cap,
  then the batch the new request would join;
* the device's other routes: only their batches *in flight*. What they hold in their own shim
  queues is not ahead of this request at the device (Triton runs each model's batches as they
  arrive; the shim holds the rest back).

It leaves out what the batching policy adds on purpose (holding a queue to fill a batch) and
what the profile does not know (other jobs on the device's cores, a device slower than when it
was profiled). `Calibration` learns that per route: the ratio of the actual answer time to the
predicted one over the requests the route answered (or dropped) lately, which scales the estimate.
The share of its time budget a request would use on a route is
`ratio x (answer_by - arrival) / (deadline - slack - arrival)`: at most 1 is on time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

CALIBRATION_ALPHA = 0.05  # weight of the newest request in the running actual / predicted ratio
CALIBRATION_RANGE = (0.5, 4.0)  # the ratio stays within this (one odd request moves it little)


class InFlight:
    """One route's batches in flight: their predicted finish times (key -> time), with the
    earliest and the latest kept as batches are sent and answered, so that the per-request
    prediction (`seconds`) reads two numbers instead of going over the batches."""

    __slots__ = ("finish_at", "first", "last")

    def __init__(self) -> None:
        self.finish_at: dict[int, float] = {}  # e.g. id(batch) -> predicted finish
        self.first: float | None = None  # the earliest of them (None: nothing in flight)
        self.last: float | None = None  # the latest

    def __len__(self) -> int:
        return len(self.finish_at)

    def add(self, key: int, finish_s: float) -> None:
        self.finish_at[key] = finish_s
        if self.first is None or finish_s < self.first:
            self.first = finish_s
        if self.last is None or finish_s > self.last:
            self.last = finish_s

    def remove(self, key: int) -> None:
        """Forget a batch (answered or failed); a key not in flight is ignored."""
        finish_at = self.finish_at
        f = finish_at.pop(key, None)
        if f is not None and (f == self.first or f == self.last):
            if finish_at:
                self.first = min(finish_at.values())
                self.last = max(finish_at.values())
            else:
                self.first = self.last = None

    def seconds(self, now: float) -> float:
        """Time left on the batches in flight (they run one after the other): until the last
        one's predicted finish, plus however late the oldest already is (it is still running,
        and the others wait for it)."""
        last = self.last
        if last is None:
            return 0.0
        first = self.first
        return (last - now if last > now else 0.0) + (now - first if first < now else 0.0)

    def start_s(self, lanes: int) -> float | None:
        """With `lanes` batches running at once (the route's instances) and every one busy, when
        a batch sent now would start: when the batch ahead of it finishes (predicted). None
        while a lane is free."""
        k = len(self.finish_at) - lanes
        if k < 0 or not self.finish_at:
            return None
        return self.first if k == 0 else sorted(self.finish_at.values())[k]


def answer_by(now: float, queued: int, batch_cap: int, seconds: Callable[[int], float],
              own_in_flight_s: float, others_in_flight_s: Iterable[float]) -> float:
    """Predicted time a request sent to the route at `now` is answered (before calibration).

    `queued`: requests waiting in the route's queue (not yet sent); `seconds(b)`: the route's
    predicted latency of a batch of b; `own_in_flight_s`: time left on the route's batches in
    flight (`InFlight.seconds`); `others_in_flight_s`: the same for each of the device's other
    routes."""
    if queued:
        cap = batch_cap if batch_cap > 1 else 1
        full, rest = divmod(queued, cap)
        work = full * seconds(cap) + seconds(rest + 1) + own_in_flight_s
    else:  # the same sum without a queue: 0 x seconds(cap) + seconds(1) + ...
        work = seconds(1) + own_in_flight_s
    for s in others_in_flight_s:
        work += s
    return now + work


class Calibration:
    """Actual / predicted answer time of one route's requests (from arrival), exponentially
    weighted; 1 until the route has answered something."""

    __slots__ = ("ratio",)

    def __init__(self) -> None:
        self.ratio = 1.0

    def observe(self, actual_s: float, predicted_s: float) -> None:
        if predicted_s <= 0 or actual_s <= 0:
            return
        r = min(CALIBRATION_RANGE[1], max(CALIBRATION_RANGE[0], actual_s / predicted_s))
        self.ratio += CALIBRATION_ALPHA * (r - self.ratio)

    def answered(self, batch, now: float) -> None:
        """Fold in a batch answered at `now` (requests with `arrival_s` and `predicted_by`; those
        routed without a prediction are skipped)."""
        lo, hi = CALIBRATION_RANGE
        ratio = self.ratio
        for r in batch:  # `observe` inlined: this runs per request
            if r.predicted_by is not None:
                actual, predicted = now - r.arrival_s, r.predicted_by - r.arrival_s
                if not (predicted <= 0 or actual <= 0):
                    ratio += CALIBRATION_ALPHA * (min(hi, max(lo, actual / predicted)) - ratio)
        self.ratio = ratio

    def dropped(self, request, now: float, batch_of_one_s: float) -> None:
        """Fold in a request dropped at `now`: it would have been answered one batch of one
        (`batch_of_one_s`) later at the earliest."""
        if request.predicted_by is not None:
            self.observe(now + batch_of_one_s - request.arrival_s, request.predicted_by - request.arrival_s)

    def budget_use(self, arrival_s: float, predicted_by: float, limit_s: float) -> float:
        """The share of its budget (arrival to `limit_s`) a request predicted (uncalibrated) to
        be answered at `predicted_by` would use; infinite when it has no budget left."""
        budget = limit_s - arrival_s
        return self.ratio * (predicted_by - arrival_s) / budget if budget > 0 else math.inf
