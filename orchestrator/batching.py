"""Batching policies for one (device, variant) route: pure decision code, no I/O, no clock.

(Over 600 lines for now: the queue, the latency model, the policies and the route loop the tests
use are to be split into modules of the data plane (issue 15); they stay in one mypyc-compiled
module until then, because the compiled group calls them directly.)

The live client shim (orchestrator/shim.py) and the discrete-event simulator run the *same*
policy objects; time is always passed in (seconds, any origin). Latencies from profiles are in
milliseconds and converted at the edge (`LatencyModel.seconds`).

The contract, one policy object per route:

* ``decide(queue, now, can_send=True, start_s=None) -> Decision`` — `queue` holds the route's
  waiting requests (anything with ``id``, ``arrival_s``, ``deadline_s`` (None: no deadline) and
  ``serve_late``), in arrival order: a `RouteQueue` (what the shim's worker and the simulator
  keep: it also keeps the deadline order, so a decision costs no sort) or any iterable; `can_send` says whether the route has a free slot for a batch right now;
  `start_s`, when the device is still busy, when a batch sent now would start running (a
  driver that queues one batch ahead at Triton, so the device never idles between batches). The decision says
  which ids to send as one batch now, which to answer at once as deadline misses, and when to
  call again if nothing else happens (a new arrival or a finished batch are the other reasons).
* ``observe(batch_size, latency_s)`` — called after each batch completes.

Policies:

* `ProteusPolicy` (Proteus, ASPLOS'24): hold the queue as long as the earliest deadline allows
  (with room for the batch to run `HOLD_FACTOR` x slower than predicted), then send the largest batch (<= the plan's batch cap) whose profiled latency still meets it;
  a request that can no longer meet its deadline even alone is dropped (answered with a
  deadline miss at once) unless its caller asked to have it served late. Under overload it
  passes over the most urgent requests when that lets a larger batch meet its deadlines.
* `AimdPolicy` (Clipper, NSDI'17): send at once, at most the current batch limit; the limit grows
  by one after a batch within the SLO and shrinks by 10 % after a batch over it.
* `NoBatchingPolicy`: one request at a time, first come first served.

`simulate_route` is a tiny deterministic single-route event loop that drives a policy against
arrivals and a service-time function; tests use it, and it documents how a driver calls
`decide`.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Protocol

from orchestrator.profiles import ProfileRecord

PERCENTILES = ("p50", "p95", "p99")
EPS_S = 1e-9  # float slack when comparing computed send times
WAKE_PAST_S = 1e-6  # wake just *after* a request turns hopeless, so the next decide drops it
HOLD_FACTOR = 2.0  # Proteus sends a held batch while it could still run this many times its predicted latency


class Queued(Protocol):
    """What a policy reads of a waiting request (read-only: a request class may narrow a type,
    e.g. a deadline that is never None)."""

    @property
    def id(self) -> int: ...

    @property
    def arrival_s(self) -> float: ...

    @property
    def deadline_s(self) -> float | None: ...

    @property
    def serve_late(self) -> bool: ...


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


class RouteQueue:
    """A route's waiting requests: in arrival (insertion) order, and indexed by deadline.

    Iterating yields the requests in insertion order, as a dict of them would. Alongside, the
    requests with a deadline are kept sorted by (deadline, arrival, insertion) in
    `by_deadline` / `deadline_keys`: an append when deadlines arrive in order (one SLO per
    route, the usual case), a bisect insert otherwise; removing the most urgent is a delete
    at the front. Requests without a deadline are kept apart, in insertion order
    (`no_deadline`). A request's deadline must not change while it is queued; ids are unique.
    """

    __slots__ = ("_items", "_key_of", "deadline_keys", "by_deadline", "no_deadline", "_seq")

    def __init__(self, requests: Iterable[Queued] = ()):
        self._items: dict[int, Queued] = {}  # id -> request, insertion order
        self._key_of: dict[int, tuple[float, float, int] | None] = {}  # id -> its deadline key (None: no deadline)
        self.deadline_keys: list[tuple[float, float, int]] = []  # sorted (deadline, arrival, insertion seq)
        self.by_deadline: list[Queued] = []  # the requests of `deadline_keys`, same order
        self.no_deadline: dict[int, Queued] = {}  # id -> request without a deadline, insertion order
        self._seq = 0
        for r in requests:
            self.add(r)

    def add(self, r: Queued) -> None:
        rid = r.id
        if rid in self._items:
            raise ValueError(f"request id {rid} is already queued")
        self._items[rid] = r
        self._seq += 1
        if r.deadline_s is None:
            self._key_of[rid] = None
            self.no_deadline[rid] = r
            return
        key = (r.deadline_s, r.arrival_s, self._seq)
        self._key_of[rid] = key
        keys = self.deadline_keys
        if not keys or key > keys[-1]:
            keys.append(key)
            self.by_deadline.append(r)
        else:
            i = bisect.bisect_right(keys, key)
            keys.insert(i, key)
            self.by_deadline.insert(i, r)

    def pop(self, rid: int) -> Queued:
        """Remove and return the request with id `rid` (KeyError if it is not queued)."""
        r = self._items.pop(rid)
        key = self._key_of.pop(rid)
        if key is None:
            del self.no_deadline[rid]
        else:
            keys = self.deadline_keys
            i = 0 if keys[0] is key else bisect.bisect_left(keys, key)
            del keys[i]
            del self.by_deadline[i]
        return r

    def seq(self, i: int) -> int:
        """Insertion number of ``by_deadline[i]`` (smaller: queued earlier)."""
        return self.deadline_keys[i][2]

    def clear(self) -> None:
        self._items.clear()
        self._key_of.clear()
        self.deadline_keys.clear()
        self.by_deadline.clear()
        self.no_deadline.clear()

    def __iter__(self) -> Iterator[Queued]:
        return iter(self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, rid: object) -> bool:
        return rid in self._items


class LatencyModel:
    """Batch latency of one (variant, device class): batch size -> milliseconds.

    Linear interpolation between measured batch sizes; below the smallest measured size the
    smallest's latency; above the largest, the slope of the last two points (one point: latency
    proportional to batch size). A model with ``learn=True`` updates its points from observed
    batch latencies (exponentially weighted), for routes without profiles. A model with no
    points is *unknown*: `ProteusPolicy` then sends at once instead of holding.
    """

    def __init__(self, points_ms: dict[int, float] | None = None, *, learn: bool = False, alpha: float = 0.2):
        self.points_ms: dict[int, float] = dict(points_ms or {})
        self.learn = learn
        self.alpha = alpha
        self._sorted: list[tuple[int, float]] = sorted(self.points_ms.items())
        self.revision = 0  # bumped whenever the points change (users may cache predictions per revision)
        self._seconds: dict[int, float] = {}  # batch size -> seconds(batch size), for this revision

    @property
    def known(self) -> bool:
        return bool(self._sorted)

    def ms(self, batch_size: int) -> float:
        """Predicted latency in ms of a batch (0.0 when the model is unknown)."""
        pts = self._sorted
        if not pts:
            return 0.0
        if batch_size <= pts[0][0]:
            return pts[0][1]
        if len(pts) == 1:
            return pts[0][1] * batch_size / pts[0][0]
        for (b0, y0), (b1, y1) in zip(pts, pts[1:]):
            if batch_size <= b1:
                return y0 + (y1 - y0) * (batch_size - b0) / (b1 - b0)
        (b0, y0), (b1, y1) = pts[-2], pts[-1]
        slope = max(0.0, (y1 - y0) / (b1 - b0))
        return y1 + slope * (batch_size - b1)

    def seconds(self, batch_size: int) -> float:
        s = self._seconds.get(batch_size)
        if s is None:
            s = self._seconds[batch_size] = self.ms(batch_size) / 1000.0
        return s

    def observe(self, batch_size: int, latency_ms: float) -> None:
        """Fold in one observed batch latency (only when the model learns)."""
        if not self.learn:
            return
        old = self.points_ms.get(batch_size)
        self.points_ms[batch_size] = latency_ms if old is None else old + self.alpha * (latency_ms - old)
        self._sorted = sorted(self.points_ms.items())
        self.revision += 1
        self._seconds = {}

    @classmethod
    def learned(cls) -> "LatencyModel":
        return cls(learn=True)

    @classmethod
    def from_profiles(cls, records: Iterable[ProfileRecord], percentile: str = "p95", *,
                      instances: int | None = None, threads: int | None = None) -> "LatencyModel":
        """Model from the profile records of one (variant, device class).

        When records were measured under several (instances, threads) configurations, the one
        matching `instances`/`threads` is used if present, otherwise the most measured one.
        """
        if percentile not in PERCENTILES:
            raise ValueError(f"percentile must be one of {PERCENTILES}, got {percentile!r}")
        records = list(records)
        if not records:
            return cls()
        configs: dict[tuple[int, int], list[ProfileRecord]] = {}
        for r in records:
            configs.setdefault((r.instances, r.threads), []).append(r)
        wanted = (instances, threads)
        chosen = configs.get(wanted) or max(configs.values(), key=len)  # type: ignore[arg-type]
        return cls({r.batch_size: getattr(r, f"{percentile}_ms") for r in chosen})


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
            drop = tuple(timed[i].id for i in hopeless if not timed[i].serve_late)
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
                batch += [r.id for r in timed[h:h + extra]]
            return Decision(send=tuple(batch), drop=drop, wake_at=wake)

        no_deadline = queue.no_deadline  # id -> request, queue order
        if not feasible:
            if no_deadline:
                return Decision(send=tuple(islice(no_deadline, cap)), drop=drop)
            return Decision(drop=drop) if drop else _NOTHING

        if not cost.known:  # nothing to predict with: behave like greedy batching
            ids = [r.id for r in timed[h:h + cap]]
            ids += islice(no_deadline, cap - len(ids))
            return Decision(send=tuple(ids), drop=drop)

        d0 = keys[h][0]  # the binding (earliest) deadline
        most = cap if cap < feasible else feasible
        if self.pass_over and not d0 < t0 + cost.at(most) - EPS_S:  # the usual case: the `most` most urgent all fit
            best, start = most, 0
        else:
            best, start = self._largest_batch(keys, h, n, t0, cost)
        if best < feasible or best == cap:  # the deadline or the cap binds: send now
            return Decision(tuple([r.id for r in timed[h + start:h + start + best]]), drop)
        # Every feasible request fits and there is room for more.
        if no_deadline:  # requests without a deadline would rather go now: fill up and send
            fill = best
            while fill < cap and fill - best < len(no_deadline) and t0 + cost.at(fill + 1) <= d0 + EPS_S:
                fill += 1
            ids = [r.id for r in timed[h:]]
            ids += islice(no_deadline, fill - best)
            return Decision(send=tuple(ids), drop=drop)
        send_by = d0 - cost.at(best) * self.hold_factor  # hold while the batch could run hold_factor x slower
        if self.max_hold_s is not None:
            send_by = min(send_by, _earliest_arrival(timed, h) + self.max_hold_s)
        if now + EPS_S >= send_by:
            return Decision(tuple([r.id for r in timed[h:]]), drop)
        return Decision((), drop, send_by if wake is None or send_by < wake else wake)

    def _largest_batch(self, keys: list[tuple[float, float, int]], lo: int, hi: int, now: float,
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


POLICIES = ("proteus", "aimd", "none")
Policy = ProteusPolicy | AimdPolicy | NoBatchingPolicy


SPILL_BATCHING_GAIN = 1.5  # a spill route holds to batch only if a full batch serves this much more per second


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
    """Build a policy by name ("proteus", "aimd", "none") for one route."""
    if name == "proteus":
        return ProteusPolicy(model, batch_cap, slack_s=slack_s, max_hold_s=max_hold_s, hold_factor=hold_factor)
    if name == "aimd":
        return AimdPolicy(batch_cap, slo_s if slo_s is not None else math.inf)
    if name == "none":
        return NoBatchingPolicy()
    raise ValueError(f"unknown batching policy {name!r}; choose one of {POLICIES}")


# --- a tiny deterministic event loop for one route ------------------------------------------


@dataclass
class SimRequest:
    id: int
    arrival_s: float
    deadline_s: float | None
    serve_late: bool = False


@dataclass
class SimOutcome:
    id: int
    arrival_s: float
    deadline_s: float | None
    finish_s: float | None  # None: dropped
    batch_size: int = 0

    @property
    def met(self) -> bool:
        return self.finish_s is not None and (self.deadline_s is None or self.finish_s <= self.deadline_s + EPS_S)


@dataclass
class SimResult:
    outcomes: list[SimOutcome] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)  # sizes, in send order

    @property
    def miss_rate(self) -> float:
        if not self.outcomes:
            return 0.0
        return sum(not o.met for o in self.outcomes) / len(self.outcomes)

    @property
    def drops(self) -> int:
        return sum(o.finish_s is None for o in self.outcomes)

    @property
    def mean_batch(self) -> float:
        return sum(self.batches) / len(self.batches) if self.batches else 0.0


def simulate_route(policy: Policy, arrivals: Sequence[SimRequest], service_s: Callable[[int], float], *,
                   max_in_flight: int = 1) -> SimResult:
    """Drive `policy` on one route: requests arrive at their times; a batch of size b occupies
    one of `max_in_flight` slots for ``service_s(b)``. Returns one outcome per request.

    Deterministic: same inputs, same result. A driver calls `decide` after every event (arrival,
    completion, or a wake-up the policy asked for) and keeps calling while it sends batches.
    """
    pending = sorted(arrivals, key=lambda r: (r.arrival_s, r.id))
    queue = RouteQueue()
    running: list[tuple[float, int, list[Queued], float]] = []  # heap: (done_at, seq, batch, started)
    result = SimResult()
    i, seq, wake = 0, 0, None
    while i < len(pending) or queue or running:
        candidates = []
        if i < len(pending):
            candidates.append(pending[i].arrival_s)
        if running:
            candidates.append(running[0][0])
        if wake is not None and queue:
            candidates.append(wake)
        if not candidates:  # queue holds requests but the policy wants no wake-up: should not happen
            raise RuntimeError(f"policy {policy.name} stalled with {len(queue)} queued requests")
        now = min(candidates)
        while running and running[0][0] <= now:
            done_at, _, batch, started = heapq.heappop(running)
            policy.observe(len(batch), done_at - started)
            for r in batch:
                result.outcomes.append(SimOutcome(r.id, r.arrival_s, r.deadline_s, done_at, len(batch)))
        while i < len(pending) and pending[i].arrival_s <= now:
            queue.add(pending[i])
            i += 1
        wake = None
        while True:
            d = policy.decide(queue, now, can_send=len(running) < max_in_flight)
            for rid in d.drop:
                r = queue.pop(rid)
                result.outcomes.append(SimOutcome(r.id, r.arrival_s, r.deadline_s, None))
            if d.send:
                batch = [queue.pop(rid) for rid in d.send]
                heapq.heappush(running, (now + service_s(len(batch)), seq, batch, now))
                seq += 1
                result.batches.append(len(batch))
                continue
            wake = d.wake_at
            if wake is not None and wake <= now:
                wake = now + WAKE_PAST_S  # never spin at the same instant
            break
    return result
