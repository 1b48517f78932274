"""The planner's MILP (an LP where nothing is integer), built from blocks of devices.

Two kinds of block (docs/planner.md, "The MILP", has the exactness argument):

* `FluidBlock`: devices that can split their time over a set of options in any way (every subset
  fits on a device): one flow per option and one time row for all of them together,
  sum_o x_o / cap_o <= U N (or U z, z the devices in use when devices cost). Used for a roomy
  group without a plan in force, for each kind's hosted options when a re-plan keeps the plan in
  force, and (all integers relaxed) as the upper bound that proves keeping it optimal.
* `KindBlock`: the devices of one kind, split into *pool* devices that serve one option each,
  counted per option (`n[o]`, loads n[o] x load(o) when the kind does not host o now), and
  `slots`: named devices that may host several options (binaries `y[s, o]`, memory and time rows).

Every block adds flows to the family demand rows; the objective is kept in two parts so that the
solve can be lexicographic: served (the sum of flows) and `rest` (accuracy, loads, device costs,
balance). `solve` runs one stage: "served" (max served) or "rest" (max rest with served >= a
floor).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ortools.linear_solver import pywraplp

from orchestrator.cluster import Device
from orchestrator.errors import UserError
from orchestrator.planner.capacity import Option
from orchestrator.planner.problem import Group, Kind, Problem
from orchestrator.planner.weights import Weights, balance_rows

STATUS = {pywraplp.Solver.OPTIMAL: "OPTIMAL", pywraplp.Solver.FEASIBLE: "FEASIBLE",
          pywraplp.Solver.INFEASIBLE: "INFEASIBLE", pywraplp.Solver.UNBOUNDED: "UNBOUNDED",
          pywraplp.Solver.ABNORMAL: "ABNORMAL", pywraplp.Solver.NOT_SOLVED: "NOT_SOLVED"}


@dataclass
class FluidBlock:
    group: Group
    devices: list[Device]  # the devices it stands for, in naming order
    x: dict[Option, object]  # option -> flow
    used: object | None  # devices in use (a variable) when they cost; else all of them
    keep: bool  # the devices host these options now (a kept plan): they stay loaded


@dataclass
class KindBlock:
    kind: Kind
    slot_devices: list[Device]
    pool_devices: list[Device]
    slots: list[dict[Option, tuple[object | None, object]]]  # per slot: option -> (y or None if free, flow)
    pool: dict[Option, tuple[object, object]] = field(default_factory=dict)  # option -> (count, flow)


@dataclass
class StageResult:
    stage: str
    status: str
    value: float  # the stage's objective (unscaled)
    bound: float
    seconds: float
    unsolved: bool = False  # the stage found nothing in its time: the previous stage's plan stands
    retried: bool = False  # SoPlex gave up on numerical troubles; solved again without its stability checks

    @property
    def gap(self) -> float:
        if self.unsolved:
            return 1.0
        return abs(self.bound - self.value) / max(abs(self.value), 1e-9) if self.status == "FEASIBLE" else 0.0


class Model:
    """One solver model over blocks; `finish()` adds the demand rows, then `solve` per stage."""

    def __init__(self, prob: Problem, w: Weights, integer: bool, balance: bool = True):
        self.prob, self.w, self.integer = prob, w, integer
        # False: a model for the served stage only: no balance rows, and where memory cannot make
        # a difference (one option per device, or every option fits) only each family's fastest
        # option per group (it serves the most per unit of device time; not for average floors)
        self.balance = balance
        self.solver = pywraplp.Solver.CreateSolver("SCIP" if integer else "GLOP")
        if self.solver is None:
            raise UserError("OR-Tools was built without SCIP; the MILP planner needs it")
        self.u = prob.utilisation_cap
        self.demand = prob.demand  # a property that builds a dict: read it once
        self.rest: dict[object, float] = {}
        self.flows: dict[str, list] = {f: [] for f in prob.families}
        self.unserved: dict[str, object] = {}
        self.blocks: list[FluidBlock | KindBlock] = []
        self.hint_vars: list = []
        self.hint_values: list[float] = []
        inf = self.solver.infinity()
        self.floor_rows = {}
        for f in prob.families:
            fl = prob.request.accuracy_floor.get(f)
            if fl is not None and fl.kind == "average":
                self.floor_rows[f] = (self.solver.Constraint(0.0, inf), fl.value)
        self.served_row = None

    # --- building -------------------------------------------------------------------------

    def _add(self, var, coef: float) -> None:
        if coef:
            self.rest[var] = self.rest.get(var, 0.0) + coef

    def _flow(self, o: Option, ub: float):
        x = self.solver.NumVar(0.0, min(ub, self.demand[o.family]), "")
        self._add(x, self.w.flow(o))
        self.flows[o.family].append(x)
        if o.family in self.floor_rows:
            row, value = self.floor_rows[o.family]
            row.SetCoefficient(x, o.accuracy - value)
        return x

    def _int(self, ub: float):
        return self.solver.IntVar(0, ub, "") if self.integer else self.solver.NumVar(0.0, ub, "")

    def _link(self, x, y, scale: float) -> None:
        """x <= scale * y"""
        row = self.solver.Constraint(-self.solver.infinity(), 0.0)
        row.SetCoefficient(x, 1.0)
        row.SetCoefficient(y, -scale)

    def add_fluid(self, g: Group, devices: list[Device], options: list[Option], keep: bool = False) -> None:
        """Devices of g that may split their time over `options` freely (each device can host all)."""
        options = self._served_only([o for o in options if o.family in self.flows], prunable=True)
        if not options or not devices:
            return
        n, u, s = len(devices), self.u, self.solver
        x = {o: self._flow(o, u * o.capacity_rps * n) for o in options}
        used = None
        if self.w.device_cost(g) > 0:
            used = self._int(n)
            self._add(used, -self.w.device_cost(g))
        time_row = s.Constraint(-s.infinity(), 0.0 if used is not None else u * n)
        for o, var in x.items():
            time_row.SetCoefficient(var, 1.0 / o.capacity_rps)
        if used is not None:
            time_row.SetCoefficient(used, -u)
        self._balance(g, [(var, 1.0 / o.capacity_rps) for o, var in x.items()], used if used is not None else n)
        self.blocks.append(FluidBlock(g, devices, x, used, keep))

    def add_kind(self, kind: Kind, n_slots: int, loads: bool, kind_balance: bool = False) -> None:
        """The kind's devices: `n_slots` named slots that may host several options, the rest a pool
        of one-option devices counted per option. `loads`: charge a load for every option a device
        does not host now (a plan is in force). `kind_balance` (a relaxation's bound): one balance
        term N h(T / N) over the pool's total time T, below what any split of T costs (Jensen)."""
        g, s, u, w = kind.group, self.solver, self.u, self.w
        options = self._served_only([o for o in g.options if o.family in self.flows],
                                    prunable=g.roomy or not g.shareable)
        if not options:
            return
        roomy = g.roomy
        slot_devices, pool_devices = kind.devices[:n_slots], kind.devices[n_slots:]
        block = KindBlock(kind, slot_devices, pool_devices, [])
        cost = w.device_cost(g)
        prev_time = None
        for d in slot_devices:
            time_row = s.Constraint(-s.infinity(), u)
            mem_row = None if roomy else s.Constraint(-s.infinity(), g.memory_mb)
            used = s.BoolVar("") if cost > 0 else None
            if used is not None:
                self._add(used, -cost)
            slot: dict[Option, tuple[object | None, object]] = {}
            for o in options:
                big_m = min(u * o.capacity_rps, self.demand[o.family])
                x = self._flow(o, u * o.capacity_rps)
                new = loads and o.key not in kind.hosted
                y = None
                if new or not roomy:
                    y = s.BoolVar("")
                    self._link(x, y, big_m)
                    if mem_row is not None:
                        mem_row.SetCoefficient(y, o.memory_mb)
                    if new:
                        self._add(y, -w.load(o))
                        self.hint_vars.append(y)
                        self.hint_values.append(0.0)
                    elif loads:
                        self.hint_vars.append(y)
                        self.hint_values.append(1.0)
                    if used is not None:
                        self._link(y, used, 1.0)
                elif used is not None:
                    self._link(x, used, big_m)
                time_row.SetCoefficient(x, 1.0 / o.capacity_rps)
                slot[o] = (y, x)
            if not roomy:
                self._one_config_per_variant({o: y for o, (y, _) in slot.items()})
            terms = [(x, 1.0 / o.capacity_rps) for o, (_, x) in slot.items()]
            self._balance(g, terms, None)
            if prev_time is not None:  # slots are interchangeable: the busier first
                row = s.Constraint(0.0, s.infinity())
                for var, c in prev_time:
                    row.SetCoefficient(var, c)
                for var, c in terms:
                    row.SetCoefficient(var, row.GetCoefficient(var) - c)
            prev_time = terms
            block.slots.append(slot)
        p = len(pool_devices)
        if p:
            count_row = s.Constraint(-s.infinity(), p)
            for o in options:
                n = self._int(p)
                x = self._flow(o, u * o.capacity_rps * p)
                self._link(x, n, u * o.capacity_rps)
                count_row.SetCoefficient(n, 1.0)
                self._add(n, -cost)
                if loads and o.key not in kind.hosted:
                    self._add(n, -w.load(o))
                    self.hint_vars.append(n)
                    self.hint_values.append(0.0)
                if p > 1 and not kind_balance:
                    self._balance(g, [(x, 1.0 / o.capacity_rps)], n)
                block.pool[o] = (n, x)
            if kind_balance:
                self._balance(g, [(x, 1.0 / o.capacity_rps) for o, (_, x) in block.pool.items()], p)
            elif p == 1:
                # one pool device hosts at most one option (sum n <= 1): its utilisation is the sum
                # of the pool's time terms, priced like a named device's (K segments, not K per option)
                self._balance(g, [(x, 1.0 / o.capacity_rps) for o, (_, x) in block.pool.items()], None)
        self.blocks.append(block)

    def _served_only(self, options: list[Option], prunable: bool) -> list[Option]:
        if self.balance or not prunable:
            return options
        fastest: dict[str, Option] = {}
        for o in options:
            if o.family not in fastest or o.capacity_rps > fastest[o.family].capacity_rps:
                fastest[o.family] = o
        # an average floor needs the mix: those families keep every option
        return [o for o in options if fastest[o.family] is o or o.family in self.floor_rows]

    def _balance(self, g: Group, time_terms, devices) -> None:
        if self.balance:
            balance_rows(self.solver, self.rest, self.w.group_balance(g), self.u, time_terms, devices)

    def _one_config_per_variant(self, ys: dict[Option, object]) -> None:
        by_variant: dict[str, list] = {}
        for o, y in ys.items():
            by_variant.setdefault(o.variant, []).append(y)
        for vs in by_variant.values():
            if len(vs) > 1:
                row = self.solver.Constraint(-self.solver.infinity(), 1.0)
                for y in vs:
                    row.SetCoefficient(y, 1.0)

    def finish(self) -> None:
        """Demand rows: served + unserved = demand; and the row that holds served at a floor."""
        s = self.solver
        self.served_row = s.Constraint(-s.infinity(), s.infinity())
        for f, flows in self.flows.items():
            self.unserved[f] = s.NumVar(0.0, self.demand[f], "")
            row = s.Constraint(self.demand[f], self.demand[f])
            row.SetCoefficient(self.unserved[f], 1.0)
            for x in flows:
                row.SetCoefficient(x, 1.0)
                self.served_row.SetCoefficient(x, 1.0)

    # --- solving --------------------------------------------------------------------------

    def solve(self, stage: str, time_limit_s: float, served_floor: float | None = None,
              scip_params: str = "", gap: float = 1e-6, hint: bool = True) -> StageResult:
        s = self.solver
        obj = s.Objective()
        obj.Clear()
        if stage == "served":
            for flows in self.flows.values():
                for x in flows:
                    obj.SetCoefficient(x, 1.0)
        else:
            for var, c in self.rest.items():
                obj.SetCoefficient(var, c)
        obj.SetMaximization()
        self.served_row.SetLb(served_floor if stage == "rest" and served_floor is not None else -s.infinity())
        t0 = time.perf_counter()
        status = self._run(time_limit_s, scip_params, gap, hint)
        retried = status == pywraplp.Solver.ABNORMAL and self.integer
        if retried:
            # SoPlex gave up on "numerical troubles": solve again without its stability checks
            status = self._run(time_limit_s, scip_params + "lp/checkstability = FALSE\nlp/checkdualfeas = FALSE\n"
                               "lp/checkprimfeas = FALSE\n", gap, hint)
        seconds = time.perf_counter() - t0
        name = STATUS.get(status, str(status))
        if name not in ("OPTIMAL", "FEASIBLE"):
            return StageResult(stage, name, 0.0, 0.0, seconds, retried=retried)
        value = obj.Value()
        bound = obj.BestBound() if self.integer else value
        return StageResult(stage, name, value, bound, seconds, retried=retried)

    def _run(self, time_limit_s: float, scip_params: str, gap: float, hint: bool) -> int:
        s = self.solver
        params = pywraplp.MPSolverParameters()
        if self.integer:
            params.SetDoubleParam(pywraplp.MPSolverParameters.RELATIVE_MIP_GAP, gap)
            s.SetSolverSpecificParametersAsString(scip_params)
            if hint and self.hint_vars:
                s.SetHint(self.hint_vars, self.hint_values)
        s.SetTimeLimit(max(1, int(time_limit_s * 1000)))
        return s.Solve(params)

    def hint_from(self, other: "Model") -> None:
        """Start from `other`'s solution (same blocks, built the same way): its integer values."""
        hint = []
        for a, b in zip(self.blocks, other.blocks):
            if isinstance(a, FluidBlock):
                if a.used is not None:
                    hint.append((a.used, round(b.used.solution_value())))
                continue
            for sa, sb in zip(a.slots, b.slots):
                hint += [(y, round(sb[o][0].solution_value()) if o in sb and sb[o][0] is not None
                          else int(o in sb and sb[o][1].solution_value() > 1e-9))
                         for o, (y, _) in sa.items() if y is not None]
            hint += [(n, round(b.pool[o][0].solution_value()) if o in b.pool else 0) for o, (n, _) in a.pool.items()]
        if hint:
            self.hint_vars = [v for v, _ in hint]
            self.hint_values = [float(k) for _, k in hint]

    def served(self) -> float:
        return sum(x.solution_value() for flows in self.flows.values() for x in flows)

    def rest_value(self) -> float:
        return sum(c * var.solution_value() for var, c in self.rest.items())

    def size(self) -> str:
        return f"{self.solver.NumVariables()} variables, {self.solver.NumConstraints()} constraints"
