"""When a request sent to a route now would be answered: the on-time test of accuracy-first routing.

The shim's route workers (shim/worker.py) and the simulator's routes (simulation/devices.py `SimRoute`) keep the same
state (`InFlight`: each route's batches in flight, their earliest and latest predicted finish kept
up to date), and both ask `answer_by` before routing a request (routing.py `AccuracyFirst`,
`budget_use`).
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
from typing import Final

from orchestrator.dataplane.latency import LatencyModel

CALIBRATION_ALPHA: Final = 0.05  # weight of the newest batch in the running actual / predicted ratio
CALIBRATION_RANGE = (0.5, 4.0)  # the ratio stays within this (one odd batch moves it little)
CALIBRATION_IDLE_S: Final = 5.0  # after this long without an answered batch the ratio relaxes towards 1, halving its
# distance every as many seconds: a route judged too slow to be sent anything would otherwise keep that judgement


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
        f = finish_at.get(key)  # get and del, not pop: compiled, pop is a method call by name
        if f is None:
            return
        del finish_at[key]
        if f == self.first or f == self.last:
            if finish_at:
                self.first = min(finish_at.values())
                self.last = max(finish_at.values())
            else:
                self.first = self.last = None

    def seconds(self, now: float) -> float:
        """Time left on the batches in flight (they run one after the other): until the last
        one's predicted finish, plus however late the oldest already is (it is still running,
        and the others wait for it)."""
        last, first = self.last, self.first
        if last is None or first is None:
            return 0.0
        return (last - now if last > now else 0.0) + (now - first if first < now else 0.0)

    def start_s(self, lanes: int) -> float | None:
        """With `lanes` batches running at once (the route's instances) and every one busy, when
        a batch sent now would start: when the batch ahead of it finishes (predicted). None
        while a lane is free."""
        k = len(self.finish_at) - lanes
        if k < 0 or not self.finish_at:
            return None
        return self.first if k == 0 else sorted(self.finish_at.values())[k]


def answer_by(now: float, queued: int, batch_cap: int, model: LatencyModel,
              own_in_flight_s: float, busy_others: int) -> float:
    """Predicted time a request sent to the route at `now` is answered (before calibration).

    `queued`: requests waiting in the route's queue (not yet sent); `model.seconds(b)`: the
    route's predicted latency of a batch of b (the device to itself; the model, not a callable,
    so that the compiled form calls it directly); `own_in_flight_s`: time left on
    the route's batches in flight (`InFlight.seconds`); `busy_others`: how many of the device's
    other routes have a batch in flight."""
    if queued:
        cap = batch_cap if batch_cap > 1 else 1
        full, rest = divmod(queued, cap)
        work = full * model.seconds(cap) + model.seconds(rest + 1) + own_in_flight_s
    else:  # the same sum without a queue: 0 x seconds(cap) + seconds(1) + ...
        work = model.seconds(1) + own_in_flight_s
    return now + work * (1 + busy_others)


class Calibration:
    """Actual / predicted time of one route's batches (sent to answered), exponentially
    weighted; 1 until the route has answered something. Without an answered batch for
    `CALIBRATION_IDLE_S` it relaxes towards 1 (`at`): a route found slow (a burst's batches
    shared its device) and then passed over gets no batch to show it is fast again, so after a
    while it is tried again, and one slow batch raises the ratio again."""

    __slots__ = ("ratio", "seen_s")

    def __init__(self) -> None:
        self.ratio = 1.0
        self.seen_s = -math.inf  # when the last batch was answered

    def at(self, now: float) -> float:
        """The ratio at `now`: as learned, or relaxed towards 1 after `CALIBRATION_IDLE_S` idle."""
        idle = now - self.seen_s - CALIBRATION_IDLE_S
        if idle <= 0.0 or self.ratio == 1.0 or self.seen_s == -math.inf:
            return self.ratio
        return 1.0 + (self.ratio - 1.0) * 0.5 ** (idle / CALIBRATION_IDLE_S)

    def observe(self, actual_s: float, predicted_s: float) -> None:
        if predicted_s <= 0 or actual_s <= 0:
            return
        r = min(CALIBRATION_RANGE[1], max(CALIBRATION_RANGE[0], actual_s / predicted_s))
        self.ratio += CALIBRATION_ALPHA * (r - self.ratio)

    def answered(self, sent_s: float, predicted_s: float, now: float) -> None:
        """Fold in a batch answered at `now`, sent at `sent_s` and predicted then to take
        `predicted_s` (`sent_s` to answer: waiting for an instance, then running)."""
        self.ratio = self.at(now)
        self.seen_s = now
        self.observe(now - sent_s, predicted_s)

    def budget_use(self, arrival_s: float, predicted_by: float, limit_s: float) -> float:
        """The share of its budget (arrival to `limit_s`) a request predicted (uncalibrated) to
        be answered at `predicted_by` would use; infinite when it has no budget left."""
        budget = limit_s - arrival_s
        return self.at(arrival_s) * (predicted_by - arrival_s) / budget if budget > 0 else math.inf
