"""The planner: (catalog, cluster, profiles, SLOs, demand, current plan) -> Plan. Pure code, no I/O.

    from orchestrator.planner import PlanRequest, make_plan
    plan = make_plan(PlanRequest(catalog, cluster, profiles, slo_ms={"resnet": 300},
                                 demand_rps={"resnet": 120}), policy="milp")

Policies: "milp" (the exact planner) and the baselines "model-switching", "clipper-ha",
"clipper-ht", "infaas" (see baselines.py). The MILP's plan also gets standby variants (spill
routes, standby.py) unless `PlannerOptions.standby` is off. docs/planner.md explains the formulation.
"""

from __future__ import annotations


from orchestrator.errors import UserError
from orchestrator.plan import Plan
from orchestrator.planner.baselines import clipper_ha, clipper_ht, infaas, model_switching
from orchestrator.planner.capacity import Option, usable_options
from orchestrator.planner.milp import solve_milp
from orchestrator.planner.problem import Problem, build_problem
from orchestrator.planner.request import AccuracyFloor, PlannerOptions, PlanRequest, validate
from orchestrator.planner.standby import add_standby

POLICIES = {
    "milp": solve_milp,
    "model-switching": model_switching,
    "clipper-ha": clipper_ha,
    "clipper-ht": clipper_ht,
    "infaas": infaas,
}


def make_plan(request: PlanRequest, policy: str = "milp") -> Plan:
    """Validate the request, build the problem and run one policy; bad input raises UserError."""
    if policy not in POLICIES:
        raise UserError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
    validate(request)
    problem = build_problem(request)
    plan = POLICIES[policy](problem)
    if policy == "milp" and request.options.standby:
        plan = add_standby(plan, problem)
    return plan


__all__ = ["AccuracyFloor", "Option", "POLICIES", "PlanRequest", "PlannerOptions", "Problem", "make_plan",
           "usable_options", "build_problem"]
