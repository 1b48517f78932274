"""Routing a family's requests over the plan's (device, variant) routes.

Pure and deterministic (time is passed in): the same sequence of picks gives the same routes,
so tests and the simulator can count on the split. Two ways (config.Routing):

* ``weighted``: smooth weighted round-robin (as in nginx) by the plan's weights; it interleaves
  routes instead of sending runs to one: weights 3:1 give A A B A, A A B A, ...
* ``accuracy-first`` (default): each route may carry a *flow* (`route_flows`: what its
  placement can serve in the device time the plan leaves it, at least its planned share),
  metered by a token bucket; a request goes to the most accurate route that has room (weighted
  round-robin among equally accurate ones), and only when none has room to the weighted pick.

  With a prediction of when each route would answer (the shim and the simulator pass one as
  `budget_use`: dataplane/backlog.py), a route with a token that would answer late is passed
  over; a route without a token takes a request only with spare time (most accurate first), or,
  when nothing else is on time, as the *fastest* route that is. A plan's *spill routes* (weight
  0: the family's fastest variant, standing by where memory allowed, planner/standby.py) have no
  flow and take only those last requests: a burst above what the accurate variants can serve,
  or a device running slower than its profile, spills onto them within a request, before the
  controller re-plans. A weight-0 route *more* accurate than every route with a share (a calm's
  variant still loaded under a plan for a burst) takes only spare time, never an overflow.
  When no route would answer within `ON_TIME_USE`, the request goes to the route predicted to
  answer soonest if that is still before its deadline; if none is, it is *shed*: the picker
  returns None with `shed_last` set, and the driver answers it `dropped` at once (load
  shedding), because queued where it would be late anyway it only delays the requests behind
  it, and on a shared device slows the batches beside it (a request that asked for late answers
  is not shed: `pick_at(..., shed=False)`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Final, Generic, TypeVar

from orchestrator.plan import FamilyPlan, Placement, Plan, Route, SolverInfo

K = TypeVar("K", bound=Hashable)


class BudgetUse(Generic[K]):
    """A route's `budget_use` (see `AccuracyFirst`) for the request being routed, as an object
    with one method, `of(key)`: compiled, a picker calls it directly, where a plain callable is a
    call through Python's protocol that boxes the float it returns (it is asked per request). A
    driver subclasses it (the simulator's arrivals); `BudgetUseOf` wraps a callable."""

    def of(self, key: K) -> float:
        raise NotImplementedError

    def idle(self, key: K) -> bool:
        """Whether the route's device has nothing to do: no batch in flight and nothing queued on
        any of its routes (the condition for a route standing by for spare time)."""
        return True


class BudgetUseOf(BudgetUse[K]):
    """`budget_use` from a callable (key -> share of the time budget), and `idle` from another
    (key -> the route's device has nothing to do; without it, always)."""

    def __init__(self, fn: Callable[[K], float], idle: Callable[[K], bool] | None = None):
        self.fn = fn
        self.idle_fn = idle

    def of(self, key: K) -> float:
        return self.fn(key)

    def idle(self, key: K) -> bool:
        return self.idle_fn is None or self.idle_fn(key)


class SmoothWeightedRoundRobin(Generic[K]):
    """Each pick adds every eligible key's weight to its credit, takes the key with the most
    credit (first in order on ties) and charges it the eligible total. Keys not eligible in a
    pick neither gain nor lose credit, so the eligible ones split traffic by their weights."""

    def __init__(self, weights: Mapping[K, float]):
        self.weights = {k: float(w) for k, w in weights.items() if w > 0}
        self.credit = {k: 0.0 for k in self.weights}
        self.shed_last = False  # (the picker interface: weighted routing never sheds)

    def pick(self, eligible: Callable[[K], bool] | None = None) -> K | None:
        # One pass (this runs per request, in the shim and in the simulator's inner loop).
        credit = self.credit
        best, best_credit, total = None, -math.inf, 0.0
        for k, w in self.weights.items():
            if eligible is not None and not eligible(k):
                continue
            c = credit[k] + w
            credit[k] = c
            total += w
            if c > best_credit:  # strict: the first key wins ties
                best, best_credit = k, c
        if best is not None:
            credit[best] -= total
        return best

    def pick_at(self, now: float, eligible: Callable[[K], bool] | None = None,
                budget_use: BudgetUse[K] | None = None, shed: bool = True) -> K | None:
        """`pick`, with the picker interface `AccuracyFirst` shares (weighted routing keeps the
        plan's split whatever the time and the backlog, so `now`, `budget_use` and `shed` are
        not used; it never sheds)."""
        return self.pick(eligible)


BURST_S: Final = 0.5  # accuracy-first: a route's bucket holds this many seconds of its flow
ON_TIME_USE: Final = 0.8  # a route takes a request it is predicted to answer within this share of its budget
SPARE_USE: Final = 0.5  # past its flow, a route takes requests it answers within this share of their budget
LATE_USE: Final = 1.0  # predicted past this share of its budget on every route, a request is shed


class AccuracyFirst(Generic[K]):
    """Most accurate route with room first; the weighted pick when none has room.

    `routes`: key -> (weight, accuracy, flow in requests/s); weight 0 makes a spill route (no
    flow, never in the weighted pick). A route's bucket fills at its flow up to `burst_s`
    seconds of it (at least one request); a pick takes one token.

    `pick_at(now, eligible, budget_use)`: `budget_use.of(key)` is the predicted time to answer a
    request sent to the route now, as a share of the request's time budget. Tiers of equal
    accuracy are taken most accurate first; in a tier, a route with a token that would use at
    most `ON_TIME_USE` of the budget, else one without a token that would use at most
    `SPARE_USE` (spare time, before a less accurate tier's flow). When no tier has either, the
    *fastest* route without a token within `ON_TIME_USE` (past every flow and without spare
    time the cluster is past what the plan was made for: a miss costs a whole answer, a smaller
    variant a few points), leaving out the tiers more accurate than every route with a share
    (spill routes standing by for spare time only, which take a request only while their device
    is idle, `budget_use.idle(key)`: their device time would slow the planned routes beside
    them); else, of those same routes, the one predicted to answer soonest, if it would use at
    most `LATE_USE` of the budget (or `shed` is False); else None, with `shed_last` True: the
    request would be late everywhere and is shed (the weighted pick would send it by the plan's
    split, mostly to the slow accurate variants, where it queues late and, in processor sharing,
    makes the batches beside it late too). Without `budget_use` only tokens count, and when no
    route has room the weighted pick decides.
    Within a tier candidates share by smooth weighted round-robin (spill routes weigh 1); keys
    not eligible are skipped, as in `SmoothWeightedRoundRobin`. Buckets are refilled lazily,
    when a pick looks at them (the same tokens as refilling all at every pick). This runs per
    request in the shim and in the simulator's inner loop, hence the plain loops; `budget_use`
    is asked only of routes that could win.
    """

    def __init__(self, routes: Mapping[K, tuple[float, float, float]], burst_s: float = BURST_S):
        self.weighted = SmoothWeightedRoundRobin({k: w for k, (w, _, _) in routes.items()})
        keys = [k for k, (w, _, _) in routes.items() if w >= 0]
        self.spill = frozenset(k for k in keys if routes[k][0] <= 0)
        self.rate = {k: routes[k][2] if k not in self.spill else 0.0 for k in keys}
        by_accuracy: dict[float, list[K]] = {}
        for k in keys:
            by_accuracy.setdefault(routes[k][1], []).append(k)
        # a spill route shares its tier with weight 1 among the tier's other spill routes
        self.tiers: list[list[_Slot[K]]] = [
            [_Slot(k, self.weighted.weights.get(k, 1.0), self.rate[k],
                   max(1.0, routes[k][2] * burst_s) if k not in self.spill else 0.0) for k in by_accuracy[a]]
            for a in sorted(by_accuracy, reverse=True)]
        # tiers before this one hold only routes without a share that are more accurate than every
        # route with one (standing by for spare time): they take a request only while their device
        # is idle (`BudgetUse.idle`), and are never the fastest route for an overflow
        self.first_overflow_tier = next((i for i, tier in enumerate(self.tiers)
                                         if any(slot.key not in self.spill for slot in tier)), 0)
        # when each tier's buckets were last refilled (a pick that looks at a tier refills all of it)
        self.filled_at: list[float | None] = [None] * len(self.tiers)
        self.picks = 0  # picks so far: a slot's `use` holds for the pick numbered its `asked`
        self.calls = 0  # `_round_robin` calls so far: a slot one turned down has `down` = its number
        self.shed_last = False  # the last pick shed its request (None: late on every route)
        self.shed = 0  # requests shed so far

    @property
    def weights(self) -> dict[K, float]:
        """The routes with a planned share and their weights (spill routes are not here)."""
        return self.weighted.weights

    def pick_at(self, now: float, eligible: Callable[[K], bool] | None = None,
                budget_use: BudgetUse[K] | None = None, shed: bool = True) -> K | None:
        filled_at = self.filled_at
        self.picks += 1
        self.shed_last = False
        without_token: list[list[_Slot[K]]] = []
        for i, tier in enumerate(self.tiers):
            with_token: list[_Slot[K]] = []
            no_token: list[_Slot[K]] = []
            last = filled_at[i]
            if last is None or now > last:
                filled_at[i] = now
            if last is not None and now > last:  # refill the tier's buckets
                dt = now - last
                for slot in tier:
                    t = slot.tokens + slot.rate * dt
                    if t > slot.size:
                        t = slot.size
                    slot.tokens = t
                    if eligible is not None and not eligible(slot.key):
                        continue
                    (with_token if t >= 1.0 else no_token).append(slot)
            else:
                for slot in tier:
                    if eligible is not None and not eligible(slot.key):
                        continue
                    (with_token if slot.tokens >= 1.0 else no_token).append(slot)
            if with_token:
                best = self._round_robin(with_token, budget_use, ON_TIME_USE)
                if best is not None:
                    best.tokens -= 1.0
                    return best.key
            if budget_use is not None and no_token:  # spare time, before a less accurate tier's flow
                if i < self.first_overflow_tier:  # standing by for spare time: only on an idle device
                    no_token = [slot for slot in no_token if budget_use.idle(slot.key)]
                best = self._round_robin(no_token, budget_use, SPARE_USE)
                if best is not None:
                    return best.key
                if i >= self.first_overflow_tier:
                    without_token.append(no_token)
        for candidates in reversed(without_token):  # past every flow and spare time: the fastest on time
            best = self._round_robin(candidates, budget_use, ON_TIME_USE)
            if best is not None:
                return best.key
        if budget_use is None:
            return self.weighted.pick(eligible)
        # nothing on time: the route that would answer soonest, while that is before the deadline
        soonest: "_Slot[K] | None" = None
        soonest_use = math.inf
        for tier in self.tiers[self.first_overflow_tier:]:  # the routes that may take an overflow
            for slot in tier:
                if eligible is not None and not eligible(slot.key):
                    continue
                use = self._use(slot, budget_use)  # (each was asked in this pick already)
                if use < soonest_use:
                    soonest, soonest_use = slot, use
        if soonest is None:
            return self.weighted.pick(eligible)
        if soonest_use <= LATE_USE or not shed:
            return soonest.key
        self.shed_last = True
        self.shed += 1
        return None

    def _use(self, slot: "_Slot[K]", budget_use: BudgetUse[K]) -> float:
        """`budget_use` of the slot's route, asked at most once per pick."""
        if slot.asked != self.picks:
            slot.use = budget_use.of(slot.key)
            slot.asked = self.picks
        return slot.use

    def _round_robin(self, candidates: "list[_Slot[K]]", budget_use: BudgetUse[K] | None,
                     limit: float) -> "_Slot[K] | None":
        """Smooth weighted round-robin over `candidates`. With `budget_use`, a winner whose use is
        over `limit` leaves the candidates and the next is asked, most credit first (so
        `budget_use` is asked of as few routes as possible); the credit moves for the candidates
        left. None when all are turned down (or there are none). A slot turned down here is
        marked with this call's number (`down`): no set or sort (a tier has few routes)."""
        self.calls += 1
        mark = self.calls
        while True:
            best: "_Slot[K] | None" = None
            best_credit = -math.inf
            for slot in candidates:
                if slot.down == mark:
                    continue
                c = slot.credit + slot.weight
                if c > best_credit:  # strict: the first wins ties
                    best, best_credit = slot, c
            if best is None:
                return None
            if budget_use is None or self._use(best, budget_use) <= limit:
                total = 0.0
                for other in candidates:
                    if other.down != mark:
                        other.credit += other.weight
                        total += other.weight
                best.credit -= total
                return best
            best.down = mark


class _Slot(Generic[K]):
    """One route in an `AccuracyFirst` tier: its round-robin weight in the tier, token bucket
    (rate, size, tokens) and credit, its `budget_use` in the pick numbered `asked`, and the
    `_round_robin` call that last turned it down (`down`)."""

    __slots__ = ("key", "weight", "rate", "size", "tokens", "credit", "use", "asked", "down")

    def __init__(self, key: K, weight: float, rate: float, size: float):
        self.key = key
        self.weight = weight
        self.rate = rate
        self.size = size
        self.tokens = size  # a bucket starts full
        self.credit = 0.0
        self.use = 0.0
        self.asked = 0
        self.down = 0


class DeviceHealth:
    """Which devices (or any other keys, e.g. "device/variant") recently failed a call. A failed
    key is skipped for `cooldown_s`, then tried again (the next call decides); a successful
    call clears it at once."""

    def __init__(self, cooldown_s: float = 2.0):
        self.cooldown_s = cooldown_s
        self._failed_until: dict[str, float] = {}
        self.failures: dict[str, int] = {}  # failed calls per device, ever

    def mark_failed(self, device_id: str, now: float) -> None:
        self._failed_until[device_id] = now + self.cooldown_s
        self.failures[device_id] = self.failures.get(device_id, 0) + 1

    def mark_ok(self, device_id: str) -> None:
        self._failed_until.pop(device_id, None)

    def healthy(self, device_id: str, now: float) -> bool:
        until = self._failed_until.get(device_id)
        return until is None or now >= until


def route_flows(plan: Plan, family: str) -> dict[tuple[str, str], float]:
    """What each of the family's (device, variant) routes may carry before it counts as spill
    (requests/s, the rate of its token bucket): its planned flow (weight x the demand the plan
    was made for), or, where the plan gives the placement's capacity, that capacity times the
    device time the plan leaves it (all of it less the other placements' planned time shares),
    whichever is more. A burst thus uses the accurate variants up to what their devices can
    serve before the controller has re-planned (the on-time test, not the planner's utilisation
    cap, keeps them from overload); a device the plan shares among variants stays shared as
    planned. Spill routes (weight 0) get none."""
    fp = plan.families[family]
    share: dict[str, float] = {}
    for p in plan.placements:
        if p.capacity_rps > 0:
            share[p.device_id] = share.get(p.device_id, 0.0) + p.served_rps / p.capacity_rps
    flows: dict[tuple[str, str], float] = {}
    for r in fp.routes:
        flow = r.weight * fp.demand_rps
        placed = plan.placement(r.device_id, r.variant)
        if r.weight > 0 and placed is not None and placed.capacity_rps > 0:
            left = 1.0 - (share.get(r.device_id, 0.0) - placed.served_rps / placed.capacity_rps)
            flow = max(flow, placed.capacity_rps * max(0.0, left))
        flows[(r.device_id, r.variant)] = flow
    return flows


def make_router(routes: Mapping[K, Route], flows: Mapping[K, float],
                accuracy: Mapping[str, float] | None) -> "SmoothWeightedRoundRobin[K] | AccuracyFirst[K]":
    """The picker over one family's routes (key -> route): accuracy-first when `accuracy`
    (variant -> top-1) is given and the routes have flows (`route_flows`), else weighted."""
    if accuracy is None or not any(f > 0 for f in flows.values()):
        return SmoothWeightedRoundRobin({k: r.weight for k, r in routes.items()})  # spill routes never picked
    return AccuracyFirst({k: (r.weight, accuracy.get(r.variant, 0.0), flows[k]) for k, r in routes.items()})


def keep_state(old, fresh) -> bool:
    """Whether a re-published family may keep its old picker (same kind, routes, weights, spill
    routes and flows), so a plan re-publish does not disturb the split."""
    return old is not None and type(old) is type(fresh) and old.weights == fresh.weights and \
        getattr(old, "spill", None) == getattr(fresh, "spill", None) and \
        getattr(old, "rate", None) == getattr(fresh, "rate", None)


class RoutingTable:
    """Per family of one plan: the routes that may take its requests and the picker over them
    (`make_router`, keyed by the route's index in `routes(family)`), for every driver: the shim
    picks through `pick`, the simulator reads `picker` and `routes` once per plan.

    Under accuracy-first routing (`accuracy`, variant -> top-1 accuracy) a family's routes are
    all of its plan routes, spill routes (weight 0) included; under weighted routing only those
    with a weight. `RoutingTable(new_plan, previous=old)` keeps the picker state of families whose
    routes, weights and flows did not change, so a plan re-publish does not disturb the split.
    """

    def __init__(self, plan: Plan, previous: "RoutingTable | None" = None,
                 accuracy: Mapping[str, float] | None = None):
        self.plan = plan
        self.shed_last = False  # the last `pick` shed its request
        self._rr: dict[str, SmoothWeightedRoundRobin[int] | AccuracyFirst[int]] = {}
        self._routes: dict[str, list[Route]] = {}
        for family, fp in plan.families.items():
            live = [r for r in fp.routes if r.weight > 0 or accuracy is not None]
            flows = route_flows(plan, family)
            fresh = make_router(dict(enumerate(live)),
                                {i: flows[(r.device_id, r.variant)] for i, r in enumerate(live)}, accuracy)
            old = previous._rr.get(family) if previous is not None else None
            same_routes = old is not None and previous is not None and \
                [(r.device_id, r.variant) for r in previous._routes[family]] == [(r.device_id, r.variant) for r in live]
            self._rr[family] = old if old is not None and same_routes and keep_state(old, fresh) else fresh
            self._routes[family] = live

    @property
    def families(self) -> list[str]:
        return sorted(self.plan.families)

    def routes(self, family: str) -> list[Route]:
        """The routes that may take the family's requests, in the picker's key order."""
        self._check(family)
        return self._routes[family]

    def planned_routes(self, family: str) -> list[Route]:
        """The family's routes that carry planned traffic (weight > 0)."""
        rr = self._check(family)
        return [self._routes[family][i] for i in rr.weights]

    def picker(self, family: str) -> "SmoothWeightedRoundRobin[int] | AccuracyFirst[int]":
        """The family's picker: keys are indexes into `routes(family)`."""
        return self._check(family)

    def pick(self, family: str, healthy: Callable[[Route], bool] = lambda route: True,
             exclude_devices: Iterable[str] = (), now: float = 0.0,
             budget_use: Callable[[Route], float] | None = None, variant: str | None = None,
             idle: Callable[[Route], bool] | None = None, shed: bool = True) -> Route | None:
        """The next route of `family` at time `now` (seconds, any origin), skipping devices in
        `exclude_devices` and, while any healthy one is left, unhealthy routes. `budget_use` (a
        route -> predicted time to answer a request sent now, as a share of its time budget)
        lets accuracy-first routing pass over late routes and use spare time and spill routes
        (`AccuracyFirst`). `variant`: only that variant's routes (a request pinned to it). None
        when the family has no route left, or when the request is shed (late on every healthy
        route, `shed` True): then `shed_last` is True. `idle` (a route -> its device has nothing
        to do) lets a route standing by for spare time take a request."""
        self.shed_last = False
        rr = self._check(family)
        routes = self._routes[family]
        excluded = set(exclude_devices)
        use: BudgetUse[int] | None = None
        if budget_use is not None:
            use = BudgetUseOf(lambda i: budget_use(routes[i]),
                              (lambda i: idle(routes[i])) if idle is not None else None)

        def allowed(i: int) -> bool:
            r = routes[i]
            return r.device_id not in excluded and (variant is None or r.variant == variant)
        i = rr.pick_at(now, lambda i: allowed(i) and healthy(routes[i]), use, shed)
        if i is None and rr.shed_last:
            self.shed_last = True
            return None
        if i is None:  # every remaining device is marked unhealthy: try them anyway
            i = rr.pick_at(now, allowed)
        return routes[i] if i is not None else None

    def serves(self, family: str, variant: str) -> bool:
        """Whether the plan routes requests of `family` to `variant` somewhere."""
        return family in self._routes and any(r.variant == variant for r in self._routes[family])

    def _check(self, family: str) -> "SmoothWeightedRoundRobin[int] | AccuracyFirst[int]":
        try:
            return self._rr[family]
        except KeyError:
            raise ValueError(f"unknown family {family!r}; plan version {self.plan.version} serves "
                             f"{self.families}") from None


def static_plan(routes: Mapping[str, Iterable[tuple[str, str, float]]], *, batch_cap: int = 8,
                slo_ms: float = 0.0, version: int = 1) -> Plan:
    """A hand-written plan: per family, (device_id, variant, weight) routes (weights are
    normalised). For applications and tests that route without the planner; `slo_ms` 0 means
    no default deadline."""
    families: dict[str, FamilyPlan] = {}
    placements: dict[tuple[str, str], Placement] = {}
    for family, rows in routes.items():
        rows = list(rows)
        total = sum(w for _, _, w in rows)
        if not rows or total <= 0:
            raise ValueError(f"family {family!r}: needs at least one route with a positive weight")
        fam_routes = tuple(Route(d, v, w / total) for d, v, w in rows)
        for r in fam_routes:
            placements.setdefault((r.device_id, r.variant), Placement(r.device_id, r.variant, batch_cap))
        families[family] = FamilyPlan(family=family, slo_ms=slo_ms, demand_rps=0.0, served_rps=0.0,
                                      unserved_rps=0.0, routes=fam_routes, effective_accuracy=0.0)
    return Plan(version=version, policy="static", placements=tuple(placements.values()), families=families,
                solver=SolverInfo(status="STATIC"))
