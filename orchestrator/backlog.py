"""When a request sent to a route now would be answered: the on-time test of accuracy-first routing.

The shim's route workers (shim/worker.py) and the simulator's routes (simulator.py) keep the same
state, and both ask `answer_by` before routing a request (routing.py `AccuracyFirst`, `budget_use`).
The estimate is the route's own work ahead of the request, from the profile's batch latencies:
its batches in flight (their predicted finish times; when the oldest is already overdue the
others wait that much longer), its queue cut into batches of its cap, and the batch the request
would join; stretched by the device's *sharing*: a device runs the batches of the models it
hosts side by side, each at an equal share of its speed (processor sharing), so while k other
models run a batch, this route's work takes (1 + k) times as long. The k models busy now are
assumed to stay busy through the request's work (true of a loaded device, pessimistic when
they are about to finish). What the other models hold in their own shim queues is not ahead of
this request (Triton runs each model's batches as they arrive; the shim holds the rest back).

It leaves out what the batching policy adds on purpose (holding a queue to fill a batch) and
what the profile does not know (other jobs on the device's cores, a device slower than when it
was profiled). `Calibration` learns the latter per route: the ratio of each batch's actual time
(sent to answered) to the time predicted for it when it was sent (the same sharing rule), over
the batches the route answered lately, which scales the estimate. A batch's time, not a
request's: a request's time also counts the hold, which the policy chooses and keeps within
the deadline, and a route that holds (a spill route batching a burst) would look slow for it.
The share of its time budget a request would use on a route is
`ratio x (answer_by - arrival) / (deadline - slack - arrival)`: at most 1 is on time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

CALIBRATION_ALPHA = 0.05  # weight of the newest batch in the running actual / predicted ratio
CALIBRATION_RANGE = (0.5, 4.0)  # the ratio stays within this (one odd batch moves it little)


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
              own_finish_at: Iterable[float], busy_others: int) -> float:
    """Predicted time a request sent to the route at `now` is answered (before calibration).

    `queued`: requests waiting in the route's queue (not yet sent); `seconds(b)`: the route's
    predicted latency of a batch of b (the device to itself); `own_finish_at`: predicted
    finish times of the route's batches in flight; `busy_others`: how many of the device's
    other routes have a batch in flight."""
    cap = max(1, batch_cap)
    full, rest = divmod(queued, cap)
    work = full * seconds(cap) + seconds(rest + 1) + in_flight_s(now, own_finish_at)
    return now + work * (1 + busy_others)


class Calibration:
    """Actual / predicted time of one route's batches (sent to answered), exponentially
    weighted; 1 until the route has answered something."""

    __slots__ = ("ratio",)

    def __init__(self) -> None:
        self.ratio = 1.0

    def observe(self, actual_s: float, predicted_s: float) -> None:
        if predicted_s <= 0 or actual_s <= 0:
            return
        r = min(CALIBRATION_RANGE[1], max(CALIBRATION_RANGE[0], actual_s / predicted_s))
        self.ratio += CALIBRATION_ALPHA * (r - self.ratio)

    def answered(self, sent_s: float, predicted_s: float, now: float) -> None:
        """Fold in a batch answered at `now`, sent at `sent_s` and predicted then to take
        `predicted_s` (`sent_s` to answer: waiting for an instance, then running)."""
        self.observe(now - sent_s, predicted_s)

    def budget_use(self, arrival_s: float, predicted_by: float, limit_s: float) -> float:
        """The share of its budget (arrival to `limit_s`) a request predicted (uncalibrated) to
        be answered at `predicted_by` would use; infinite when it has no budget left."""
        budget = limit_s - arrival_s
        return self.ratio * (predicted_by - arrival_s) / budget if budget > 0 else math.inf
