"""The objective's coefficients, shared by the MILP, the exhaustive search and the reference
MILP (so all three optimise the same thing), and the balance term's piecewise-linear h.

Units: one accuracy point x rps is worth 1 (accuracy mode), so the solver's reduced costs separate
variants a fraction of a point apart; `scale` (100 x the servable demand) turns an objective back
into "effective accuracy / 100 minus penalties" for reporting."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.planner.capacity import Option
from orchestrator.planner.problem import Group, Problem

COST_MODE_TIE = 1e-2  # cost mode: accuracy and switching only break ties between equally cheap plans
BALANCE_SEGMENTS = 16  # h interpolates u^2 on [0, U] at U k / 16: ties within U / 16


@dataclass(frozen=True)
class Weights:
    """Objective coefficients (maximised)."""

    served: float  # per rps served (the weighted solve's guide; served is then made exact by stages)
    accuracy: float  # per (accuracy percent x rps)
    switch: float  # per unit of `switch_cost x size x U cap x acc`
    device: float  # per $/h of a device in use
    switch_cost: float
    max_memory_mb: float
    utilisation_cap: float
    scale: float  # the objective is reported divided by this (normalised units)
    balance: float = 0.0  # per rps moved between devices, the most the balance term may change
    change: float = 0.0  # charged once when a re-plan loads anything (the plan in force changes)

    def flow(self, o: Option) -> float:
        """Objective gain per rps routed to option o, beyond serving it."""
        return self.accuracy * o.accuracy

    def load(self, o: Option) -> float:
        """Objective loss for loading o on one device that does not host it now."""
        size = o.memory_mb / self.max_memory_mb if self.max_memory_mb > 0 else 1.0
        return self.switch * self.switch_cost * size * self.utilisation_cap * o.capacity_rps * o.accuracy

    def device_cost(self, g: Group) -> float:
        return self.device * g.cost_per_hour

    def group_balance(self, g: Group) -> float:
        """Objective loss per unit of h(utilisation) on a device of g (lowest priority). h's slope
        is at most 2U and a device's utilisation moves by rps / cap_o, so moving one rps between
        devices changes the balance term by at most `balance`."""
        slowest = min((o.capacity_rps for o in g.options), default=0.0)
        return self.balance * slowest / (2 * self.utilisation_cap)


def weights_for(prob: Problem) -> Weights:
    """Normalised weights (served share, accuracy share, cost share) times `scale`."""
    opts = prob.request.options
    # shares are of what can be served at most (demand beyond the cluster's capacity must not
    # dilute the served term below a device's cost)
    servable = sum(len(g.devices) * opts.utilisation_cap * max((o.capacity_rps for o in g.options), default=0.0)
                   for g in prob.groups)
    demand = min(sum(prob.demand.values()), servable) or 1.0
    total_cost = sum(d.cost_per_hour for g in prob.groups for d in g.devices)
    max_mem = max((o.memory_mb for g in prob.groups for o in g.options), default=1.0)
    tie = COST_MODE_TIE if opts.objective == "cost" else 1.0  # weight of accuracy and switching
    scale = 100.0 * demand / tie
    device = (1.0 if opts.objective == "cost" else opts.device_cost_weight)
    unit = scale * tie / (100 * demand)  # = 1: one accuracy point x rps
    return Weights(served=scale * opts.served_weight / demand, accuracy=unit, switch=unit,
                   device=scale * device / total_cost if total_cost > 0 else 0.0, switch_cost=opts.switch_cost,
                   max_memory_mb=max_mem, utilisation_cap=opts.utilisation_cap, scale=scale,
                   balance=unit * opts.balance_weight, change=scale * opts.change_threshold / 100.0)


def served_floor(most: float) -> float:
    """What a later stage must still serve when a stage found `most` the most served: all of it, up
    to the solvers' feasibility tolerances (about 1e-6 per row, so a stage's maximum may exceed the
    exact one by that much per flow): 1e-9 relative and 1e-4 rps absolute."""
    return most * (1 - 1e-9) - 1e-4


def balance_segments(u: float) -> list[float]:
    """Slopes of h on its segments [U k / 16, U (k+1) / 16] (each U / 16 wide): h interpolates
    v^2 there, so the slope of segment k is the sum of its ends, increasing (h convex, h(0) = 0)."""
    points = [u * k / BALANCE_SEGMENTS for k in range(BALANCE_SEGMENTS + 1)]
    return [a + b for a, b in zip(points, points[1:])]


def balance_h(v: float, u: float) -> float:
    """h(v) for a utilisation v in [0, u]."""
    width = u / BALANCE_SEGMENTS
    return sum(slope * min(width, max(0.0, v - k * width)) for k, slope in enumerate(balance_segments(u)))


def balance_rows(solver, objective: dict, weight: float, u: float, time_terms, devices) -> None:
    """Charge weight x h(utilisation) into `objective` (var -> coefficient): the utilisation (sum of
    time terms) is split into segment variables s_k of width U/16 priced at h's increasing slopes,
    so a maximum fills them in order and prices exactly h. `devices`: None for one named device
    (s_k <= U/16); a number N for N devices sharing the time evenly (s_k <= N U/16); a variable n
    for a count of devices (s_k <= n U/16): N h(time / N), h's perspective, exact and linear."""
    if weight <= 0:
        return
    width = u / BALANCE_SEGMENTS
    total = solver.Constraint(0.0, 0.0)
    for var, per_rps in time_terms:
        total.SetCoefficient(var, per_rps)
    for slope in balance_segments(u):
        if devices is None or isinstance(devices, (int, float)):
            seg = solver.NumVar(0.0, width * (1 if devices is None else devices), "")
        else:
            seg = solver.NumVar(0.0, solver.infinity(), "")
            row = solver.Constraint(-solver.infinity(), 0.0)
            row.SetCoefficient(seg, 1.0)
            row.SetCoefficient(devices, -width)
        objective[seg] = objective.get(seg, 0.0) - weight * slope
        total.SetCoefficient(seg, -1.0)


def hosted_parts(prob: Problem, w: Weights, hosted) -> tuple[float, float]:
    """(served, rest (unscaled)) of named hosting: device id -> [(option, served rps)]. Loads are
    counted per device against what it hosts now, the change threshold once if anything loads."""
    group_of = {d.id: g for g in prob.groups for d in g.devices}
    served = rest = 0.0
    loads = 0
    for dev, flows in hosted.items():
        g = group_of[dev]
        now = prob.current.get(dev, set())
        if flows:
            rest -= w.device_cost(g)
        for o, rps in flows:
            served += rps
            rest += w.flow(o) * rps
            if prob.request.current is not None and o.key not in now:
                rest -= w.load(o)
                loads += 1
        rest -= w.group_balance(g) * balance_h(sum(rps / o.capacity_rps for o, rps in flows), w.utilisation_cap)
    return served, rest - (w.change if loads else 0.0)
