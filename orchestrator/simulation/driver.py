"""One simulated run: a trace replayed through the data plane's routes on the modelled hardware.

It runs the *same* decision code as the live system (orchestrator/simulator.py lists it): the
plan's routes as the shim builds them (dataplane/routes.py), the shim's `RoutingTable` and on-time
prediction (`answer_by` over the simulated queue and batches in flight, stretched by the
device's other busy routes, each route's `Calibration` learned from its simulated batches), the
batching policies, and the control plane's `Controller.tick` over `SimControlPort`. Plan changes
are made as the executor makes them (`compute_diff`): load what is new (devices in parallel,
models on one device in turn), then switch routes; old routes drain and unload `drain_s` later.
The hardware is devices.py's; the event engine events.py's.

The loop in `Simulation.run` runs once per request: it reads the engine's heaps directly and
keeps its state in locals (compiled, native.py).
"""

from __future__ import annotations

import gc
import heapq
import math
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final, cast

import numpy as np

from orchestrator.controlplane.controller import Controller
from orchestrator.controlplane.executor import LoadedModel, compute_diff
from orchestrator.controlplane.planning import floored, initial_demand
from orchestrator.dataplane.backlog import answer_by
from orchestrator.dataplane.config import Routing
from orchestrator.dataplane.queue import EPS_S, WAKE_PAST_S, met
from orchestrator.dataplane.routes import RouteSpec, latency_model, plan_routes, route_policy, set_hold
from orchestrator.dataplane.routing import AccuracyFirst, BudgetUse, RoutingTable, SmoothWeightedRoundRobin
from orchestrator.dataplane.status import STATUS_NAMES
from orchestrator.evaluation import Outcomes, PlanEvent, Run
from orchestrator.plan import Plan
from orchestrator.profiles import ProfileSet
from orchestrator.simulation.control import SimControlPort
from orchestrator.simulation.devices import Device, Hardware, Job, Request, SimRoute, busy_others
from orchestrator.simulation.events import DONE, SWITCH, TICK, UNLOAD, Events
from orchestrator.trace import Trace

if TYPE_CHECKING:
    from orchestrator.simulator import Simulator

# indexes into STATUS_NAMES (the Status enum's order; a test checks)
OK: Final = 0
LATE: Final = 1
DROPPED: Final = 2
ERROR: Final = 3
UNSERVED: Final = 4

# planner statuses whose plan is a function of the request alone (see `Simulation.solve`)
REPRODUCIBLE = frozenset({"OPTIMAL", "HEURISTIC"})


class ArrivalBudgetUse(BudgetUse[int]):
    """The routing's `budget_use` over one family's routes (by index), for the arrival being
    routed (the run's `arrival_s`, `limit_s`: its deadline less the shim's slack), as the shim's
    client builds it: this route's queue and batches in flight, the device's other routes busy."""

    def __init__(self, run: "Simulation", routes: list[SimRoute]):
        self.run = run
        self.routes = routes

    def of(self, key: int) -> float:
        route = self.routes[key]
        run = self.run
        now = run.arrival_s
        by = answer_by(now, len(route.queue), route.batch_cap, route.model, route.flight.seconds(now),
                       busy_others(route))
        return route.calibration.budget_use(now, by, run.limit_s)

    def idle(self, key: int) -> bool:
        route = self.routes[key]
        if not route.idle():
            return False
        for other in route.others:
            if not other.idle():
                return False
        return True


@dataclass
class Pending:
    """A plan being applied: decided at `decided_s`, loading; it switches at its SWITCH event."""

    plan: Plan
    decided_s: float
    loads: int
    unloads: int
    reason: str


@dataclass
class SimStats:
    events: int = 0
    batches: int = 0
    solves: int = 0  # plans asked of the planner, the initial one included
    reused: int = 0  # of those, answered with the plan of an equal request earlier in the run
    time_limited: int = 0  # of those, solves that stopped at the planner's time limit (FEASIBLE)
    solve_s: float = 0.0  # wall seconds in the planner, the initial plan included


class Simulation:
    """The state of one simulated run (one policy on one trace)."""

    def __init__(self, sim: "Simulator", trace: Trace, policy: str, initial_demand: dict[str, float] | None,
                 duration_s: float | None):
        self.sim = sim
        self.cfg = sim.config
        self.trace = trace
        self.policy = policy
        self.initial_demand = initial_demand  # None: the trace's rate over its first seconds
        self.duration_s = duration_s if duration_s is not None else math.ceil(trace.duration_s)
        self.stats = SimStats()
        self.solved: dict[tuple, Plan] = {}  # (demand, current placements) -> reproducible plan, this run
        self.clock = Events()  # timed events and the routes' wake-ups (events.py)
        self.hardware = Hardware(self.clock, self.cfg.seed)
        n = len(trace)
        self.status = [ERROR] * n
        self.finish = [math.nan] * n
        self.served_by = [-1] * n  # route variant index
        self.served_on = [-1] * n  # device index
        speed = sim.speed
        self.devices = {d: Device(d, list(speed.factors.get(d, [])), speed.window_s) if speed else Device(d)
                        for d in sim.devices}
        self.routes: dict[tuple[str, str], SimRoute] = {}
        self.table: RoutingTable | None = None  # the plan's pickers, as the shim's (routing.py)
        # family -> (its picker, the routes its keys index, budget_use or None), for arrivals
        self.pickers: dict[str, tuple[SmoothWeightedRoundRobin[int] | AccuracyFirst[int], list[SimRoute],
                                      ArrivalBudgetUse | None]] = {}
        self.plan: Plan | None = None
        self.pending: Pending | None = None
        self.events: list[PlanEvent] = []
        self.version = 0
        families, index = trace.family_index()
        nsec = max(1, math.ceil(self.duration_s)) + 1
        second = np.minimum(trace.time_s.astype(np.int64), nsec - 1)
        per_second = np.bincount(index * nsec + second, minlength=len(families) * nsec).reshape(len(families), nsec)
        self.arrivals_per_second = {f: per_second[i] for i, f in enumerate(families)}
        self.family_of = trace.family.tolist()
        self.misses: dict[tuple[str, int], int] = {}  # (family, second answered) -> deadline misses + errors
        self.now = 0.0
        self.arrival_s = 0.0  # the arrival being routed, and its deadline less the shim's slack (`_budget_use`)
        self.limit_s = 0.0
        cfg = self.cfg
        self.view = SimControlPort(self, replace(cfg.control, policy=policy), families)
        self.controller = Controller(self.view, clock=lambda: self.now)
        # as live, where the first plan is applied before the controller starts: no dwell after it
        self.controller.last_change = -math.inf

    # --- event plumbing ---------------------------------------------------------------------

    def solve(self, demand: dict[str, float], current: Plan | None, profiles: ProfileSet | None = None,
              speed_key: tuple = ()) -> Plan:
        """A plan for `demand` from the planner, timed into the stats.

        Within a run, a request equal to one already solved (same demand, same current hosting:
        all of the request that varies and that the policy reads) gets the plan solved then,
        where that plan is reproducible: status OPTIMAL (SCIP stopped at the gap, not at the
        time limit, and it is deterministic; tests/test_planner_milp.py) or HEURISTIC (the
        baselines are plain code). A time-limited FEASIBLE plan depends on the machine's speed
        and is solved again."""
        key = (tuple(sorted(demand.items())), self._hosting_key(current), speed_key)
        self.stats.solves += 1
        plan = self.solved.get(key)
        if plan is not None:
            self.stats.reused += 1
            return plan
        t0 = time.perf_counter()
        plan = self.sim.plan_for(self.policy, demand, current, profiles)
        self.stats.solve_s += time.perf_counter() - t0
        self.stats.time_limited += plan.solver.status == "FEASIBLE"
        if plan.solver.status in REPRODUCIBLE:
            self.solved[key] = plan
        return plan

    def _hosting_key(self, current: Plan | None):
        """What of the current plan the policy reads: the MILP only what each device hosts
        (planner/problem.py `build_problem`; no device is reserved here), the baselines more."""
        if current is None:
            return None
        if self.policy == "milp":
            return frozenset((p.device_id, p.variant, p.instances, p.threads) for p in current.placements)
        return current.placements

    # --- plans ------------------------------------------------------------------------------

    def _loaded_now(self) -> dict[str, dict[str, LoadedModel]]:
        out: dict[str, dict[str, LoadedModel]] = {d: {} for d in self.sim.devices}
        if self.plan is not None:
            for p in self.plan.placements:
                out[p.device_id][p.variant] = LoadedModel(p.device_id, p.variant, p.instances, p.threads)
        return out

    def _install(self, plan: Plan, now: float, decided_s: float | None, loads: int, unloads: int,
                 reason: str) -> None:
        """Switch routing to `plan` (its models are loaded); retire routes it no longer uses."""
        self.version += 1
        plan = plan.with_version(self.version)
        shim = self.cfg.shim
        routes: dict[tuple[str, str], SimRoute] = {}
        for key, spec in plan_routes(plan, self.sim.catalog, shim.routing).items():
            old = self.routes.get(key)
            if old is not None and spec.keeps(old.placement):
                old.placement = spec.placement
                set_hold(old.policy, spec, old.model, shim)
                old.batch_cap = getattr(old.policy, "batch_cap", 1)
                if old.batch_cap >= len(old.median_s):  # its service times cover the batches up to the old cap
                    old.median_s, old.sigma = self.sim.service.curve(spec.variant, self.sim.device_class[spec.device_id],
                                                                spec.placement.instances, spec.placement.threads,
                                                                old.batch_cap)
                routes[key] = old
            else:
                routes[key] = self._new_route(spec)
        for key, r in self.routes.items():
            if routes.get(key) is not r:
                r.retired = True
                self.clock.push(now + self.cfg.control.drain_s, UNLOAD, r)
        self.routes = routes
        accuracy = self.sim.accuracy if shim.routing == Routing.ACCURACY_FIRST else None
        table = self.table = RoutingTable(plan, previous=self.table, accuracy=accuracy)
        for family in plan.families:
            live = [routes[(r.device_id, r.variant)] for r in table.routes(family)]
            self.pickers[family] = (table.picker(family), live,
                                    ArrivalBudgetUse(self, live) if accuracy is not None else None)
        self.plan = plan
        self.view.plan = plan
        if decided_s is not None and loads:
            self.view.last_apply_s = now - decided_s
        self.events.append(PlanEvent(
            time_s=round(now, 6), version=plan.version, loads=loads, unloads=unloads,
            demand_rps={f: round(fp.demand_rps, 3) for f, fp in plan.families.items()},
            routes={f: [(r.device_id, r.variant, round(r.weight, 4)) for r in fp.routes]
                    for f, fp in plan.families.items()},
            decided_s=None if decided_s is None else round(decided_s, 6), reason=reason))

    def _new_route(self, spec: RouteSpec) -> SimRoute:
        shim = self.cfg.shim
        p, cap = spec.placement, spec.batch_cap
        cls = self.sim.device_class[p.device_id]
        model = latency_model(spec, self.sim.profiles, cls, shim.percentile)
        policy = route_policy(spec, model, shim)
        # service model for batch sizes up to the largest a policy may send (AIMD never exceeds the cap)
        median_s, sigma = self.sim.service.curve(p.variant, cls, p.instances, p.threads, cap)
        # as the shim's RouteWorker: `instances` batches run, `pipeline` more wait at Triton
        route = SimRoute((p.device_id, p.variant), self.devices[p.device_id], self.sim.variant_index[p.variant],
                       self.sim.device_index[p.device_id], p, policy, model,
                       max_in_flight=p.instances + max(0, shim.pipeline), lanes=p.instances,
                       median_s=median_s, sigma=sigma)
        route.device.routes.append(route)
        route.device.routes_changed()
        return route

    def start_apply(self, target: Plan, now: float, reason: str) -> None:
        diff = compute_diff(target, self._loaded_now(), self.plan, set(self.sim.catalog.variants))
        if diff.is_empty:
            return
        per_device: dict[str, float] = {}
        for p in diff.load + diff.reload:
            per_device[p.device_id] = per_device.get(p.device_id, 0.0) + self.sim.load_delay_s(p.variant)
        # loads run in parallel over devices; the shims pick the published plan up on their next
        # poll (half a poll period on average)
        delay = max(per_device.values(), default=0.0) + self.cfg.shim.poll_s / 2
        self.pending = Pending(target, now, len(diff.load) + len(diff.reload), len(diff.unload), reason)
        self.clock.push(now + delay, SWITCH, None)

    def _tick(self, now: float) -> None:
        """One controller tick: the control plane's `Controller.tick`, on the simulated clock."""
        self.now = now
        self.controller.tick()

    # --- requests -----------------------------------------------------------------------------

    def _drive(self, route: SimRoute, now: float) -> None:
        """Ask the route's policy what to do now, and do it (drop, send, or schedule a wake-up)."""
        queue = route.queue
        while True:
            decision = route.decide(now)
            send, drop, wake = decision.send, decision.drop, decision.wake_at
            if drop:
                status = self.status
                finish = self.finish
                queue.take(drop)
                for rid in drop:
                    status[rid] = DROPPED
                    finish[rid] = now
                    self._miss(rid, now)
                    self.served_by[rid] = route.variant_index
                    self.served_on[rid] = route.device_index
            if send:
                batch = cast("list[Request]", queue.take(send))  # the simulator queues only Requests
                route.device.sends += 1
                route.sent(id(batch), len(batch), now, busy_others(route), route.device.sends)
                self.stats.batches += 1
                self.hardware.submit(route, batch, now)
                continue
            if wake is not None and queue:
                if wake <= now:
                    wake = now + WAKE_PAST_S
                if route.wake_at is None or wake < route.wake_at - EPS_S:
                    # a held queue's wake-up moves earlier with most arrivals: it goes on the
                    # wake-up heap only once it is due next (see `run`), not at every move
                    route.wake_at = wake
                    clock = self.clock
                    clock.moved[route] = None
                    if wake < clock.soonest_moved:
                        clock.soonest_moved = wake
            return

    def _done(self, payload: tuple[Job, int], now: float) -> None:
        job, version = payload
        if version != job.version:
            return  # rescheduled since: a newer event stands for it
        route, batch, sent_at = job.route, job.batch, job.sent_at
        self.hardware.finish(job, now)
        route.answered(id(batch), len(batch), sent_at, now, True, route.device.sends)
        status, finish, by, on = self.status, self.finish, self.served_by, self.served_on
        vi, di = route.variant_index, route.device_index
        for r in batch:
            rid = r.id
            if met(now, r.deadline_s):
                status[rid] = OK
            else:
                status[rid] = LATE
                self._miss(rid, now)
            finish[rid] = now
            by[rid] = vi
            on[rid] = di
        if route.queue or not route.retired:
            self._drive(route, now)

    def _miss(self, rid: int, now: float) -> None:
        key = (self.family_of[rid], int(now))
        self.misses[key] = self.misses.get(key, 0) + 1

    def _unload(self, route: SimRoute, now: float) -> None:
        """A retired route's model unloads: whatever is still queued there fails."""
        for r in list(route.queue):
            rid = r.id
            self._miss(rid, now)
            self.status[rid] = ERROR
            self.finish[rid] = now
            self.served_by[rid] = route.variant_index
            self.served_on[rid] = route.device_index
        route.queue.clear()
        if route in route.device.routes:
            route.device.routes.remove(route)
            route.device.routes_changed()

    # --- main loop ----------------------------------------------------------------------------

    def run(self) -> Run:
        """Simulate the trace. Python's cyclic garbage collector is paused meanwhile (and restored
        after): the loop makes millions of short-lived objects that reference counting frees, and
        the collector's passes over the run's long per-request lists took about 5 % of its time."""
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._loop()
        finally:
            if enabled:
                gc.enable()

    def _loop(self) -> Run:
        cfg, trace = self.cfg, self.trace
        demand0 = floored(self.initial_demand if self.initial_demand is not None else initial_demand(trace),
                          cfg.control.demand_floor)
        plan0 = self.solve(demand0, None)
        self._install(plan0, 0.0, None, len(plan0.placements), 0, "initial plan")
        for second in range(1, int(math.ceil(self.duration_s)) + 1):
            if second * cfg.control.tick_s <= self.duration_s:
                self.clock.push(second * cfg.control.tick_s, TICK, None)

        # typed locals: compiled, a comparison of untyped values (the heaps' entries are) is a
        # generic call that boxes the float; typed, it is one machine instruction
        times: list[float] = trace.time_s.tolist()
        deadlines: list[float] = (trace.time_s + trace.deadline_ms / 1000.0).tolist()  # absolute (same float sum as per request)
        families: list[str] = trace.family.tolist()
        n = len(times)
        clock = self.clock
        heap = clock.heap
        pop = heapq.heappop
        i = 0
        events = n  # every arrival, plus the timed events popped below
        status = self.status
        pickers = self.pickers  # updated in place when a plan switches
        slack_s = cfg.shim.slack_ms / 1000.0
        inf = math.inf
        wakes = clock.wakes
        now: float
        next_event: float
        next_timed: float
        next_wake: float
        kind: int
        while True:
            while wakes:
                top = wakes[0]
                w = top[2].wake_at  # (an optional float: compared once it is known to be one)
                if w is not None and w == top[0]:
                    break
                pop(wakes)  # stale: its route's wake-up moved or fired
            # arrivals before the next timed event or wake-up (at equal times those go first)
            next_event = heap[0][0] if heap else inf
            if wakes and wakes[0][0] < next_event:
                next_event = wakes[0][0]
            if clock.soonest_moved < next_event:
                next_event = clock.soonest_moved
            while i < n and times[i] < next_event:
                now = times[i]
                picker = pickers.get(families[i])
                k: int | None = None
                if picker is not None:
                    if picker[2] is not None:
                        self.arrival_s = now
                        self.limit_s = deadlines[i] - slack_s
                    k = picker[0].pick_at(now, None, picker[2])
                if picker is None or k is None:  # no route, or shed: late on every route (routing.py)
                    status[i] = DROPPED if picker is not None and picker[0].shed_last else UNSERVED
                    self.finish[i] = now
                    self._miss(i, now)
                else:
                    route = picker[1][k]
                    deadline = deadlines[i]
                    route.queue.put(Request(i, now, deadline), i, now, deadline)
                    # A busy route's policy can only drop hopeless requests (time-triggered: its
                    # wake-up and the next completion call it); skipping the call here changes no outcome.
                    if route.in_flight < route.max_in_flight:
                        self._drive(route, now)
                        if heap and heap[0][0] < next_event:
                            next_event = heap[0][0]
                        if clock.soonest_moved < next_event:
                            next_event = clock.soonest_moved
                i += 1
            next_timed = heap[0][0] if heap else inf
            next_wake = wakes[0][0] if wakes else inf
            if clock.soonest_moved < next_wake and clock.soonest_moved < next_timed:
                clock.flush_moved()  # a moved wake-up is due next: put them on the wake-up heap
                next_wake = wakes[0][0]
            if next_wake < next_timed:
                now, _, route = pop(wakes)
                w = route.wake_at
                if w is not None and w == now:  # else stale
                    route.wake_at = None
                    events += 1
                    if route.queue:
                        self._drive(route, now)
                continue
            if not heap:  # and so no arrival is left either
                break
            now, _, kind, payload = pop(heap)
            events += 1
            if kind == DONE:
                self._done(cast("tuple[Job, int]", payload), now)
            elif kind == TICK:
                self._tick(now)
            elif kind == SWITCH:
                p = self.pending
                assert p is not None  # a switch event is pushed with its pending plan
                self.pending = None
                self._install(p.plan, now, p.decided_s, p.loads, p.unloads, p.reason)
            elif kind == UNLOAD:
                self._unload(cast(SimRoute, payload), now)
        self.stats.events = events
        return self._result()

    def _result(self) -> Run:
        sim, trace = self.sim, self.trace
        arrival = trace.time_s
        finish = np.array(self.finish, dtype=np.float64)
        codes = np.array(self.status, dtype=np.int64)
        by = np.array(self.served_by, dtype=np.int64)
        on = np.array(self.served_on, dtype=np.int64)
        names = np.array(sim.variants + [""], dtype=object)
        devs = np.array(sim.devices + [""], dtype=object)
        acc = np.array([sim.catalog.variants[v].accuracy for v in sim.variants] + [0.0])
        answered = (codes == OK) | (codes == LATE)
        outcomes = Outcomes(arrival_s=arrival.copy(), family=trace.family.copy(),
                            deadline_ms=trace.deadline_ms.copy(),
                            status=np.array(STATUS_NAMES, dtype=object)[codes],
                            latency_ms=(finish - arrival) * 1000.0,
                            variant=names[by], device=devs[on], accuracy=np.where(answered, acc[by], 0.0))
        s = self.stats
        notes = [f"simulated: {s.events} events, {s.batches} batches, {s.solves} plans solved "
                 f"({s.reused} of them equal to an earlier request's, {s.time_limited} stopped at the time limit; "
                 f"{s.solve_s:.2f} s in the planner)"]
        return Run(self.policy, outcomes, self.events, float(self.duration_s), "simulated", notes)
