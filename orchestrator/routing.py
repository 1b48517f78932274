"""Routing a family's requests over the plan's (device, variant) routes, by weight.

Pure and deterministic (time is passed in): the same sequence of picks gives the same routes,
so tests and the simulator can count on the split. Smooth weighted round-robin (as in nginx)
interleaves routes instead of sending runs to one: weights 3:1 give A A B A, A A B A, ...
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Generic, TypeVar

from orchestrator.plan import FamilyPlan, Placement, Plan, Route, SolverInfo

K = TypeVar("K", bound=Hashable)


class SmoothWeightedRoundRobin(Generic[K]):
    """Each pick adds every eligible key's weight to its credit, takes the key with the most
    credit (first in order on ties) and charges it the eligible total. Keys not eligible in a
    pick neither gain nor lose credit, so the eligible ones split traffic by their weights."""

    def __init__(self, weights: Mapping[K, float]):
        self.weights = {k: float(w) for k, w in weights.items() if w > 0}
        self.credit = {k: 0.0 for k in self.weights}

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


class RoutingTable:
    """Per family of one plan: its routes and a weighted round-robin over them.

    Built from a plan; `RoutingTable(new_plan, previous=old)` keeps the round-robin credit of
    families whose routes did not change, so a plan re-publish does not disturb the split.
    """

    def __init__(self, plan: Plan, previous: "RoutingTable | None" = None):
        self.plan = plan
        self._rr: dict[str, SmoothWeightedRoundRobin[Route]] = {}
        for family, fp in plan.families.items():
            old = previous._rr.get(family) if previous is not None else None
            weights = {r: r.weight for r in fp.routes}
            if old is not None and old.weights == {r: w for r, w in weights.items() if w > 0}:
                self._rr[family] = old
            else:
                self._rr[family] = SmoothWeightedRoundRobin(weights)

    @property
    def families(self) -> list[str]:
        return sorted(self.plan.families)

    def routes(self, family: str) -> list[Route]:
        """The family's routes that carry traffic (weight > 0)."""
        return list(self._check(family).weights)

    def pick(self, family: str, healthy: Callable[[Route], bool] = lambda route: True,
             exclude_devices: Iterable[str] = ()) -> Route | None:
        """The next route of `family`, skipping devices in `exclude_devices` and, while any
        healthy one is left, unhealthy routes. None when the family has no route left."""
        rr = self._check(family)
        excluded = set(exclude_devices)
        route = rr.pick(lambda r: r.device_id not in excluded and healthy(r))
        if route is None:  # every remaining device is marked unhealthy: try them anyway
            route = rr.pick(lambda r: r.device_id not in excluded)
        return route

    def _check(self, family: str) -> SmoothWeightedRoundRobin[Route]:
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
    families, placements = {}, {}
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
