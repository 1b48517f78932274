"""The one place the control plane calls the planner (orchestrator/planner, `make_plan`)."""

from __future__ import annotations

from orchestrator.catalog import Catalog
from orchestrator.cluster import Cluster
from orchestrator.plan import Plan
from orchestrator.planner import POLICIES, AccuracyFloor, PlanRequest, make_plan
from orchestrator.profiles import ProfileSet


def policies() -> list[str]:
    return list(POLICIES)


def solve_plan(catalog: Catalog, cluster: Cluster, profiles: ProfileSet, *, slo_ms: dict[str, float],
               demand_rps: dict[str, float], current: Plan | None, floors: dict[str, dict],
               drained: list[str], policy: str) -> Plan:
    """A plan (version 0: the executor numbers it when applied). Bad input raises UserError."""
    request = PlanRequest(
        catalog=catalog, cluster=cluster, profiles=profiles,
        slo_ms={f: s for f, s in slo_ms.items() if f in demand_rps},
        demand_rps=demand_rps, current=current,
        accuracy_floor={f: AccuracyFloor(value=float(v["value"]), kind=v.get("kind", "variant"))
                        for f, v in floors.items()},
        drained=frozenset(drained))
    return make_plan(request, policy=policy)
