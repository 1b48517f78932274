"""Exhaustive search over concrete hosting, the yardstick the MILP is tested against.

For every way of giving each *named* device a set of options (at most one config per variant,
within its memory) it solves the flows as linear programs (GLOP) with the MILP's own objective
(`weights.Weights`), lexicographically as the planner does: first the most any hosting serves,
then, among hostings that serve it, the best value of the rest (accuracy, loads counted per named
device against what it hosts now, the change threshold charged once when anything is loaded,
device costs, balance). Exponential: for instances of a few devices and variants only. With no
current plan, devices of one group are interchangeable, so it enumerates multisets of hosting
sets per group instead of sequences.
"""

from __future__ import annotations

import itertools

from ortools.linear_solver import pywraplp

from orchestrator.planner.capacity import Option
from orchestrator.planner.problem import Group, Problem
from orchestrator.planner.weights import balance_h, balance_rows, served_floor, weights_for

LP_TIME_LIMIT_MS = 5_000  # a normal solve here takes milliseconds


def hosting_sets(g: Group) -> list[tuple[Option, ...]]:
    """Every set of options one device of g can host (including the empty set)."""
    out = []
    for k in range(len(g.options) + 1):
        for combo in itertools.combinations(g.options, k):
            if len({o.variant for o in combo}) == k and sum(o.memory_mb for o in combo) <= g.memory_mb:
                out.append(combo)
    return out


def exhaustive_best(prob: Problem) -> tuple[float, dict[str, tuple[Option, ...]]]:
    """The lexicographic optimum over all concrete hostings: its objective (normalised, as the
    planner reports it) and one hosting that reaches it. `exhaustive_parts` has served and rest."""
    served, rest, hosting = exhaustive_parts(prob)
    w = weights_for(prob)
    return (rest - w.served * (sum(prob.demand.values()) - served)) / w.scale, hosting


def exhaustive_parts(prob: Problem) -> tuple[float, float, dict[str, tuple[Option, ...]]]:
    """(the most served, the best rest objective (unscaled) at that, a hosting reaching both)."""
    w = weights_for(prob)
    per_group = []
    for g in prob.groups:
        sets = hosting_sets(g)
        if prob.request.current is None:
            per_group.append(list(itertools.combinations_with_replacement(sets, len(g.devices))))
        else:
            per_group.append(list(itertools.product(sets, repeat=len(g.devices))))
    hostings = []
    for choice in itertools.product(*per_group):
        hosting = {d.id: sets for g, group_choice in zip(prob.groups, choice)
                   for d, sets in zip(g.devices, group_choice)}
        hostings.append((_lp(prob, w, hosting, None)[0], hosting))
    most = max(s for s, _ in hostings)
    floor = served_floor(most)
    best, best_served, best_hosting = -float("inf"), most, {}
    for served, hosting in hostings:
        if served < floor:
            continue
        s, value = _lp(prob, w, hosting, floor)
        value += _fixed(prob, w, hosting)
        if value > best + 1e-12:
            best, best_served, best_hosting = value, s, hosting
    return best_served, best, best_hosting


def _fixed(prob: Problem, w, hosting: dict[str, tuple[Option, ...]]) -> float:
    """The hosting's fixed terms: device costs, loads, and the change threshold if anything loads."""
    group_of = {d.id: g for g in prob.groups for d in g.devices}
    value, loads = 0.0, 0
    for dev, opts in hosting.items():
        if opts:
            value -= w.device_cost(group_of[dev])
        if prob.request.current is not None:
            new = [o for o in opts if o.key not in prob.current.get(dev, set())]
            value -= sum(w.load(o) for o in new)
            loads += len(new)
    return value - (w.change if loads else 0.0)


def _lp(prob: Problem, w, hosting, floor: float | None) -> tuple[float, float]:
    """(served, optimal rest of the flows) with `hosting` fixed: max served when `floor` is None,
    else the best rest with served >= floor. GLOP first; on rare degenerate instances it stalls
    (seen: > 10 min in one solve), so it gets a time limit and the LP is then solved by another code."""
    for solver_name in ("GLOP", "CLP", "SCIP"):
        out = _solve_lp(prob, w, hosting, floor, solver_name)
        if out is not None:
            return out
    return 0.0, -float("inf")


def _solve_lp(prob: Problem, w, hosting, floor: float | None, solver_name: str) -> tuple[float, float] | None:
    lp = pywraplp.Solver.CreateSolver(solver_name)
    if lp is None:
        return None
    lp.SetTimeLimit(LP_TIME_LIMIT_MS)
    inf = lp.infinity()
    u = prob.utilisation_cap
    group_of = {d.id: g for g in prob.groups for d in g.devices}
    rest: dict = {}
    demand_rows, floor_rows = {}, {}
    served = lp.Constraint(floor if floor is not None else -inf, inf)
    for f in prob.families:
        demand_rows[f] = lp.Constraint(-inf, prob.demand[f])
        fl = prob.request.accuracy_floor.get(f)
        if fl is not None and fl.kind == "average":
            floor_rows[f] = lp.Constraint(0.0, inf)
    flows = []
    for dev, opts in hosting.items():
        time_row = lp.Constraint(-inf, u)
        terms = []
        for o in opts:
            x = lp.NumVar(0.0, inf, "")
            flows.append(x)
            terms.append((x, 1.0 / o.capacity_rps))
            time_row.SetCoefficient(x, 1.0 / o.capacity_rps)
            demand_rows[o.family].SetCoefficient(x, 1.0)
            served.SetCoefficient(x, 1.0)
            rest[x] = w.flow(o)
            if o.family in floor_rows:
                floor_rows[o.family].SetCoefficient(x, o.accuracy - prob.request.accuracy_floor[o.family].value)
        if terms:  # lowest priority: weight x h(utilisation) of this device, h's segments
            balance_rows(lp, rest, w.group_balance(group_of[dev]), u, terms, devices=None)
    obj = lp.Objective()
    for var, c in (((x, 1.0) for x in flows) if floor is None else rest.items()):
        obj.SetCoefficient(var, c)
    obj.SetMaximization()
    if lp.Solve() != pywraplp.Solver.OPTIMAL:
        return None
    return sum(x.solution_value() for x in flows), (obj.Value() if floor is not None else 0.0)


def utilisation(plan, device_id: str) -> float:
    """Share of the device's time the plan gives its placements: sum of served / capacity."""
    return sum(p.served_rps / p.capacity_rps for p in plan.placements_on(device_id) if p.capacity_rps > 0)


def plan_parts(prob: Problem, plan) -> tuple[float, float]:
    """(served, rest (unscaled)) of a concrete plan, from its placements and served throughputs:
    loads counted against each named device's current hosting, the change threshold if any."""
    w = weights_for(prob)
    group_of = {d.id: g for g in prob.groups for d in g.devices}
    rest, loads = 0.0, 0
    used = set()
    for p in plan.placements:
        g = group_of.get(p.device_id)
        if g is None:
            continue  # reserved devices are carried, not planned
        o = next(o for o in g.options if o.key == (p.variant, p.instances, p.threads))
        rest += p.served_rps * w.flow(o)
        if prob.request.current is not None and o.key not in prob.current.get(p.device_id, set()):
            rest -= w.load(o)
            loads += 1
        used.add(p.device_id)
    rest -= sum(w.device_cost(group_of[d]) for d in used)
    rest -= w.change if loads else 0.0
    for g in prob.groups:
        rest -= w.group_balance(g) * sum(balance_h(utilisation(plan, d.id), prob.utilisation_cap) for d in g.devices)
    served = sum(plan.families[f].served_rps for f in prob.families)
    return served, rest


def plan_value(prob: Problem, plan) -> float:
    """The planner's objective of a concrete plan (normalised, as `SolverInfo.objective`)."""
    w = weights_for(prob)
    served, rest = plan_parts(prob, plan)
    return (rest - w.served * (sum(prob.demand.values()) - served)) / w.scale
