"""A re-plan's first candidate when the plan in force must change: the best plan from scratch,
named onto the devices with the fewest loads.

The cold optimum (milp.solve_cold: the most served, then the best accuracy, ignoring what is
loaded now) gives each of a group's devices a set of options and flows; which physical device
gets which set is free (they are interchangeable in the cold problem). A min-cost assignment
(OR-Tools' linear sum assignment, cost = the loads the set needs on that device) picks the naming
with the least switching cost. The result is a feasible plan that serves the most any plan can;
the MILP over kinds then only has to beat it (its value is the MILP's incumbent in effect, and
the answer when the MILP finds nothing better in its time).
"""

from __future__ import annotations

import numpy as np
from ortools.graph.python import linear_sum_assignment

from orchestrator.planner.capacity import Option
from orchestrator.planner.naming import EPS, flows_by_device, keep_current
from orchestrator.planner.problem import Problem
from orchestrator.planner.weights import Weights

COST_UNITS = 1e3  # the assignment takes integer costs: loads in 1/1000 of the objective's unit


def rename(prob: Problem, w: Weights, model) -> dict[str, list[tuple[Option, float]]]:
    """The solved cold `model`'s device contents, moved within each group to the devices where they
    need the fewest loads; then what each device hosts now is kept where it fits."""
    virtual = flows_by_device(model)
    named: dict[str, dict[Option, float]] = {}
    for g in prob.groups:
        contents = [{o: rps for o, rps in virtual.get(d.id, {}).items() if rps > EPS} for d in g.devices]
        n = len(g.devices)
        if n == 0:
            continue
        index = {o: k for k, o in enumerate(g.options)}
        loads = np.zeros((n, len(g.options)))  # virtual device x option: the load it needs
        for v, cell in enumerate(contents):
            for o in cell:
                loads[v, index[o]] = w.load(o)
        missing = np.ones((len(g.options), n))  # option x device: 1 where the device lacks it now
        for i, d in enumerate(g.devices):
            for o in g.options:
                if o.key in prob.current.get(d.id, ()):
                    missing[index[o], i] = 0.0
        cost = np.rint(COST_UNITS * (loads @ missing)).astype(np.int64)
        solver = linear_sum_assignment.SimpleLinearSumAssignment()
        solver.add_arcs_with_cost(np.repeat(np.arange(n), n), np.tile(np.arange(n), n), cost.ravel())
        if solver.solve() != solver.OPTIMAL:
            mates = list(range(n))
        else:
            mates = [solver.right_mate(v) for v in range(n)]
        for v, i in enumerate(mates):
            named[g.devices[i].id] = contents[v]
    return keep_current(prob, w, named)
