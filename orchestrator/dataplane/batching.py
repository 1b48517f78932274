"""Batching policies for one (device, variant) route: pure decision code, no I/O, no clock.

The shim's route workers, the gateway and the simulator run the *same* policy objects; time is
always passed in (seconds, any origin). Latencies from profiles are in milliseconds and
converted at the edge (`LatencyModel.seconds`).

The contract, one policy object per route:

* ``decide(queue, now, can_send=True, start_s=None) -> Decision`` — `queue` holds the route's
  waiting requests (`Queued`: ``id``, ``arrival_s``, ``deadline_s`` (None: no deadline) and
  ``serve_late``), in arrival order: a `RouteQueue` (it also keeps the deadline order, so a
  decision costs no sort) or any iterable; `can_send` says whether the route has a free slot for
  a batch right now; `start_s`, when the device is still busy, when a batch sent now would start
  running (a driver that queues one batch ahead at Triton, so the device never idles between
  batches). The decision says which ids to send as one batch now, which to answer at once as
  deadline misses, and when to call again if nothing else happens (a new arrival or a finished
  batch are the other reasons).
* ``observe(batch_size, latency_s)`` — called after each batch completes.

Policies:

* `ProteusPolicy` (Proteus, ASPLOS'24): hold the queue as long as the earliest deadline allows
  (with room for the batch to run `HOLD_FACTOR` x slower than predicted), then send the largest
  batch (<= the plan's batch cap) whose profiled latency still meets it; a request that can no
  longer meet its deadline even alone is dropped (answered with a deadline miss at once) unless
  its caller asked to have it served late. Under overload it passes over the most urgent
  requests when that lets a larger batch meet its deadlines.
* `AimdPolicy` (Clipper, NSDI'17): send at once, at most the current batch limit; the limit grows
  by one after a batch within the SLO and shrinks by 10 % after a batch over it.
* `NoBatchingPolicy`: one request at a time, first come first served.

tests/route_loop.py drives a policy against arrivals on one route; it documents how a driver
calls `decide`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from itertools import islice
from typing import Final

from orchestrator.dataplane.latency import LatencyModel
from orchestrator.dataplane.queue import EPS_S, WAKE_PAST_S, DeadlineKey, Queued, RouteQueue

HOLD_FACTOR: Final = 2.0  # Proteus sends a held batch while it could still run this many times its predicted latency


class Decision:
    """What a policy decided (read-only by convention; one is built per call, so a plain class
    with slots: compiled, mypyc builds it without a Python-level constructor)."""

    __slots__ = ("send", "drop", "wake_at")

    def __init__(self, send: tuple[int, ...] = (), drop: tuple[int, ...] = (), wake_at: float | None = None):
        self.send = send  # ids of one batch to send now, in batch order
        self.drop = drop  # ids to answer at once with a deadline-miss result
        self.wake_at = wake_at  # call decide again at this time (None: on the next arrival/completion)

    def __repr__(self) -> str:
        return f"Decision(send={self.send!r}, drop={self.drop!r}, wake_at={self.wake_at!r})"


_NOTHING = Decision()



class _CostTable:
    """Batch size -> predicted seconds + slack of one latency model (`at`), filled on first use."""

    __slots__ = ("model", "slack_s", "revision", "known", "_costs")

    def __init__(self, model: LatencyModel, slack_s: float):
        self.model = model
        self.slack_s = slack_s
        self.revision = model.revision
        self.known = model.known
        self._costs: list[float] = []  # index: batch size (0 unused)

    def at(self, batch_size: int) -> float:
        costs = self._costs
        while len(costs) <= batch_size:
            costs.append(self.model.seconds(len(costs)) + self.slack_s if costs else 0.0)
        return costs[batch_size]


def _arrival(r: Queued) -> float:
    return r.arrival_s


def _earliest_arrival(requests: list[Queued], start: int) -> float:
    """The earliest arrival among ``requests[start:]`` (a function, not a generator in `decide`:
    compiled, a generator there would cost every call an allocation)."""
    earliest = math.inf
    for i in range(start, len(requests)):
        a = requests[i].arrival_s
        if a < earliest:
            earliest = a
    return earliest


class ProteusPolicy:
    """Deadline-aware adaptive batching after Proteus (ASPLOS'24).

    `slack_s` is a safety margin added to every predicted latency (RPC and scheduling overhead
    the profile does not include).

    `pass_over` (default on): when the earliest deadline only allows a batch smaller than the
    queue could fill, send instead the largest batch of requests that *all* still meet their
    deadlines, passing over the most urgent ones (they are dropped once hopeless). Without it,
    an overloaded queue is served one near-deadline request at a time in tiny batches; with it
    throughput stays near the batch cap's (simulated at 600 rps on a 430 rps device, deadline
    50 ms: miss rate 0.33 instead of 0.70). Below capacity both choose the same batches.

    `hold_factor` (default `HOLD_FACTOR`): a held queue is sent while the batch could still run
    `hold_factor` times its predicted latency and meet the earliest deadline, i.e. at
    ``deadline - hold_factor x predicted``. Proteus holds to the last moment (factor 1), which
    turns any slowdown beyond the profile (CPU contention, a busier device than when profiled)
    into a deadline miss; 2 leaves the batch as much room again. It only moves *when* a held
    batch goes: which batches are feasible, and which requests are hopeless, use factor 1.

    `max_hold_s` (default None: as long as the deadline allows, as in Proteus) bounds how long
    a queue is held past its oldest arrival. Holding only pays when more requests arrive in the
    meantime; with a generous deadline and light load an unbounded hold makes every answer come
    just before its deadline.

    Cost: with a `RouteQueue` a decision reads the deadline order as kept, so it costs the
    hopeless requests it drops plus O(log n + batch cap), not a sort of the queue. Predicted
    costs are cached per batch size (per revision of a learning model); `model` and `slack_s`
    are fixed once the policy is built.
    """

    name = "proteus"

    def __init__(self, model: LatencyModel, batch_cap: int, *, slack_s: float = 0.0, pass_over: bool = True,
                 max_hold_s: float | None = None, hold_factor: float = HOLD_FACTOR):
        self.pass_over = pass_over
        self.max_hold_s = max_hold_s
        if hold_factor < 1:
            raise ValueError(f"hold_factor must be >= 1, got {hold_factor}")
        self.hold_factor = hold_factor
        if batch_cap < 1:
            raise ValueError(f"batch_cap must be >= 1, got {batch_cap}")
        self.model = model
        self.batch_cap = batch_cap
        self.slack_s = slack_s
        self._costs = _CostTable(model, slack_s)

    def decide(self, queue: RouteQueue | Iterable[Queued], now: float, can_send: bool = True,
               start_s: float | None = None) -> Decision:
        if not isinstance(queue, RouteQueue):
            queue = RouteQueue(queue)
        keys = queue.deadline_keys  # (deadline, arrival, insertion) of `timed`, sorted
        timed = queue.by_deadline
        timed_ids = queue.deadline_ids  # their ids (compiled, `r.id` is a lookup by name)
        cost = self._costs  # predicted seconds + slack per batch size, for the model's current points
        if cost.revision != self.model.revision or cost.model is not self.model or cost.slack_s != self.slack_s:
            cost = self._costs = _CostTable(self.model, self.slack_s)
        cost1 = cost.at(1)
        t0 = now if start_s is None or start_s <= now else start_s  # when a batch sent now would start running
        # Requests that cannot make their deadline even alone are a prefix of the deadline order.
        n = len(timed)
        h = 0
        limit = t0 + cost1
        while h < n and limit > keys[h][0] + EPS_S:
            h += 1
        drop: tuple[int, ...] = ()
        late: list[Queued] | None = None  # hopeless but the caller wants them served anyway
        if h:
            hopeless = sorted(range(h), key=queue.seq)  # queue (arrival) order
            drop = tuple(timed_ids[i] for i in hopeless if not timed[i].serve_late)
            late = [timed[i] for i in hopeless if timed[i].serve_late] or None
        feasible = n - h  # timed[h:] by (deadline, arrival)
        wake = keys[h][0] - cost1 + WAKE_PAST_S if feasible else None  # when the most urgent turns hopeless
        if not can_send:
            return Decision((), drop, wake) if drop or wake is not None else _NOTHING

        cap = self.batch_cap
        if late:  # already late: send now, topped up with feasible requests the batch still serves in time
            late.sort(key=_arrival)
            batch = [r.id for r in late[:cap]]
            if feasible and len(batch) < cap:
                d0 = keys[h][0]
                extra = 0
                while len(batch) + extra < cap and extra < feasible and \
                        t0 + cost.at(len(batch) + extra + 1) <= d0 + EPS_S:
                    extra += 1
                batch += timed_ids[h:h + extra]
            return Decision(send=tuple(batch), drop=drop, wake_at=wake)

        no_deadline = queue.no_deadline  # id -> request, queue order
        if not feasible:
            if no_deadline:
                return Decision(send=tuple(islice(no_deadline, cap)), drop=drop)
            return Decision(drop=drop) if drop else _NOTHING

        if not cost.known:  # nothing to predict with: behave like greedy batching
            ids = timed_ids[h:h + cap]
            ids += islice(no_deadline, cap - len(ids))
            return Decision(send=tuple(ids), drop=drop)

        d0 = keys[h][0]  # the binding (earliest) deadline
        most = cap if cap < feasible else feasible
        if self.pass_over and not d0 < t0 + cost.at(most) - EPS_S:  # the usual case: the `most` most urgent all fit
            best, start = most, 0
        else:
            best, start = self._largest_batch(keys, h, n, t0, cost)
        if best < feasible or best == cap:  # the deadline or the cap binds: send now
            return Decision(tuple(timed_ids[h + start:h + start + best]), drop)
        # Every feasible request fits and there is room for more.
        if no_deadline:  # requests without a deadline would rather go now: fill up and send
            fill = best
            while fill < cap and fill - best < len(no_deadline) and t0 + cost.at(fill + 1) <= d0 + EPS_S:
                fill += 1
            ids = timed_ids[h:]
            ids += islice(no_deadline, fill - best)
            return Decision(send=tuple(ids), drop=drop)
        send_by = d0 - cost.at(best) * self.hold_factor  # hold while the batch could run hold_factor x slower
        if self.max_hold_s is not None:
            send_by = min(send_by, _earliest_arrival(timed, h) + self.max_hold_s)
        if now + EPS_S >= send_by:
            return Decision(tuple(timed_ids[h:]), drop)
        return Decision((), drop, send_by if wake is None or send_by < wake else wake)

    def _largest_batch(self, keys: list[DeadlineKey], lo: int, hi: int, now: float,
                       cost: "_CostTable") -> tuple[int, int]:
        """(size, start): the largest batch of the deadline-ordered requests ``keys[lo:hi]`` that
        all meet their deadlines if it starts running at `now` (start counts from `lo`). With
        `pass_over` it may skip the most urgent requests when that serves more of them in one
        batch (they are dropped once hopeless)."""
        count = hi - lo
        n = min(self.batch_cap, count)
        if not self.pass_over:
            d0 = keys[lo][0]
            best = 1
            while best < n and now + cost.at(best + 1) <= d0 + EPS_S:
                best += 1
            return best, 0
        for b in range(n, 0, -1):
            # (x,) sorts before every key whose deadline is >= x: a bisect on the deadlines alone
            start = bisect.bisect_left(keys, (now + cost.at(b) - EPS_S,), lo, hi) - lo
            if count - start >= b:
                return b, start
        return 1, 0

    def observe(self, batch_size: int, latency_s: float) -> None:
        self.model.observe(batch_size, latency_s * 1000.0)


class AimdPolicy:
    """Clipper's AIMD batch sizing: additive increase while batches meet the SLO, multiplicative
    decrease (x `decrease`) when one does not. Sends at once; drops nothing."""

    name = "aimd"

    def __init__(self, batch_cap: int, slo_s: float, *, increase: float = 1.0, decrease: float = 0.9,
                 start: float = 1.0):
        if batch_cap < 1:
            raise ValueError(f"batch_cap must be >= 1, got {batch_cap}")
        self.batch_cap = batch_cap
        self.slo_s = slo_s
        self.increase = increase
        self.decrease = decrease
        self.limit = max(1.0, min(float(batch_cap), start))

    def decide(self, queue: Iterable[Queued], now: float, can_send: bool = True,
               start_s: float | None = None) -> Decision:
        if not can_send:
            return Decision()
        size = max(1, int(self.limit))
        ids: list[int] = []
        for r in queue:  # the queue is in arrival order
            if len(ids) == size:
                break
            ids.append(r.id)
        return Decision(send=tuple(ids))

    def observe(self, batch_size: int, latency_s: float) -> None:
        if latency_s > self.slo_s:
            self.limit = max(1.0, self.limit * self.decrease)
        else:
            self.limit = min(float(self.batch_cap), self.limit + self.increase)


class NoBatchingPolicy:
    """One request per call, first come first served; drops nothing."""

    name = "none"

    def decide(self, queue: Iterable[Queued], now: float, can_send: bool = True,
               start_s: float | None = None) -> Decision:
        if not can_send:
            return Decision()
        for r in queue:
            return Decision(send=(r.id,))
        return Decision()

    def observe(self, batch_size: int, latency_s: float) -> None:
        pass


Policy = ProteusPolicy | AimdPolicy | NoBatchingPolicy


SPILL_BATCHING_GAIN: Final = 1.5  # a spill route holds to batch only if a full batch serves this much more per second


def max_hold_s(spill: bool, max_hold_ms: float | None, model: LatencyModel | None = None,
               batch_cap: int = 1) -> float | None:
    """A route's hold bound (`ShimConfig.max_hold_ms` as configured, None: unbounded). A spill
    route (routing.py) sends at once where batching gains little (throughput at its batch cap
    under `SPILL_BATCHING_GAIN` x that of batch 1, as for the ResNets on a CPU core): its
    requests come short of time already, and it shares a busy device. Where batching pays (GPUs)
    it batches like any route: sending at batch 1 would waste the device time the spill needs."""
    if spill and model is not None and model.known:
        gain = batch_cap * model.seconds(1) / max(model.seconds(batch_cap), 1e-12)
        if gain < SPILL_BATCHING_GAIN:
            return 0.0
    return None if max_hold_ms is None else max_hold_ms / 1000.0


def make_policy(name: str, *, model: LatencyModel, batch_cap: int, slo_s: float | None,
                slack_s: float = 0.0, max_hold_s: float | None = None, hold_factor: float = HOLD_FACTOR) -> Policy:
    """Build a policy by name (config.Batching: "proteus", "aimd", "none") for one route."""
    if name == "proteus":
        return ProteusPolicy(model, batch_cap, slack_s=slack_s, max_hold_s=max_hold_s, hold_factor=hold_factor)
    if name == "aimd":
        return AimdPolicy(batch_cap, slo_s if slo_s is not None else math.inf)
    if name == "none":
        return NoBatchingPolicy()
    raise ValueError(f"unknown batching policy {name!r}; choose one of proteus, aimd, none")

