"""A tiny deterministic event loop for one route, for tests: it drives a batching policy
(orchestrator/dataplane/batching.py) against arrivals and a service-time function, and shows in
forty lines how a driver calls `decide`."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from orchestrator.dataplane.batching import Policy
from orchestrator.dataplane.queue import EPS_S, WAKE_PAST_S, Queued, RouteQueue



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
