"""The exact planner: a linear MILP (OR-Tools, SCIP) over groups of interchangeable devices.

Formulation (docs/planner.md has it in math). Devices that share class, memory and cost form a
group g of N_g devices. In each group:

* `n[g,o]` (integer): how many devices of g are *dedicated* to option o (a variant with an
  instance config) and `xd[g,o]` (continuous) the throughput they serve together:
  xd <= U * cap_o * n.
* `S_g` *shared* slots: devices that may host several options, with binaries `y[g,s,o]`, flows
  `xs[g,s,o]`, memory sum(mem_o * y) <= M_g and time sum(xs / cap_o) <= U.
* sum_o n[g,o] <= N_g - S_g.

Why this is exact: fix which options each device hosts; what is left is a linear program in the
flows whose rows are one time-row per device and one demand row per family (plus one row per
average-accuracy floor). A basic optimal solution has at most as many non-zero flows as rows, so
at most R = #families + #average floors devices carry more than one flow. Giving every group
S_g = min(N_g, R) shared slots therefore loses no optimum, and all other devices host one option:
for those, only the count matters. When N_g <= R the slots *are* the group's devices, by name.

Objective (maximised), each term normalised so that the weights state the priority:
  served_weight * served / D  +  sum acc_o * x / (100 D)  -  switching  -  device cost  -  balance
(cost mode: served_weight * served / D - cost / C_total + 1e-3 * (accuracy - switching - balance)).
Balance: sum over devices of h(utilisation), h the piecewise-linear interpolation of u^2 (convex,
h(0) = 0). The n pool devices dedicated to o share xd evenly, so together they cost
n h(xd / (cap_o n)): the perspective of h, linear in (xd, n) segment by segment - exact, no binaries.
A pool of one device (sum_o n <= 1, so at most one xd is non-zero) is priced as a named device:
h(sum_o xd / cap_o), K segment variables for the pool instead of K per option.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ortools.linear_solver import pywraplp

from orchestrator.errors import UserError
from orchestrator.plan import Plan, SolverInfo
from orchestrator.planner.assemble import assemble
from orchestrator.planner.capacity import Option
from orchestrator.planner.problem import Group, Problem

COST_MODE_TIE = 1e-2  # cost mode: accuracy and switching only break ties between equally cheap plans
_STATUS = {pywraplp.Solver.OPTIMAL: "OPTIMAL", pywraplp.Solver.FEASIBLE: "FEASIBLE",
           pywraplp.Solver.INFEASIBLE: "INFEASIBLE", pywraplp.Solver.UNBOUNDED: "UNBOUNDED",
           pywraplp.Solver.ABNORMAL: "ABNORMAL", pywraplp.Solver.NOT_SOLVED: "NOT_SOLVED"}


@dataclass(frozen=True)
class Weights:
    """Objective coefficients shared by the MILP and the exhaustive check (so both optimise the same)."""

    served: float  # per rps served
    accuracy: float  # per (accuracy percent x rps)
    switch: float  # per unit of `switch_penalty`
    device: float  # per $/h of a device in use
    switch_cost: float
    max_memory_mb: float
    utilisation_cap: float
    scale: float  # the objective is reported divided by this (normalised units)
    balance: float = 0.0  # per rps moved between devices, the most the balance term may change

    def flow(self, o: Option) -> float:
        """Objective gain per rps routed to option o."""
        return self.served + self.accuracy * o.accuracy

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


BALANCE_SEGMENTS = 16  # h interpolates u^2 on [0, U] at U k / 16: ties within U / 16


def balance_segments(u: float) -> list[float]:
    """Slopes of h on its segments [U k / 16, U (k+1) / 16] (each U / 16 wide): h interpolates
    v^2 there, so the slope of segment k is the sum of its ends, increasing (h convex, h(0) = 0)."""
    points = [u * k / BALANCE_SEGMENTS for k in range(BALANCE_SEGMENTS + 1)]
    return [a + b for a, b in zip(points, points[1:])]


def balance_h(v: float, u: float) -> float:
    """h(v) for a utilisation v in [0, u]."""
    width = u / BALANCE_SEGMENTS
    return sum(slope * min(width, max(0.0, v - k * width)) for k, slope in enumerate(balance_segments(u)))


def weights_for(prob: Problem) -> Weights:
    """Normalised weights (served share, accuracy share, cost share) times `scale`, chosen so that
    one accuracy point x rps is worth 1: the solver's reduced costs then separate variants whose
    accuracies differ by a fraction of a point (normalised, they drown in its 1e-7 tolerances)."""
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
    return Weights(served=scale * opts.served_weight / demand, accuracy=scale * tie / (100 * demand),
                   switch=scale * tie / (100 * demand),
                   device=scale * device / total_cost if total_cost > 0 else 0.0, switch_cost=opts.switch_cost,
                   max_memory_mb=max_mem, utilisation_cap=opts.utilisation_cap, scale=scale,
                   balance=scale * tie / (100 * demand) * opts.balance_weight)


def shared_slots(prob: Problem) -> int:
    """R: how many devices can carry more than one flow in a basic optimal solution."""
    override = prob.request.options.shared_devices
    if override is not None:
        return override
    floors = sum(1 for f in prob.families
                 if (fl := prob.request.accuracy_floor.get(f)) is not None and fl.kind == "average")
    return len(prob.families) + floors


def solve_milp(prob: Problem, lenient_lp: bool = False) -> Plan:
    t0 = time.perf_counter()
    opts = prob.request.options
    w = weights_for(prob)
    u = opts.utilisation_cap
    demand = prob.demand  # a property that builds a dict: read it once
    solver = pywraplp.Solver.CreateSolver("SCIP")
    if solver is None:
        raise UserError("OR-Tools was built without SCIP; the MILP planner needs it")
    inf = solver.infinity()
    objective = solver.Objective()
    family_flow: dict[str, list] = {f: [] for f in prob.families}
    floor_rows: dict[str, pywraplp.Constraint] = {}
    for f in prob.families:
        fl = prob.request.accuracy_floor.get(f)
        if fl is not None and fl.kind == "average":
            floor_rows[f] = solver.Constraint(0.0, inf, f"floor_{f}")
    cost_on = w.device > 0
    r = shared_slots(prob)
    hint_vars, hint_values = [], []  # the current hosting, as a start SCIP completes (keeps re-plans stable)
    with_current = prob.request.current is not None
    built = []  # per group: (group, slot devices, slots [(y, xs)], pool devices, dedicated {o: (n, xd)})
    for gi, g in enumerate(prob.groups):
        if not g.options:
            built.append((g, [], [], [], {}))
            continue
        slot_devs, pool = split_devices(prob, g, r)
        slots = []
        for s, dev in enumerate(slot_devs):
            cur = prob.current.get(dev.id, set())
            time_row = solver.Constraint(-inf, u, f"time_{gi}_{s}")
            mem_row = solver.Constraint(-inf, g.memory_mb, f"mem_{gi}_{s}")
            ys, xs = {}, {}
            z = solver.BoolVar(f"z_{gi}_{s}") if cost_on else None
            if z is not None:
                objective.SetCoefficient(z, -w.device_cost(g))
            for oi, o in enumerate(g.options):
                y = solver.BoolVar(f"y_{gi}_{s}_{oi}")
                big_m = min(u * o.capacity_rps, demand[o.family])  # tighter than capacity alone
                x = solver.NumVar(0.0, big_m, f"xs_{gi}_{s}_{oi}")
                ys[o], xs[o] = y, x
                _link(solver, x, y, big_m)
                if with_current:
                    hint_vars.append(y)
                    hint_values.append(1.0 if o.key in cur else 0.0)
                time_row.SetCoefficient(x, 1.0 / o.capacity_rps)
                mem_row.SetCoefficient(y, o.memory_mb)
                objective.SetCoefficient(x, w.flow(o))
                if with_current and o.key not in cur:
                    objective.SetCoefficient(y, -w.load(o))
                if z is not None:
                    _link(solver, y, z, 1.0)
                family_flow[o.family].append(x)
                if o.family in floor_rows:
                    floor_rows[o.family].SetCoefficient(x, o.accuracy - prob.request.accuracy_floor[o.family].value)
            _one_config_per_variant(solver, ys)
            balance_rows(solver, objective, w.group_balance(g), u, [(x, 1.0 / o.capacity_rps) for o, x in xs.items()],
                     devices=None)
            slots.append((ys, xs))
        # slots that host the same now are interchangeable: order them by how many options they host
        for s in range(len(slots) - 1):
            if prob.current.get(slot_devs[s].id, set()) == prob.current.get(slot_devs[s + 1].id, set()):
                row = solver.Constraint(0.0, inf)
                for y in slots[s][0].values():
                    row.SetCoefficient(y, 1.0)
                for y in slots[s + 1][0].values():
                    row.SetCoefficient(y, -1.0)
        dedicated = {}
        if pool:
            count_row = solver.Constraint(-inf, len(pool), f"count_{gi}")
            for oi, o in enumerate(g.options):
                n = solver.IntVar(0, len(pool), f"n_{gi}_{oi}")
                x = solver.NumVar(0.0, min(u * o.capacity_rps * len(pool), demand[o.family]), f"xd_{gi}_{oi}")
                _link(solver, x, n, u * o.capacity_rps)
                if len(pool) > 1:
                    balance_rows(solver, objective, w.group_balance(g), u, [(x, 1.0 / o.capacity_rps)], devices=n)
                count_row.SetCoefficient(n, 1.0)
                objective.SetCoefficient(x, w.flow(o))
                if cost_on:
                    objective.SetCoefficient(n, -w.device_cost(g))
                family_flow[o.family].append(x)
                if o.family in floor_rows:
                    floor_rows[o.family].SetCoefficient(x, o.accuracy - prob.request.accuracy_floor[o.family].value)
                dedicated[o] = (n, x)
            if len(pool) == 1:
                # one pool device hosts at most one option (sum n <= 1): its utilisation is the sum
                # of the pool's time terms, priced like a named device's (K segments, not K per option)
                balance_rows(solver, objective, w.group_balance(g), u,
                             [(x, 1.0 / o.capacity_rps) for o, (_, x) in dedicated.items()], devices=None)
            if with_current:
                _pool_switching(solver, objective, prob, pool, gi, dedicated, w)
                for o, (n, _) in dedicated.items():
                    hint_vars.append(n)
                    hint_values.append(float(sum(1 for d in pool if o.key in prob.current.get(d.id, ()))))
        built.append((g, slot_devs, slots, pool, dedicated))
    for f, flows in family_flow.items():
        # served + unserved = demand; the objective charges unserved (equivalent to paying for
        # served, minus a constant) so that the relative gap measures the accuracy terms
        unserved = solver.NumVar(0.0, demand[f], f"unserved_{f}")
        row = solver.Constraint(demand[f], demand[f], f"demand_{f}")
        row.SetCoefficient(unserved, 1.0)
        objective.SetCoefficient(unserved, -w.served)
        for x in flows:
            row.SetCoefficient(x, 1.0)
            objective.SetCoefficient(x, objective.GetCoefficient(x) - w.served)
    objective.SetMaximization()
    params = pywraplp.MPSolverParameters()
    params.SetDoubleParam(pywraplp.MPSolverParameters.RELATIVE_MIP_GAP, opts.relative_gap)
    solver.SetTimeLimit(int(opts.time_limit_s * 1000))
    # one round of cutting planes at the root: the LP bound is usually tight already, and the
    # default rounds cost ~20-40 % of the solve time here (measured: benchmarks/planner_bench.py);
    # with no round, large pools (shared_devices=1) measured 1.6x slower
    scip = "separating/maxroundsroot = 1\n"
    if not with_current:
        # cold solves (measured side by side; re-plans measured no faster, their hint and
        # switching costs make these worth their time): presolve's probing of the binaries found
        # nothing at Proteus scale (~15 % of the solve); the "locks" rounding heuristic's early
        # plan (~0.1 % short) only delayed the root's feasibility pump (~15 %). Both only change
        # the search; SCIP still proves the 1e-6 gap.
        scip += "propagating/probing/maxprerounds = 0\nheuristics/locks/freq = -1\n"
    if lenient_lp:
        scip += "lp/checkstability = FALSE\nlp/checkdualfeas = FALSE\nlp/checkprimfeas = FALSE\n"
    solver.SetSolverSpecificParametersAsString(scip)
    if hint_vars:
        solver.SetHint(hint_vars, hint_values)
    t1 = time.perf_counter()
    status = solver.Solve(params)
    if status == pywraplp.Solver.ABNORMAL and not lenient_lp:
        # SoPlex gave up on "numerical troubles" (seen on tiny instances with a raised balance
        # weight or 1e-9 gaps): build and solve again without its stability checks; the
        # hypothesis tests check such solves against the exhaustive search like any other
        return solve_milp(prob, lenient_lp=True)
    t2 = time.perf_counter()
    name = _STATUS.get(status, str(status))
    if status not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        info = SolverInfo(status=name, time_ms=(t2 - t0) * 1000, solver="SCIP")
        return assemble(prob, "milp", {}, info, notes=(f"solver returned {name}; nothing is placed",))
    obj = objective.Value() / w.scale
    bound = objective.BestBound() / w.scale
    gap = abs(bound - obj) / max(abs(obj), 1e-9) if status == pywraplp.Solver.FEASIBLE else 0.0
    hosted = {}
    loads = 0
    for g, slot_devs, slots, pool, dedicated in built:
        got, n_loads = _assign(prob, g, slot_devs, slots, pool, dedicated)
        hosted.update(got)
        loads += n_loads
    t3 = time.perf_counter()
    info = SolverInfo(status=name, objective=obj, gap=gap, time_ms=(t3 - t0) * 1000, solver="SCIP")
    n_vars = solver.NumVariables()
    notes = (f"MILP: {n_vars} variables, {solver.NumConstraints()} constraints, "
             f"build {1000 * (t1 - t0):.1f} ms, solve {1000 * (t2 - t1):.1f} ms, assign {1000 * (t3 - t2):.1f} ms",
             f"shared slots per group: min(devices, {r}); new loads: {loads}")
    return assemble(prob, "milp", hosted, info, notes=notes)


def _link(solver, x, y, scale: float) -> None:
    """x <= scale * y"""
    row = solver.Constraint(-solver.infinity(), 0.0)
    row.SetCoefficient(x, 1.0)
    row.SetCoefficient(y, -scale)


def balance_rows(solver, objective, weight: float, u: float, time_terms, devices) -> None:
    """Charge weight x h(utilisation): the utilisation (sum of time terms) is split into segment
    variables s_k of width U/16 priced at h's increasing slopes, so a minimum fills them in order
    and prices exactly h. `devices` None: one named device (s_k <= U/16). Else the count n of pool
    devices sharing the time evenly: s_k <= n U/16 prices n h(time / n), h's perspective."""
    if weight <= 0:
        return
    width = u / BALANCE_SEGMENTS
    total = solver.Constraint(0.0, 0.0)
    for var, per_rps in time_terms:
        total.SetCoefficient(var, per_rps)
    for slope in balance_segments(u):
        seg = solver.NumVar(0.0, width if devices is None else solver.infinity(), "")
        objective.SetCoefficient(seg, -weight * slope)
        total.SetCoefficient(seg, -1.0)
        if devices is not None:
            row = solver.Constraint(-solver.infinity(), 0.0)
            row.SetCoefficient(seg, 1.0)
            row.SetCoefficient(devices, -width)


def _one_config_per_variant(solver, ys: dict[Option, object]) -> None:
    by_variant: dict[str, list] = {}
    for o, y in ys.items():
        by_variant.setdefault(o.variant, []).append(y)
    for vs in by_variant.values():
        if len(vs) > 1:
            row = solver.Constraint(-solver.infinity(), 1.0)
            for y in vs:
                row.SetCoefficient(y, 1.0)


def split_devices(prob: Problem, g: Group, r: int) -> tuple[list, list]:
    """Which devices of g are shared slots (may host several options) and which form the pool of
    single-option devices counted by `n`. Devices hosting several options now are always slots,
    so every pool device hosts at most one option now and the pool's load count is exact."""
    def current(d):
        return prob.current.get(d.id, set())
    multi = [d for d in g.devices if len(current(d)) >= 2]
    n_slots = min(len(g.devices), max(r, len(multi)))
    rest = sorted((d for d in g.devices if len(current(d)) < 2), key=lambda d: (len(current(d)), d.id))
    slots = multi + rest[:n_slots - len(multi)]
    slots.sort(key=lambda d: (sorted(current(d)), d.id))
    return slots, rest[n_slots - len(multi):]


def _pool_switching(solver, objective, prob: Problem, pool, gi: int, dedicated, w: Weights) -> None:
    """Loads in the pool: max(0, n[o] - pool devices hosting exactly o now). Exact: each pool device
    hosts at most one option now, so o goes to its current hosts first without conflicts."""
    for oi, (o, (n, _)) in enumerate(dedicated.items()):
        cur = sum(1 for d in pool if o.key in prob.current.get(d.id, ()))
        if cur == 0:
            objective.SetCoefficient(n, objective.GetCoefficient(n) - w.load(o))
        else:
            load = solver.NumVar(0.0, solver.infinity(), f"load_{gi}_{oi}")
            row = solver.Constraint(-solver.infinity(), float(cur))  # n - load <= cur
            row.SetCoefficient(n, 1.0)
            row.SetCoefficient(load, -1.0)
            objective.SetCoefficient(load, -w.load(o))


def _assign(prob: Problem, g: Group, slot_devs, slots, pool, dedicated) -> tuple[dict, int]:
    """Name the devices: slots are devices already; pool counts go to devices that host the option
    now, then to devices that host nothing usable, then to the rest (stability).
    Placements that serve nothing are kept only where the device hosts them now."""
    out: dict[str, list] = {}
    cur = {d.id: prob.current.get(d.id, set()) for d in g.devices}
    for d, (ys, xs) in zip(slot_devs, slots):
        out[d.id] = [(o, xs[o].solution_value()) for o in ys if ys[o].solution_value() > 0.5]
    free = [d.id for d in pool]
    order = {d: i for i, d in enumerate(free)}
    usable = {o.key for o in g.options}
    want = []
    for o, (n, x) in dedicated.items():
        k = int(round(n.solution_value()))
        if k > 0:
            want.append((o, k, x.solution_value() / k))
    remaining = []
    for o, k, per in want:
        holders = [d for d in free if o.key in cur[d]][:k]
        for d in holders:
            out[d] = [(o, per)]
            free.remove(d)
        remaining.append((o, k - len(holders), per))
    for o, k, per in remaining:
        pick = sorted(free, key=lambda d: (bool(cur[d] & usable), order[d]))[:k]
        for d in pick:
            out[d] = [(o, per)]
            free.remove(d)
    loads = 0
    for d in list(out):
        kept = [(o, s) for o, s in out[d] if s > 1e-9 or o.key in cur[d]]
        loads += sum(1 for o, _ in kept if o.key not in cur[d])
        out[d] = kept
    return out, loads
