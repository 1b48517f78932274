"""The Plan: what the planner decides and the executor and shims carry out.

A plan says, per device, which variants it hosts (with the batch cap and instance config), and,
per family, how that family's traffic is split over (device, variant) routes. It also carries
what the planner predicted (capacity, effective accuracy, unserved demand) and how the solver did.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Placement:
    """One variant hosted on one device."""

    device_id: str
    variant: str
    batch_cap: int  # largest batch the shim may send to this (device, variant)
    instances: int = 1  # Triton instance count
    threads: int = 1  # onnxruntime threads per instance
    capacity_rps: float = 0.0  # what this placement can serve within the SLO at batch_cap
    served_rps: float = 0.0  # what the plan routes to it


@dataclass(frozen=True)
class Route:
    """A share of a family's traffic sent to one (device, variant)."""

    device_id: str
    variant: str
    weight: float  # fraction of the family's traffic; a family's weights sum to 1


@dataclass(frozen=True)
class FamilyPlan:
    family: str
    slo_ms: float
    demand_rps: float
    served_rps: float
    unserved_rps: float
    routes: tuple[Route, ...]
    effective_accuracy: float  # predicted: accuracy-weighted share of demand served (percent)
    accuracy_floor: float | None = None
    reason: str = ""  # why demand is unserved, when it is


@dataclass(frozen=True)
class SolverInfo:
    status: str  # OPTIMAL | FEASIBLE | HEURISTIC | INFEASIBLE | ...
    objective: float = 0.0
    gap: float = 0.0
    time_ms: float = 0.0
    solver: str = ""


@dataclass(frozen=True)
class Plan:
    version: int
    policy: str
    placements: tuple[Placement, ...]
    families: dict[str, FamilyPlan]
    solver: SolverInfo
    created_at: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    def placements_on(self, device_id: str) -> list[Placement]:
        return [p for p in self.placements if p.device_id == device_id]

    def placement(self, device_id: str, variant: str) -> Placement | None:
        for p in self.placements:
            if p.device_id == device_id and p.variant == variant:
                return p
        return None

    def loaded_pairs(self) -> set[tuple[str, str]]:
        """The (device_id, variant) pairs this plan needs loaded."""
        return {(p.device_id, p.variant) for p in self.placements}

    def routed_pairs(self, spill: bool = False) -> set[tuple[str, str]]:
        """The (device_id, variant) pairs routes send to: those with a share of traffic, and with
        `spill` also the spill routes (weight 0, standby variants: planner/standby.py)."""
        return {(r.device_id, r.variant) for fp in self.families.values() for r in fp.routes
                if r.weight > 0 or spill}

    def loaded_models(self) -> set[tuple[str, str, int, int]]:
        """What this plan has loaded, instance config included: (device_id, variant, instances, threads)."""
        return {(p.device_id, p.variant, p.instances, p.threads) for p in self.placements}

    @property
    def effective_accuracy(self) -> float:
        """Demand-weighted predicted effective accuracy over all families (percent)."""
        total = sum(f.demand_rps for f in self.families.values())
        if total <= 0:
            return 0.0
        return sum(f.effective_accuracy * f.demand_rps for f in self.families.values()) / total

    def with_version(self, version: int, created_at: str = "") -> "Plan":
        return Plan(version=version, policy=self.policy, placements=self.placements, families=self.families,
                    solver=self.solver, created_at=created_at or self.created_at, notes=self.notes)

    def without(self, pairs: set[tuple[str, str]]) -> "Plan | None":
        """This plan with the placements `pairs` (device_id, variant) taken out and each family's
        other routes scaled up to carry their share (where only spill routes, weight 0, are left:
        those, in proportion to their placements' capacity): a routing revision, made without the
        planner, for models a device lost (its server restarted) until a re-plan loads them again.
        The served and accuracy figures stay this plan's (a note says so). None when a family
        that carries traffic would be left with no route at all."""
        families = {}
        for name, fp in self.families.items():
            kept = tuple(r for r in fp.routes if (r.device_id, r.variant) not in pairs)
            carried = sum(r.weight for r in kept)
            if carried <= 0 and any(r.weight > 0 for r in fp.routes):  # only spill routes are left
                if not kept:
                    return None
                cap = [max(getattr(self.placement(r.device_id, r.variant), "capacity_rps", 0.0), 0.0) for r in kept]
                total = sum(cap)
                kept = tuple(Route(r.device_id, r.variant, c if total > 0 else 1.0) for r, c in zip(kept, cap))
                carried = total if total > 0 else float(len(kept))
            routes = tuple(Route(r.device_id, r.variant, r.weight / carried) for r in kept) if carried > 0 else kept
            families[name] = FamilyPlan(**{**asdict(fp), "routes": routes})
        gone = ", ".join(f"{v}@{d}" for d, v in sorted(pairs))
        return Plan(version=self.version, policy=self.policy,
                    placements=tuple(p for p in self.placements if (p.device_id, p.variant) not in pairs),
                    families=families, solver=self.solver, created_at=self.created_at,
                    notes=self.notes + (f"routing revision of v{self.version}: routes to {gone} taken out (not "
                                        "loaded there any more), the other routes scaled up; served and accuracy "
                                        f"figures are v{self.version}'s",))

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        families = {
            name: FamilyPlan(**{**f, "routes": tuple(Route(**r) for r in f["routes"])})
            for name, f in d["families"].items()
        }
        return cls(version=int(d["version"]), policy=d["policy"],
                   placements=tuple(Placement(**p) for p in d["placements"]), families=families,
                   solver=SolverInfo(**d["solver"]), created_at=d.get("created_at", ""),
                   notes=tuple(d.get("notes", ())))
