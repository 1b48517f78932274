"""The one place the control plane and the simulator call the planner (orchestrator/planner,
`make_plan`), and the demand a run's first plan is made for (the live bench and the simulator)."""

from __future__ import annotations

import numpy as np

from orchestrator.catalog import Catalog
from orchestrator.cluster import Cluster
from orchestrator.plan import Plan
from orchestrator.planner import POLICIES, AccuracyFloor, PlannerOptions, PlanRequest, make_plan
from orchestrator.profiles import ProfileSet
from orchestrator.trace import Trace

INITIAL_WINDOW_S = 5.0  # the first plan serves the rate of the trace's first seconds


def policies() -> list[str]:
    return list(POLICIES)


def solve_plan(catalog: Catalog, cluster: Cluster, profiles: ProfileSet, *, slo_ms: dict[str, float],
               demand_rps: dict[str, float], current: Plan | None, policy: str,
               floors: dict[str, dict] | None = None, drained: list[str] | None = None,
               options: PlannerOptions | None = None) -> Plan:
    """A plan (version 0: the executor numbers it when applied). Bad input raises UserError."""
    request = PlanRequest(
        catalog=catalog, cluster=cluster, profiles=profiles,
        slo_ms={f: s for f, s in slo_ms.items() if f in demand_rps},
        demand_rps=dict(demand_rps), current=current,
        accuracy_floor={f: AccuracyFloor(value=float(v["value"]), kind=v.get("kind", "variant"))
                        for f, v in (floors or {}).items()},
        drained=frozenset(drained or ()), options=options or PlannerOptions())
    return make_plan(request, policy=policy)


def planning_demand(families: list[str], plan: Plan | None, estimates: dict[str, float],
                    operator_override: dict[str, float], override: dict[str, float] | None = None,
                    initial_rps: float | None = None, floors: dict[str, float] | None = None) -> dict[str, float]:
    """The demand a re-plan is made for, per family: `override` (a solve request's) > the
    operator's per-family override > the controller's estimate > what the plan in force was
    made for; with no plan yet and no traffic seen, `initial_rps` (a fresh control plane's first
    plan: clients need one before they can send anything). Estimates and the rest are raised
    to the family's demand floor (`floors`: the operator's known peak, see `floored`); the
    overrides are not."""
    demand: dict[str, float] = {}
    for f in families:
        if plan is not None and f in plan.families:
            demand[f] = plan.families[f].demand_rps
        elif plan is None and initial_rps:
            demand[f] = initial_rps
        if f in estimates and (estimates[f] > 0 or f not in demand):
            demand[f] = estimates[f]
    demand = floored(demand, {f: r for f, r in (floors or {}).items() if f in families})
    demand.update(operator_override)
    if override:
        demand.update(override)
    return {f: round(float(v), 3) for f, v in demand.items()}


def floored(demand: dict[str, float], floors: dict[str, float] | None) -> dict[str, float]:
    """`demand` with each family raised to its demand floor: the rate the operator declares as
    the family's peak (`ControlPlaneConfig.demand_floor`, the family setting `demand_floor`).

    Planned for the floor, a plan places variants that keep up with the peak, while the data
    plane's accuracy-first routing (dataplane/routing.py) sends the calm's requests to the most
    accurate routes with room: the calm is served accurately and the first burst meets a plan
    made for it, instead of a plan for the calm that the controller changes only after the burst
    has shown itself (seconds later, with loads). A family with a floor and no traffic yet is
    planned for the floor."""
    out = dict(demand)
    for f, rate in (floors or {}).items():
        if rate > out.get(f, 0.0):
            out[f] = float(rate)
    return out


def initial_demand(trace: Trace, window_s: float = INITIAL_WINDOW_S) -> dict[str, float]:
    """Each family's rate over the trace's first `window_s` seconds: what an operator (or a
    controller watching before the run) provisions the first plan for."""
    w = min(window_s, max(trace.duration_s, 1e-9))
    families, index = trace.family_index()
    early = np.bincount(index[trace.time_s < w], minlength=len(families))
    return {f: float(early[i]) / w for i, f in enumerate(families)}
