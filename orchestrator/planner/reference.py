"""A plain per-device MILP, the yardstick for instances too large for the exhaustive search.

Every device is named: a binary y[d, o] per (device, option) (memory, one config per variant),
a flow x[d, o] <= U cap_o y[d, o], the device's time row, a load charged per y[d, o] the device
does not host now, one binary for "anything loads" (the change threshold), a binary per device in
use when devices cost, h(utilisation) per device. Nothing is aggregated and no argument about
basic solutions is needed, so it checks those of the planner's model (milp.py, model.py).
Lexicographic like the planner: the most served first, then the rest at that. Its size grows
with devices x options: for tests and nightly checks, not for planning.
"""

from __future__ import annotations

from dataclasses import dataclass

from ortools.linear_solver import pywraplp

from orchestrator.planner.problem import Problem
from orchestrator.planner.weights import balance_rows, served_floor, weights_for



@dataclass
class Reference:
    status: str  # OPTIMAL when both stages were proven within `gap`
    served: float
    rest: float  # unscaled, as exhaustive.plan_parts
    gap: float


def reference_optimum(prob: Problem, gap: float = 1e-9, time_limit_s: float = 600.0) -> Reference:
    """The lexicographic optimum of the planner's objective by the per-device MILP (SCIP)."""
    served = _solve(prob, None, gap, time_limit_s)
    if served.status not in ("OPTIMAL", "FEASIBLE"):
        return served
    rest = _solve(prob, served_floor(served.served), gap, time_limit_s)
    status = "OPTIMAL" if (served.status, rest.status) == ("OPTIMAL", "OPTIMAL") else rest.status
    return Reference(status, rest.served, rest.rest, max(served.gap, rest.gap))


def most_served(prob: Problem, gap: float = 1e-9, time_limit_s: float = 600.0) -> Reference:
    """The first stage alone: the most any plan serves."""
    return _solve(prob, None, gap, time_limit_s)


def _solve(prob: Problem, floor: float | None, gap: float, time_limit_s: float) -> Reference:
    w = weights_for(prob)
    s = pywraplp.Solver.CreateSolver("SCIP")
    inf = s.infinity()
    u = prob.utilisation_cap
    demand = prob.demand
    rest: dict = {}
    flows = []
    demand_rows = {f: s.Constraint(-inf, demand[f]) for f in prob.families}
    floor_rows = {f: (s.Constraint(0.0, inf), fl.value) for f in prob.families
                  if (fl := prob.request.accuracy_floor.get(f)) is not None and fl.kind == "average"}
    replan = prob.request.current is not None
    change = s.BoolVar("") if replan and w.change > 0 else None
    if change is not None:
        rest[change] = -w.change
    for g in prob.groups:
        cost = w.device_cost(g)
        for d in g.devices:
            now = prob.current.get(d.id, set())
            time_row = s.Constraint(-inf, u)
            mem_row = s.Constraint(-inf, g.memory_mb)
            used = s.BoolVar("") if cost > 0 else None
            if used is not None:
                rest[used] = -cost
            by_variant: dict[str, list] = {}
            terms = []
            for o in g.options:
                if o.family not in demand:
                    continue
                y = s.BoolVar("")
                x = s.NumVar(0.0, min(u * o.capacity_rps, demand[o.family]), "")
                link = s.Constraint(-inf, 0.0)
                link.SetCoefficient(x, 1.0)
                link.SetCoefficient(y, -min(u * o.capacity_rps, demand[o.family]))
                mem_row.SetCoefficient(y, o.memory_mb)
                time_row.SetCoefficient(x, 1.0 / o.capacity_rps)
                demand_rows[o.family].SetCoefficient(x, 1.0)
                if o.family in floor_rows:
                    row, value = floor_rows[o.family]
                    row.SetCoefficient(x, o.accuracy - value)
                by_variant.setdefault(o.variant, []).append(y)
                rest[x] = w.flow(o)
                flows.append(x)
                terms.append((x, 1.0 / o.capacity_rps))
                if replan and o.key not in now:
                    rest[y] = -w.load(o)
                    if change is not None:
                        row = s.Constraint(-inf, 0.0)
                        row.SetCoefficient(y, 1.0)
                        row.SetCoefficient(change, -1.0)
                if used is not None:
                    row = s.Constraint(-inf, 0.0)
                    row.SetCoefficient(y, 1.0)
                    row.SetCoefficient(used, -1.0)
            for ys in by_variant.values():
                if len(ys) > 1:
                    row = s.Constraint(-inf, 1.0)
                    for y in ys:
                        row.SetCoefficient(y, 1.0)
            balance_rows(s, rest, w.group_balance(g), u, terms, devices=None)
    served_row = s.Constraint(floor if floor is not None else -inf, inf)
    for x in flows:
        served_row.SetCoefficient(x, 1.0)
    obj = s.Objective()
    for var, c in (((x, 1.0) for x in flows) if floor is None else rest.items()):
        obj.SetCoefficient(var, c)
    obj.SetMaximization()
    params = pywraplp.MPSolverParameters()
    params.SetDoubleParam(pywraplp.MPSolverParameters.RELATIVE_MIP_GAP, gap)
    s.SetTimeLimit(int(time_limit_s * 1000))
    status = s.Solve(params)
    name = {pywraplp.Solver.OPTIMAL: "OPTIMAL", pywraplp.Solver.FEASIBLE: "FEASIBLE"}.get(status, "FAILED")
    if name == "FAILED":
        return Reference(name, 0.0, -float("inf"), float("inf"))
    value, bound = obj.Value(), obj.BestBound()
    return Reference(name, sum(x.solution_value() for x in flows),
                     value if floor is not None else 0.0,
                     abs(bound - value) / max(abs(value), 1e-9) if name == "FEASIBLE" else 0.0)
