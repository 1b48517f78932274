"""Exhaustive search over concrete hosting, the yardstick the MILP is tested against.

For every way of giving each *named* device a set of options (at most one config per variant,
within its memory) it solves the remaining linear program in the flows (GLOP) with the MILP's own
objective (`milp.Weights`), and keeps the best. Exponential: for instances of a few devices and
variants only. With no current plan, devices of one group are interchangeable, so it enumerates
multisets of hosting sets per group instead of sequences.
"""

from __future__ import annotations

import itertools

from ortools.linear_solver import pywraplp

from orchestrator.planner.capacity import Option
from orchestrator.planner.milp import balance_h, balance_rows, weights_for
from orchestrator.planner.problem import Group, Problem


def hosting_sets(g: Group) -> list[tuple[Option, ...]]:
    """Every set of options one device of g can host (including the empty set)."""
    out = []
    for k in range(len(g.options) + 1):
        for combo in itertools.combinations(g.options, k):
            if len({o.variant for o in combo}) == k and sum(o.memory_mb for o in combo) <= g.memory_mb:
                out.append(combo)
    return out


def exhaustive_best(prob: Problem) -> tuple[float, dict[str, tuple[Option, ...]]]:
    """The best objective over all concrete hostings, and one hosting that reaches it."""
    w = weights_for(prob)
    per_group = []
    for g in prob.groups:
        sets = hosting_sets(g)
        if prob.request.current is None:
            per_group.append(list(itertools.combinations_with_replacement(sets, len(g.devices))))
        else:
            per_group.append(list(itertools.product(sets, repeat=len(g.devices))))
    best, best_hosting = -float("inf"), {}
    for choice in itertools.product(*per_group):
        hosting = {d.id: sets for g, group_choice in zip(prob.groups, choice)
                   for d, sets in zip(g.devices, group_choice)}
        value = _fixed_hosting_value(prob, w, hosting)
        if value > best + 1e-12:
            best, best_hosting = value, hosting
    return best, best_hosting


LP_TIME_LIMIT_MS = 5_000  # a normal solve here takes milliseconds


def _fixed_hosting_value(prob: Problem, w, hosting: dict[str, tuple[Option, ...]]) -> float:
    group_of = {d.id: g for g in prob.groups for d in g.devices}
    fixed = 0.0
    for dev, opts in hosting.items():
        if opts:
            fixed -= w.device_cost(group_of[dev])
        if prob.request.current is not None:
            cur = prob.current.get(dev, set())
            fixed -= sum(w.load(o) for o in opts if o.key not in cur)
    # GLOP first; on rare degenerate instances it stalls (seen: > 10 min in one solve), so it gets
    # a time limit and the same LP is then solved by another LP code
    for solver_name in ("GLOP", "CLP", "SCIP"):
        value = _solve_fixed_hosting_lp(prob, w, hosting, group_of, solver_name)
        if value is not None:
            return (value + fixed) / w.scale
    return -float("inf")


def _solve_fixed_hosting_lp(prob: Problem, w, hosting, group_of, solver_name: str) -> float | None:
    """The optimal LP objective with `hosting` fixed; None when infeasible or not solved in time."""
    lp = pywraplp.Solver.CreateSolver(solver_name)
    if lp is None:
        return None
    lp.SetTimeLimit(LP_TIME_LIMIT_MS)
    inf = lp.infinity()
    u = prob.utilisation_cap
    obj = lp.Objective()
    demand_rows, floor_rows = {}, {}
    for f in prob.families:
        unserved = lp.NumVar(0.0, inf, "")
        demand_rows[f] = lp.Constraint(prob.demand[f], prob.demand[f])
        demand_rows[f].SetCoefficient(unserved, 1.0)
        obj.SetCoefficient(unserved, -w.served)
        fl = prob.request.accuracy_floor.get(f)
        if fl is not None and fl.kind == "average":
            floor_rows[f] = lp.Constraint(0.0, inf)
    for dev, opts in hosting.items():
        time_row = lp.Constraint(-inf, u)
        flows = []
        for o in opts:
            x = lp.NumVar(0.0, inf, "")
            flows.append((x, 1.0 / o.capacity_rps))
            time_row.SetCoefficient(x, 1.0 / o.capacity_rps)
            demand_rows[o.family].SetCoefficient(x, 1.0)
            obj.SetCoefficient(x, w.flow(o) - w.served)
            if o.family in floor_rows:
                floor_rows[o.family].SetCoefficient(x, o.accuracy - prob.request.accuracy_floor[o.family].value)
        if flows:  # lowest priority: weight x h(utilisation) of this device, h's segments
            balance_rows(lp, obj, w.group_balance(group_of[dev]), u, flows, devices=None)
    obj.SetMaximization()
    if lp.Solve() != pywraplp.Solver.OPTIMAL:
        return None
    return obj.Value()


def utilisation(plan, device_id: str) -> float:
    """Share of the device's time the plan gives its placements: sum of served / capacity."""
    return sum(p.served_rps / p.capacity_rps for p in plan.placements_on(device_id) if p.capacity_rps > 0)


def plan_value(prob: Problem, plan) -> float:
    """The MILP objective of a concrete plan, from its placements and served throughputs
    (loads counted against each named device's current hosting)."""
    w = weights_for(prob)
    group_of = {d.id: g for g in prob.groups for d in g.devices}
    value = 0.0
    used = set()
    for p in plan.placements:
        g = group_of.get(p.device_id)
        if g is None:
            continue  # reserved devices are carried, not planned
        o = next(o for o in g.options if o.key == (p.variant, p.instances, p.threads))
        value += p.served_rps * w.accuracy * o.accuracy
        if prob.request.current is not None and o.key not in prob.current.get(p.device_id, set()):
            value -= w.load(o)
        used.add(p.device_id)
    value -= sum(w.device_cost(group_of[d]) for d in used)
    for g in prob.groups:
        value -= w.group_balance(g) * sum(balance_h(utilisation(plan, d.id), prob.utilisation_cap) for d in g.devices)
    value -= w.served * sum(prob.demand[f] - plan.families[f].served_rps for f in prob.families)
    return value / w.scale
