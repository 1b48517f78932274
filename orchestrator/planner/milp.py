"""The exact planner: which model to solve, in which order, and the plan from its solution.

* Without a plan in force (cold): roomy groups (every option fits on every device) are fluid
  blocks, an LP; other groups are kind blocks (one-option devices counted per option, plus named
  shared slots), a MILP (model.py).
* With a plan in force (re-plan): first the plan in force *kept*: its placements, re-routed (an LP
  over each kind's hosted options). An upper bound on every plan (all integers and memory
  relaxed, no switching cost) shows whether any change could beat keeping by more than the
  change threshold; if not, the kept plan is optimal and no MILP is solved. Otherwise the MILP
  over kinds with switching costs is solved, and its plan replaces the kept one if it serves more,
  or is better by more than the threshold.
* Every solve is lexicographic: served demand first (an exact stage of its own when anything goes
  unserved), then the rest of the objective with served held at its maximum.
docs/planner.md states the formulation and proves it exact.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from orchestrator.plan import Plan, SolverInfo
from orchestrator.planner.assemble import assemble
from orchestrator.planner.model import Model, StageResult
from orchestrator.planner.fresh import rename
from orchestrator.planner.naming import flows_by_device, name_devices
from orchestrator.planner.problem import Kind, Problem
from orchestrator.planner.weights import Weights, hosted_parts, served_floor, weights_for

NOISE = 1e-6  # relative: a gap below this between a plan and a bound (served floor, tolerances) is noise
# one round of root cuts: the LP bound is usually tight already; more rounds cost time (measured:
# benchmarks/planner_bench.py); cold solves also skip presolve probing and the locks heuristic
REPLAN_SCIP = "separating/maxroundsroot = 1\nheuristics/completesol/maxunknownrate = 1\n"
MILP_MAX_INTEGERS = 5000  # larger re-plan MILPs do not reach their root bound in seconds (1,000 devices)
COLD_SCIP = REPLAN_SCIP + "propagating/probing/maxprerounds = 0\nheuristics/locks/freq = -1\n"


@dataclass
class Solved:
    stages: list[StageResult] = field(default_factory=list)
    served: float = 0.0
    rest: float = 0.0
    final: tuple[str, float] | None = None  # (status, gap) decided over several candidates

    @property
    def status(self) -> str:
        if self.final is not None:
            return self.final[0]
        names = {r.status for r in self.stages}
        for bad in ("INFEASIBLE", "UNBOUNDED", "ABNORMAL", "NOT_SOLVED"):
            if bad in names:
                return bad
        return "FEASIBLE" if "FEASIBLE" in names else "OPTIMAL"

    @property
    def ok(self) -> bool:
        return self.status in ("OPTIMAL", "FEASIBLE")

    @property
    def gap(self) -> float:
        if self.final is not None:
            return self.final[1]
        return self.stages[-1].gap if self.stages else 0.0

    def describe(self) -> str:
        return "; ".join(f"{r.stage} {r.status} gap {r.gap:.1e} {1000 * r.seconds:.1f} ms"
                         f"{' (retried: numerical troubles)' if r.retried else ''}" for r in self.stages)


def shared_slots(prob: Problem) -> int:
    """R: how many devices can carry more than one flow in a basic optimal solution."""
    override = prob.request.options.shared_devices
    if override is not None:
        return override
    floors = sum(1 for f in prob.families
                 if (fl := prob.request.accuracy_floor.get(f)) is not None and fl.kind == "average")
    return len(prob.families) + floors


def lexicographic(build, deadline: float, scip: str, gap: float) -> tuple[Model, Solved]:
    """Served first, exactly: its own stage (a MILP's without the balance rows, which cannot change
    it), then the rest of the objective with served held at that maximum. `build(balance)` makes a
    model; returns the model whose solution is the plan. The served stage gets at most half the
    time left, and its plan is the rest stage's start; if the rest stage finds nothing in its time,
    the served stage's plan is the answer (FEASIBLE, gap 1)."""
    out = Solved()
    model = build(True)
    first = build(False) if model.integer else model
    r = first.solve("served", (deadline - time.perf_counter()) / (2 if model.integer else 1),
                    scip_params=scip, gap=gap)
    out.stages.append(r)
    if not out.ok:
        return model, out
    if first is not model and model.hint_vars:
        model.hint_from(first)  # a re-plan: start from keeping, completed by stage 1's plan
    floor = served_floor(r.value)
    r = model.solve("rest", deadline - time.perf_counter(), served_floor=floor, scip_params=scip, gap=gap)
    if r.status in ("OPTIMAL", "FEASIBLE"):
        out.stages.append(r)
        out.served, out.rest = model.served(), model.rest_value()
        return model, out
    if first is model:
        out.stages.append(r)
        return model, out
    out.stages.append(StageResult("rest", "FEASIBLE", 0.0, 0.0, r.seconds, unsolved=True))
    out.served, out.rest = first.served(), first.rest_value()
    return first, out


def solve_milp(prob: Problem) -> Plan:
    t0 = time.perf_counter()
    w = weights_for(prob)
    if not prob.families or not any(g.options for g in prob.groups):
        info = SolverInfo(status="OPTIMAL", objective=-w.served * sum(prob.demand.values()) / w.scale,
                          time_ms=(time.perf_counter() - t0) * 1000, solver="SCIP")
        return assemble(prob, "milp", {}, info, notes=("nothing to place",))
    if prob.request.current is None:
        return _cold(prob, w, t0)
    return _replan(prob, w, t0)


def _cold(prob: Problem, w: Weights, t0: float) -> Plan:
    model, solved, notes, solver = solve_cold(prob, w, t0 + prob.request.options.time_limit_s)
    if not solved.ok:
        return _failed(prob, solved, solver, t0)
    return _plan(prob, w, solved, name_devices(prob, model), solver, notes=notes, t0=t0)


def solve_cold(prob: Problem, w: Weights, deadline: float) -> tuple[Model, Solved, tuple[str, ...], str]:
    """The best plan ignoring any plan in force. Groups whose devices can share (two options fit)
    are first solved fluid (memory and integrality relaxed) and poured; a group whose poured
    devices do not fit is solved again as a kind block. A fluid solution that fits is optimal:
    it meets the relaxation's bound."""
    opts = prob.request.options
    r = shared_slots(prob)
    fluid = {id(g) for g in prob.groups if g.options and g.shareable and opts.shared_devices is None}
    tries = []
    while True:
        integer = any(id(g) not in fluid or w.device_cost(g) > 0 for g in prob.groups if g.options)

        def build(balance: bool, fluid=frozenset(fluid), integer=integer) -> Model:
            model = Model(prob, w, integer, balance)
            for g in prob.groups:
                if id(g) in fluid:
                    model.add_fluid(g, g.devices, g.options)
                else:
                    kind = Kind(g, frozenset(), g.devices)
                    model.add_kind(kind, _n_slots(kind, r), loads=False)
            model.finish()
            return model

        t1 = time.perf_counter()
        model, solved = lexicographic(build, deadline, COLD_SCIP, opts.relative_gap)
        solver = "SCIP" if integer else "GLOP"
        if not solved.ok:
            break
        tries.append(f"{len(fluid)} fluid group(s), {model.size()}: {solved.describe()} "
                     f"({1000 * (time.perf_counter() - t1):.1f} ms)")
        flows = flows_by_device(model)
        unfit = {id(g) for g in prob.groups if id(g) in fluid and not _fits(g, flows)}
        if not unfit:
            break
        fluid -= unfit
    notes = ("cold: " + "; then ".join(tries), f"shared slots per kind: min(devices, {r})")
    return model, solved, notes, solver


def _fits(g, flows) -> bool:
    """Every device of g hosts at most one config per variant, within its memory."""
    for d in g.devices:
        opts = [o for o, rps in flows.get(d.id, {}).items() if rps > 1e-9]
        if len({o.variant for o in opts}) < len(opts) or sum(o.memory_mb for o in opts) > g.memory_mb + 1e-9:
            return False
    return True


def _replan(prob: Problem, w: Weights, t0: float) -> Plan:
    opts = prob.request.options
    deadline = t0 + opts.time_limit_s
    kinds = prob.kinds()

    def build_keep(balance: bool) -> Model:  # the plan in force, re-routed over what each kind hosts
        model = Model(prob, w, integer=any(w.device_cost(k.group) > 0 and k.hosted for k in kinds), balance=balance)
        for k in kinds:
            model.add_fluid(k.group, k.devices, [o for o in k.group.options if o.key in k.hosted], keep=True)
        model.finish()
        return model

    upper = _fluid_bound(prob, w)
    servable = upper.solve("served", deadline - time.perf_counter()).value
    keep_model, keep = lexicographic(build_keep, deadline, REPLAN_SCIP, opts.relative_gap)
    if not keep.ok:
        return _failed(prob, keep, "GLOP", t0)
    keep_hosted = name_devices(prob, keep_model)
    tol = opts.relative_gap * max(abs(keep.rest), 1.0)
    if keep.served >= _serves_the_most(servable):
        best = upper.solve("rest", deadline - time.perf_counter(), served_floor=served_floor(keep.served)).value
        if best - w.change <= keep.rest + tol:  # no plan beats keeping by more than the threshold
            notes = (f"kept the plan in force (routes only): no change can gain more than the change threshold "
                     f"(bound {best / w.scale:.6f} - {w.change / w.scale:.6f} <= kept {keep.rest / w.scale:.6f}); "
                     f"{keep.describe()}",)
            return _plan(prob, w, keep, keep_hosted, "GLOP", notes=notes, t0=t0)
    # a change: the best plan from scratch named onto devices with the fewest loads, and an upper
    # bound from the LP relaxation of the MILP over kinds; the MILP itself only where that bound
    # leaves a gap and the model is small enough to gain on it in the time left
    t1 = time.perf_counter()
    cold_model, cold, _, _ = solve_cold(prob, w, t1 + (deadline - t1) / 2)
    candidates = [("kept", keep.served, keep.rest, keep_hosted)]
    if cold.ok:
        hosted = rename(prob, w, cold_model)
        candidates.append(("fresh", *hosted_parts(prob, w, hosted), hosted))
    most = max(c[1] for c in candidates)
    relaxed = Model(prob, w, integer=False)
    for k in kinds:
        relaxed.add_kind(k, 0, loads=True, kind_balance=True)
    relaxed.finish()
    lp = relaxed.solve("rest", deadline - time.perf_counter(), served_floor=_serves_the_most(most))
    bound = lp.value - w.change if lp.status == "OPTIMAL" else float("inf")  # on every changed plan
    t2 = time.perf_counter()
    r = shared_slots(prob)
    binaries = sum(_n_slots(k, r) * len(k.group.options) + len(k.group.options) for k in kinds)
    milp_note = "MILP not run: the bound leaves no gap"
    if _gap(candidates, keep, bound, most) > max(opts.relative_gap, NOISE):
        if binaries > MILP_MAX_INTEGERS:
            milp_note = f"MILP not run: {binaries} integers (> {MILP_MAX_INTEGERS})"
        else:
            def build(balance: bool) -> Model:
                model = Model(prob, w, integer=True, balance=balance)
                for k in kinds:
                    model.add_kind(k, _n_slots(k, r), loads=True)
                model.finish()
                return model

            model, solved = lexicographic(build, deadline, REPLAN_SCIP, opts.relative_gap)
            if solved.ok:
                hosted = name_devices(prob, model)
                candidates.append(("milp", *hosted_parts(prob, w, hosted), hosted))
                if not solved.stages[-1].unsolved:
                    bound = min(bound, solved.stages[-1].bound - w.change)
            milp_note = (f"MILP over {len(kinds)} kinds, {model.size()}: {solved.describe()} "
                         f"({1000 * (time.perf_counter() - t2):.1f} ms)")
    most = max(c[1] for c in candidates)
    eligible = [c for c in candidates if c[1] >= _serves_the_most(most)]
    name, served, rest, hosted = max(eligible, key=lambda c: c[2])
    gap = _gap(candidates, keep, bound, most) if cold.ok and cold.status == "OPTIMAL" else 1.0
    result = Solved([], served, rest, final=("OPTIMAL" if gap <= max(opts.relative_gap, NOISE) else "FEASIBLE", gap))
    notes = (f"re-plan ({name} chosen of {', '.join(c[0] for c in candidates)}): fresh plan {cold.describe()}, "
             f"LP bound over {len(kinds)} kinds {1000 * (t2 - t1):.1f} ms; {milp_note}; gap {gap:.1e}",
             f"shared slots per kind: min(devices, {r}); kept plan: {keep.describe()}")
    return _plan(prob, w, result, hosted, "SCIP", notes=notes, t0=t0)


def _gap(candidates, keep: Solved, bound: float, most: float) -> float:
    """Relative gap of the best candidate serving `most` to the bound on every such plan (the
    kept plan, when it serves that much, bounds the plans that load nothing: it is their best)."""
    eligible = [c for c in candidates if c[1] >= _serves_the_most(most)]
    best = max(c[2] for c in eligible)
    if keep.served >= _serves_the_most(most):
        bound = max(bound, keep.rest)
    return max(0.0, bound - best) / max(abs(best), 1e-9)


def _serves_the_most(most: float) -> float:
    """The least a re-plan candidate may serve and still count as serving `most`, the most any
    candidate serves. Each candidate's served lies between its own served stage's maximum and
    that maximum's `served_floor` (its rest stage may give up that much for accuracy), and two
    stages' maxima differ by up to the same tolerance; so two floors. With one, a MILP whose
    served stage came out 3e-9 rps above the fresh plan's beat a fresh plan worth 7 % more
    (1,000 devices, x3 demand, with the MILP run)."""
    return served_floor(served_floor(most))


def _n_slots(kind: Kind, r: int) -> int:
    return min(len(kind.devices), r) if kind.group.shareable else 0


def _fluid_bound(prob: Problem, w: Weights) -> Model:
    """Every group fluid and continuous, no loads: an upper bound on what any plan serves and on
    its objective (it relaxes memory, integrality and switching; N h(T/N) <= sum of h by Jensen)."""
    model = Model(prob, w, integer=False)
    for g in prob.groups:
        model.add_fluid(g, g.devices, g.options)
    model.finish()
    return model


def _loads(prob: Problem, hosted) -> int:
    return sum(1 for d, flows in hosted.items() for o, _ in flows if o.key not in prob.current.get(d, set()))


def _plan(prob: Problem, w: Weights, solved: Solved, hosted, solver: str, notes, t0: float) -> Plan:
    """`solved.rest`: the plan's rest objective, the change threshold included where it loads."""
    unserved = sum(prob.demand.values()) - solved.served
    objective = (solved.rest - w.served * max(0.0, unserved)) / w.scale
    status = "OPTIMAL" if solved.status == "OPTIMAL" else "FEASIBLE"
    info = SolverInfo(status=status, objective=objective, gap=solved.gap,
                      time_ms=(time.perf_counter() - t0) * 1000, solver=solver)
    loads = _loads(prob, hosted) if prob.request.current is not None else 0
    notes = tuple(notes) + (f"new loads: {loads}",)
    return assemble(prob, "milp", hosted, info, notes=notes)


def _failed(prob: Problem, solved: Solved, solver: str, t0: float) -> Plan:
    info = SolverInfo(status=solved.status, time_ms=(time.perf_counter() - t0) * 1000, solver=solver)
    return assemble(prob, "milp", {}, info, notes=(f"solver returned {solved.status}; nothing is placed",))
