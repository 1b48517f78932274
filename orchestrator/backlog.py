"""When a request sent to a route now would be answered: the on-time test of accuracy-first routing.

The shim's route workers (shim/worker.py) and the simulator's routes (simulator.py) keep the same
state, and both ask `answer_by` before routing a request (routing.py `AccuracyFirst`, `budget_use`).
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


def in_flight_s(now: float, finish_at: Iterable[float]) -> float:
    """Time left on one route's batches in flight (they run one after the other): until the
    last one's predicted finish, plus however late the oldest already is (it is still running,
    and the others wait for it)."""
    first = last = None
    for f in finish_at:
        if first is None or f < first:
            first = f
        if last is None or f > last:
            last = f
    if last is None:
        return 0.0
    return (last - now if last > now else 0.0) + (now - first if first < now else 0.0)


def answer_by(now: float, queued: int, batch_cap: int, seconds: Callable[[int], float],
              own_finish_at: Iterable[float], others_finish_at: Iterable[Iterable[float]]) -> float:
    """Predicted time a request sent to the route at `now` is answered (before calibration).

    `queued`: requests waiting in the route's queue (not yet sent); `seconds(b)`: the route's
    predicted latency of a batch of b; `own_finish_at`: predicted finish times of the route's
    batches in flight; `others_finish_at`: the same for each of the device's other routes."""
    cap = max(1, batch_cap)
    full, rest = divmod(queued, cap)
    work = full * seconds(cap) + seconds(rest + 1) + in_flight_s(now, own_finish_at)
    for finish_at in others_finish_at:
        work += in_flight_s(now, finish_at)
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
        for r in batch:
            if r.predicted_by is not None:
                self.observe(now - r.arrival_s, r.predicted_by - r.arrival_s)

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
