"""What the planner is asked: a typed request, its options, and the checks that reject bad input.

`PlanRequest` bundles everything a policy needs (catalog, cluster, profiles, SLO and demand per
family, the current plan, operator constraints). `validate` turns bad input into a `UserError`
with a one-line message; input that is valid but cannot be served (an SLO no variant meets, an
accuracy floor no variant reaches) is not an error: the plan reports it as unserved, with why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from orchestrator.catalog import Catalog
from orchestrator.cluster import Cluster
from orchestrator.errors import UserError
from orchestrator.plan import Plan
from orchestrator.profiles import ProfileSet

FLOOR_KINDS = ("variant", "average")
OBJECTIVES = ("accuracy", "cost")


@dataclass(frozen=True)
class AccuracyFloor:
    """An operator's accuracy floor for one family (top-1 percent).

    kind "variant": never route the family to a variant below `value`.
    kind "average": the accuracy averaged over the family's *served* requests stays >= `value`.
    """

    value: float
    kind: str = "variant"


@dataclass(frozen=True)
class PlannerOptions:
    """Knobs of the capacity rule and the MILP objective (see docs/planner.md)."""

    latency_fraction: float = 0.5  # a batch qualifies when its p99 <= SLO x this (the rest is queueing room)
    utilisation_cap: float = 0.85  # a device's time shares sum to at most this
    objective: str = "accuracy"  # "accuracy": max effective accuracy; "cost": cheapest plan meeting the floors
    served_weight: float = 1e3  # weight of the served share over the accuracy term (priority 1 over 2)
    switch_cost: float = 0.01  # a load costs this x (size / largest size) x the accuracy-weighted output of the device
    change_threshold: float = 0.5  # a plan in force changes (loads) only to gain more than this many effective-accuracy points
    device_cost_weight: float = 0.0  # accuracy mode: weight of normalised $/h (priority 4); cost mode ignores it
    balance_weight: float = 1e-3  # priority 5: per rps moved, balancing is worth at most this many accuracy points
    shared_devices: int | None = None  # devices per group that may host several variants; None = exact bound
    time_limit_s: float = 2.0  # past it the plan carries status FEASIBLE and the gap reached
    relative_gap: float = 1e-6  # of the objective, ~0.001 effective-accuracy points
    standby: bool = True  # MILP: load each served family's fastest variant where memory allows (planner/standby.py)

    def check(self) -> None:
        if not 0 < self.latency_fraction <= 1:
            raise UserError(f"planner option latency_fraction must be in (0, 1], not {self.latency_fraction}")
        if not 0 < self.utilisation_cap <= 1:
            raise UserError(f"planner option utilisation_cap must be in (0, 1], not {self.utilisation_cap}")
        if self.objective not in OBJECTIVES:
            raise UserError(f"planner option objective must be one of {OBJECTIVES}, not {self.objective!r}")
        if (self.switch_cost < 0 or self.device_cost_weight < 0 or self.balance_weight < 0 or self.change_threshold < 0
                or self.served_weight <= 0):
            raise UserError("planner weights must not be negative (served_weight must be positive)")
        if not self.time_limit_s > 0:
            raise UserError(f"planner option time_limit_s must be positive, not {self.time_limit_s}")
        if self.shared_devices is not None and self.shared_devices < 0:
            raise UserError(f"planner option shared_devices must be >= 0, not {self.shared_devices}")


@dataclass(frozen=True)
class PlanRequest:
    """Everything a policy decides from. Devices in `drained` host nothing; devices in `reserved`
    are left alone: the planner neither loads nor routes anything there and carries their current
    placements into the plan unchanged (served 0), so the executor does not unload them."""

    catalog: Catalog
    cluster: Cluster
    profiles: ProfileSet
    slo_ms: dict[str, float]
    demand_rps: dict[str, float]
    current: Plan | None = None
    accuracy_floor: dict[str, AccuracyFloor] = field(default_factory=dict)
    drained: frozenset[str] = frozenset()
    reserved: frozenset[str] = frozenset()
    options: PlannerOptions = PlannerOptions()

    def active_families(self) -> list[str]:
        """Families with positive demand, sorted."""
        return sorted(f for f, d in self.demand_rps.items() if d > 0)

    def plannable_devices(self):
        """Devices the planner may use (not drained, not reserved), in cluster order."""
        return [d for d in self.cluster.devices if d.id not in self.drained and d.id not in self.reserved]


def validate(req: PlanRequest) -> None:
    """Raise `UserError` for input that is wrong (as opposed to input that cannot be served)."""
    req.options.check()
    families = req.catalog.families()
    for fam, demand in req.demand_rps.items():
        if fam not in families:
            raise UserError(f"demand names family {fam!r}, which has no variant in the catalog "
                            f"(families: {sorted(families)})")
        if not isinstance(demand, (int, float)) or math.isnan(demand) or math.isinf(demand) or demand < 0:
            raise UserError(f"demand for family {fam!r} must be a finite number >= 0, not {demand!r}")
        if fam not in req.slo_ms:
            raise UserError(f"family {fam!r} has demand but no SLO (give --slo {fam}=MS)")
    for fam, slo in req.slo_ms.items():
        if fam not in families:
            raise UserError(f"SLO names family {fam!r}, which has no variant in the catalog "
                            f"(families: {sorted(families)})")
        if not isinstance(slo, (int, float)) or math.isnan(slo) or slo <= 0:
            raise UserError(f"SLO for family {fam!r} must be a positive number of ms, not {slo!r}")
    for fam, floor in req.accuracy_floor.items():
        if fam not in families:
            raise UserError(f"accuracy floor names family {fam!r}, which has no variant in the catalog")
        if floor.kind not in FLOOR_KINDS:
            raise UserError(f"accuracy floor for {fam!r}: kind must be one of {FLOOR_KINDS}, not {floor.kind!r}")
        if not 0 <= floor.value <= 100:
            raise UserError(f"accuracy floor for {fam!r} must be a top-1 percentage in 0..100, not {floor.value}")
    ids = {d.id for d in req.cluster.devices}
    for name, group in (("drained", req.drained), ("reserved", req.reserved)):
        unknown = sorted(set(group) - ids)
        if unknown:
            raise UserError(f"{name} device {unknown[0]!r} is not in the cluster (devices: {sorted(ids)})")
    if not req.active_families():
        return
    profiled = req.profiles.device_classes()
    missing: dict[str, list[str]] = {}
    for d in req.plannable_devices():
        if d.device_class not in profiled:
            missing.setdefault(d.device_class, []).append(d.id)
    if missing:
        cls, devs = sorted(missing.items())[0]
        raise UserError(f"no profiles for device class {cls!r} (devices {', '.join(devs)}); "
                        f"run `orchestrator profile` on it, or drain those devices")
