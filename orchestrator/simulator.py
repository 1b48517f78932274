"""A discrete-event simulator of the serving system: replays a trace against a modelled cluster.

(About 800 lines for now: the event engine, the device model and the driver over the data plane
are to be split (issue 15), each checked against `benchmarks/outcomes.py` and the compiled speed
of `benchmarks/simulator_bench.py`; one compiled module keeps their per-request calls direct.)

It runs the *same* decision code as the live system and models only what the hardware does:

* planner (orchestrator/planner `make_plan`, any policy), re-planned by the control plane's own
  `Controller.tick` (controlplane/controller.py: demand estimators, hysteresis band, miss
  trigger and headroom, dwell time), run on a simulated clock over a stand-in for the control
  plane (`_ControlView`) whose telemetry intake is fed from the simulated outcomes;
* routes: the plan's routes as the shim builds them (dataplane/routes.py `plan_routes`: pairs,
  batch caps, deadlines, spill routes, latency models, batching policies and hold bounds, when a
  route is kept across plans), with the shim's `RoutingTable` (routing.py: accuracy-first or
  weighted, per `ShimConfig.routing`) and its on-time prediction (backlog.py `answer_by` over the
  simulated queue and batches in flight, stretched by the device's other busy routes, each
  route's `Calibration` learned from its simulated batches);
* batching: the shim's policy objects (same ShimConfig defaults: Proteus, p95 latency model,
  2 ms slack, batches in flight per route = Triton instances + `pipeline` (1));
* plan changes as the executor makes them (`executor.compute_diff`): load what is new (a
  configurable delay per model, from its size; devices in parallel, models on one device in
  turn), then switch routes; old routes drain their queues and are unloaded `drain_s` later.

What is modelled: a batch of b takes the profiled p50 latency at b on the device alone, or, with
`noise`, a lognormal draw whose median is p50 and whose 99th percentile is p99 (both interpolated
in b by `LatencyModel`). Each route runs at most `instances` batches at once (more wait in its
own line, FIFO); the routes with a batch running share the device equally (processor sharing, as
concurrent models time-slice a CPU's cores or a GPU), so a small variant's batch is slowed, not
queued, by a large one beside it. Network and RPC time are folded into the profiles (they are measured
through Triton). docs/evaluation.md states what is not modelled.

Output: a `Run` of per-request `Outcomes` in the live bench's shape (orchestrator/evaluation.py).
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import cast

import numpy as np

from orchestrator.backlog import Calibration, InFlight, answer_by
from orchestrator.batching import EPS_S, WAKE_PAST_S, LatencyModel, Policy, RouteQueue
from orchestrator.catalog import Catalog
from orchestrator.cluster import Cluster
from orchestrator.controlplane.controller import Controller
from orchestrator.controlplane.demand import make_estimator
from orchestrator.controlplane.executor import LoadedModel, compute_diff
from orchestrator.controlplane.intake import FamilySecond
from orchestrator.controlplane.planning import initial_demand, planning_demand, solve_plan
from orchestrator.controlplane.service import ControlPlaneConfig
from orchestrator.dataplane.config import ShimConfig
from orchestrator.dataplane.routes import RouteSpec, latency_model, plan_routes, route_policy, set_hold
from orchestrator.dataplane.status import STATUS_NAMES
from orchestrator.evaluation import Outcomes, PlanEvent, Run
from orchestrator.plan import Placement, Plan
from orchestrator.planner import PlannerOptions
from orchestrator.profiles import ProfileSet
from orchestrator.routing import AccuracyFirst, RoutingTable, SmoothWeightedRoundRobin
from orchestrator.trace import Trace

Z99 = 2.3263478740408408  # standard normal 99th percentile
OK, LATE, DROPPED, ERROR, UNSERVED = range(5)  # indexes into STATUS_NAMES (the Status enum's order; a test checks)

# planner statuses whose plan is a function of the request alone (see `_Simulation.solve`)
REPRODUCIBLE = frozenset({"OPTIMAL", "HEURISTIC"})

# event kinds (the heap orders by time, then sequence number); routes' wake-ups are kept apart
_DONE, _TICK, _SWITCH, _UNLOAD = range(4)


@dataclass(frozen=True)
class SimConfig:
    """How the simulated system is set up. Defaults follow the live system's defaults."""

    shim: ShimConfig = ShimConfig()  # batching policy, percentile, slack, in-flight per route
    # the controller's settings, as the live control plane takes them: estimator, tick, dwell,
    # hysteresis, miss-rate trigger, telemetry lateness, drain; `auto` False keeps the first plan
    # for the whole trace (`policy` is the one each run names)
    control: ControlPlaneConfig = field(default_factory=ControlPlaneConfig)
    # model-load delay = fixed part + size term; defaults from this machine's embedded Triton
    # (python backend): ResNet-18 (47 MB) loads in ~2 s, ResNet-50 (102 MB) in ~2.5 s
    load_fixed_s: float = 1.5
    load_s_per_gb: float = 10.0
    noise: bool = True  # service times drawn from the p50..p99 spread (False: p50 exactly)
    seed: int = 0
    planner: PlannerOptions = PlannerOptions()

    def __post_init__(self) -> None:
        make_estimator(self.control.estimator)  # ValueError naming the choices for a typo


class _Req:
    """One simulated request; what the batching policy reads (the `Queued` protocol)."""

    __slots__ = ("id", "arrival_s", "deadline_s", "serve_late")

    def __init__(self, rid: int, arrival_s: float, deadline_s: float):
        self.id = rid
        self.arrival_s = arrival_s
        self.deadline_s = deadline_s
        self.serve_late = False


class _Job:
    """A batch running on a device: its work left (seconds of the device alone) and the version
    of its completion event (an older event for it is stale)."""

    __slots__ = ("route", "batch", "sent_at", "work_s", "version")

    def __init__(self, route: "_Route", batch: "list[_Req]", sent_at: float, work_s: float):
        self.route = route
        self.batch = batch
        self.sent_at = sent_at
        self.work_s = work_s
        self.version = 0


class _Device:
    """A device shared by its routes' models. Each route runs at most `lanes` batches at once
    (its Triton instances; more wait in the route's own line, FIFO); the routes with a batch
    running share the device equally (processor sharing: concurrent models time-slice a CPU's
    cores or a GPU). One route alone runs at full speed, as profiled."""

    __slots__ = ("id", "running", "sharing", "updated_at", "routes")

    def __init__(self, device_id: str):
        self.id = device_id
        self.running: list[_Job] = []
        self.sharing = 0  # routes with a batch running (the jobs' routes, counted once each)
        self.updated_at = 0.0  # when the running jobs' work was last brought up to date
        self.routes: list[_Route] = []  # routes with a model here, retired ones until they unload

    def routes_changed(self) -> None:
        """Tell each route its neighbours here (those with a batch in flight slow its answers)."""
        for r in self.routes:
            r.others = tuple(o for o in self.routes if o is not r)


def _busy_others(route: "_Route") -> int:
    """How many of the route's device's other routes have a batch in flight (as the shim sees it)."""
    n = 0
    for r in route.others:
        if r.flight.last is not None:
            n += 1
    return n


class _Route:
    """One (device, variant) route: queue, batching policy, service-time model."""

    __slots__ = ("key", "device", "variant_index", "device_index", "policy", "queue", "in_flight",
                 "max_in_flight", "lanes", "median_s", "sigma", "wake_at", "retired", "placement", "flight",
                 "start_s", "last_done", "model", "calibration", "running", "waiting", "others", "predicted_s",
                 "batch_cap", "seconds")

    def __init__(self, key: tuple[str, str], device: _Device, variant_index: int, device_index: int,
                 placement: Placement, policy: Policy, model: LatencyModel, max_in_flight: int, lanes: int,
                 median_s: list[float], sigma: list[float]):
        self.key = key
        self.placement = placement
        self.policy = policy
        self.model = model
        self.seconds = model.seconds  # batch size -> predicted seconds (bound once: asked per request)
        self.batch_cap: int = getattr(policy, "batch_cap", 1)  # the policy's (kept equal at each plan)
        self.max_in_flight = max_in_flight  # batches sent and not answered, at most
        self.lanes = lanes  # of those, running at once (Triton instances)
        self.median_s = median_s  # per batch size 0..cap: service time's median (seconds)
        self.sigma = sigma  # and lognormal sigma
        self.device = device
        self.variant_index = variant_index
        self.device_index = device_index
        self.queue = RouteQueue()
        self.in_flight = 0
        self.wake_at: float | None = None
        self.retired = False
        self.flight = InFlight()  # id(batch) -> predicted finish (as the shim's worker keeps it)
        self.start_s: float | None = None  # when a batch sent now would start (`InFlight.start_s`)
        self.last_done = -math.inf
        self.calibration = Calibration()  # actual / predicted batch time lately, as the shim's worker
        self.predicted_s: dict[int, float] = {}  # id(batch) -> its predicted time when sent (for calibration)
        self.running = 0  # batches of this route running on the device (at most `lanes`)
        self.waiting: deque[tuple[list[_Req], float]] = deque()  # (batch, sent_at) sent while every lane was busy
        self.others: tuple[_Route, ...] = ()  # the device's other routes, in its order (`_Device.routes_changed`)


@dataclass
class _Pending:
    """A plan being applied: decided, loading, switching at `switch_at`."""

    plan: Plan
    decided_s: float
    loads: int
    unloads: int
    reason: str


class _ControlView:
    """The controller's port (controlplane/port.py) on the simulated clock, so that the real
    `Controller.tick` runs unchanged: telemetry seconds come from the simulated outcomes, `solve`
    calls the planner, `apply` starts a simulated plan change, which keeps it busy until it is in
    force. Devices do not fail; history and decision records are dropped."""

    def __init__(self, run: "_Simulation", config: ControlPlaneConfig, families: list[str]):
        self._run = run
        self.config = config
        self.catalog = run.sim.catalog
        self.plan: Plan | None = None
        self.estimates: dict[str, float] = {}
        self.counters = {"replans": 0}
        self.down: set[str] = set()
        self._families = families
        self.last_apply_s = 0.0  # how long the last plan change with loads took (the forecaster's horizon)
        self._flushed = 0  # seconds before this one were handed to the controller

    @property
    def busy(self) -> bool:
        return self._run.pending is not None

    def device_live(self, device_id: str) -> bool:
        return True  # simulated devices do not fail

    # nothing is persisted
    def record_history(self, rows: list[dict]) -> None:
        pass

    def record_decision(self, kind: str, reason: str, plan_version: int | None = None,
                        detail: dict | None = None, ts: float | None = None) -> None:
        pass

    def flush_telemetry(self, before_second: int) -> list[FamilySecond]:
        """The telemetry seconds that are final, from the simulated outcomes."""
        rows = []
        run = self._run
        for second in range(self._flushed, max(self._flushed, before_second)):
            for f, counts in run.arrivals_per_second.items():
                arrivals = int(counts[second]) if second < len(counts) else 0
                rows.append(FamilySecond(f, second, arrivals=arrivals,
                                         deadline_misses=run.misses.pop((f, second), 0)))
        self._flushed = max(self._flushed, before_second)
        return rows

    def device_ids(self) -> list[str]:
        return list(self._run.sim.devices)

    def planning_demand(self, override: dict[str, float] | None = None) -> dict[str, float]:
        return planning_demand(self._families, self.plan, self.estimates, {}, override)

    def solve(self) -> Plan:
        return self._run.solve(self.planning_demand(), self.plan)

    def apply(self, target: Plan, reason: str, kind: str = "apply") -> None:
        self._run._start_apply(target, self._run.now, reason)


@dataclass
class SimStats:
    events: int = 0
    batches: int = 0
    solves: int = 0  # plans asked of the planner, the initial one included
    reused: int = 0  # of those, answered with the plan of an equal request earlier in the run
    time_limited: int = 0  # of those, solves that stopped at the planner's time limit (FEASIBLE)
    solve_s: float = 0.0  # wall seconds in the planner, the initial plan included
    notes: list[str] = field(default_factory=list)


class Simulator:
    """Replays traces against one modelled cluster; `run(trace, policy)` returns a `Run`."""

    def __init__(self, catalog: Catalog, cluster: Cluster, profiles: ProfileSet, slo_ms: dict[str, float],
                 config: SimConfig = SimConfig(), service_profiles: ProfileSet | None = None):
        """`profiles` are what the planner and the batching policy plan with (as live);
        `service_profiles`, when given, are what the modelled devices really take (e.g. a live
        run's observed service times, `Run.observed_profiles`), per (variant, device class) that
        has records there, else `profiles`."""
        self.catalog = catalog
        self.cluster = cluster
        self.profiles = profiles
        self.service_profiles = service_profiles
        self.slo_ms = dict(slo_ms)
        self.config = config
        self.device_class = {d.id: d.device_class for d in cluster.devices}
        self.variants = sorted(catalog.variants)
        self.variant_index = {v: i for i, v in enumerate(self.variants)}
        self.accuracy = {name: v.accuracy for name, v in catalog.variants.items()}
        self.devices = [d.id for d in cluster.devices]
        self.device_index = {d: i for i, d in enumerate(self.devices)}
        self._service_cache: dict[tuple, tuple[list[float], list[float]]] = {}
        self.last_stats = SimStats()

    # --- models of the hardware ---------------------------------------------------------------

    def load_delay_s(self, variant: str) -> float:
        """Seconds to load one variant on a device (fixed part + size term)."""
        v = self.catalog.variants.get(variant)
        size_gb = v.onnx_bytes / 1e9 if v is not None else 0.0
        return self.config.load_fixed_s + self.config.load_s_per_gb * size_gb

    def _service(self, variant: str, device_class: str, instances: int, threads: int, cap: int):
        """Per batch size 0..cap: (median seconds, lognormal sigma)."""
        key = (variant, device_class, instances, threads, cap)
        hit = self._service_cache.get(key)
        if hit is None:
            records = self.service_profiles.for_pair(variant, device_class) if self.service_profiles else []
            records = records or self.profiles.for_pair(variant, device_class)
            p50 = LatencyModel.from_profiles(records, "p50", instances=instances, threads=threads)
            p99 = LatencyModel.from_profiles(records, "p99", instances=instances, threads=threads)
            med, sig = [0.0], [0.0]
            for b in range(1, cap + 1):
                m = p50.seconds(b)
                hi = p99.seconds(b)
                med.append(m)
                sig.append(math.log(hi / m) / Z99 if self.config.noise and m > 0 and hi > m else 0.0)
            hit = self._service_cache[key] = (med, sig)
        return hit

    # --- the run --------------------------------------------------------------------------------

    def plan_for(self, policy: str, demand: dict[str, float], current: Plan | None) -> Plan:
        return solve_plan(self.catalog, self.cluster, self.profiles, slo_ms=self.slo_ms, demand_rps=demand,
                          current=current, policy=policy, options=self.config.planner)

    def run(self, trace: Trace, policy: str, initial_demand: dict[str, float] | None = None,
            duration_s: float | None = None) -> Run:
        simulation = _Simulation(self, trace, policy, initial_demand, duration_s)
        self.last_stats = simulation.stats  # events, batches, planner calls and time of the latest run
        return simulation.run()


class _Simulation:
    """The state of one simulated run (one policy on one trace)."""

    def __init__(self, sim: Simulator, trace: Trace, policy: str, initial_demand: dict[str, float] | None,
                 duration_s: float | None):
        self.sim = sim
        self.cfg = sim.config
        self.trace = trace
        self.policy = policy
        self.initial_demand = initial_demand  # None: the trace's rate over its first seconds
        self.duration_s = duration_s if duration_s is not None else math.ceil(trace.duration_s)
        self.rng = random.Random(self.cfg.seed)
        self.gauss_next: float | None = None  # `_gauss`'s second draw, kept for its next call
        self.stats = SimStats()
        self.solved: dict[tuple, Plan] = {}  # (demand, current placements) -> reproducible plan, this run
        self.heap: list = []
        self.seq = 0
        # Wake-ups: each route has at most one pending, its `wake_at`, which a later decision may
        # move earlier (never later) before it fires. `wakes` is a heap of (time, seq, route),
        # an entry live while its route's wake_at is still that time; `moved` holds the routes
        # whose wake_at moved since they were last put there (in order), the earliest at
        # `soonest_moved`.
        self.wakes: list = []
        self.moved: dict[_Route, None] = {}
        self.soonest_moved = math.inf
        n = len(trace)
        self.status = [ERROR] * n
        self.finish = [math.nan] * n
        self.served_by = [-1] * n  # route variant index
        self.served_on = [-1] * n  # device index
        self.devices = {d: _Device(d) for d in sim.devices}
        self.routes: dict[tuple[str, str], _Route] = {}
        self.retired: list[_Route] = []
        self.table: RoutingTable | None = None  # the plan's pickers, as the shim's (routing.py)
        # family -> (its picker, the routes its keys index, budget_use or None), for arrivals
        self.pickers: dict[str, tuple[SmoothWeightedRoundRobin[int] | AccuracyFirst[int], list[_Route],
                                      Callable[[int], float] | None]] = {}
        self.plan: Plan | None = None
        self.pending: _Pending | None = None
        self.events: list[PlanEvent] = []
        self.version = 0
        families = trace.families()
        nsec = max(1, math.ceil(self.duration_s)) + 1
        self.arrivals_per_second = {
            f: np.bincount(np.minimum(trace.time_s[trace.family == f].astype(np.int64), nsec - 1), minlength=nsec)
            for f in families}
        self.family_of = trace.family.tolist()
        self.misses: dict[tuple[str, int], int] = {}  # (family, second answered) -> deadline misses + errors
        self.now = 0.0
        self.arrival_s = 0.0  # the arrival being routed, and its deadline less the shim's slack (`_budget_use`)
        self.limit_s = 0.0
        cfg = self.cfg
        self.view = _ControlView(self, replace(cfg.control, policy=policy), families)
        self.controller = Controller(self.view, clock=lambda: self.now)
        # as live, where the first plan is applied before the controller starts: no dwell after it
        self.controller.last_change = -math.inf

    # --- event plumbing ---------------------------------------------------------------------

    def solve(self, demand: dict[str, float], current: Plan | None) -> Plan:
        """A plan for `demand` from the planner, timed into the stats.

        Within a run, a request equal to one already solved (same demand, same current hosting:
        all of the request that varies and that the policy reads) gets the plan solved then,
        where that plan is reproducible: status OPTIMAL (SCIP stopped at the gap, not at the
        time limit, and it is deterministic; tests/test_planner_milp.py) or HEURISTIC (the
        baselines are plain code). A time-limited FEASIBLE plan depends on the machine's speed
        and is solved again."""
        key = (tuple(sorted(demand.items())), self._hosting_key(current))
        self.stats.solves += 1
        plan = self.solved.get(key)
        if plan is not None:
            self.stats.reused += 1
            return plan
        t0 = time.perf_counter()
        plan = self.sim.plan_for(self.policy, demand, current)
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

    def push(self, t: float, kind: int, payload) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, payload))

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
        routes: dict[tuple[str, str], _Route] = {}
        for key, spec in plan_routes(plan, self.sim.catalog, shim.routing).items():
            old = self.routes.get(key)
            if old is not None and spec.keeps(old.placement):
                old.placement = spec.placement
                set_hold(old.policy, spec, old.model, shim)
                old.batch_cap = getattr(old.policy, "batch_cap", 1)
                if old.batch_cap >= len(old.median_s):  # its service times cover the batches up to the old cap
                    old.median_s, old.sigma = self.sim._service(spec.variant, self.sim.device_class[spec.device_id],
                                                                spec.placement.instances, spec.placement.threads,
                                                                old.batch_cap)
                routes[key] = old
            else:
                routes[key] = self._new_route(spec)
        for key, r in self.routes.items():
            if routes.get(key) is not r:
                r.retired = True
                self.retired.append(r)
                self.push(now + self.cfg.control.drain_s, _UNLOAD, r)
        self.routes = routes
        accuracy = self.sim.accuracy if shim.routing == "accuracy-first" else None
        table = self.table = RoutingTable(plan, previous=self.table, accuracy=accuracy)
        for family in plan.families:
            live = [routes[(r.device_id, r.variant)] for r in table.routes(family)]
            self.pickers[family] = (table.picker(family), live,
                                    self._budget_use(live) if accuracy is not None else None)
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

    def _budget_use(self, routes: list[_Route]):
        """The routing's `budget_use` over one family's routes (by index), for the arrival being
        routed (`arrival_s`, `limit_s`: its deadline less the shim's slack), as the shim's client
        builds it: this route's queue and batches in flight, the device's other routes busy."""
        def budget_use(k: int) -> float:
            route = routes[k]
            now = self.arrival_s
            by = answer_by(now, len(route.queue), route.batch_cap, route.seconds, route.flight.seconds(now),
                           _busy_others(route))
            return route.calibration.budget_use(now, by, self.limit_s)
        return budget_use

    def _new_route(self, spec: RouteSpec) -> _Route:
        shim = self.cfg.shim
        p, cap = spec.placement, spec.batch_cap
        cls = self.sim.device_class[p.device_id]
        model = latency_model(spec, self.sim.profiles, cls, shim.percentile)
        policy = route_policy(spec, model, shim)
        # service model for batch sizes up to the largest a policy may send (AIMD never exceeds the cap)
        median_s, sigma = self.sim._service(p.variant, cls, p.instances, p.threads, cap)
        # as the shim's RouteWorker: `instances` batches run, `pipeline` more wait at Triton
        route = _Route((p.device_id, p.variant), self.devices[p.device_id], self.sim.variant_index[p.variant],
                       self.sim.device_index[p.device_id], p, policy, model,
                       max_in_flight=p.instances + max(0, shim.pipeline), lanes=p.instances,
                       median_s=median_s, sigma=sigma)
        route.device.routes.append(route)
        route.device.routes_changed()
        return route

    def _start_apply(self, target: Plan, now: float, reason: str) -> None:
        diff = compute_diff(target, self._loaded_now(), self.plan, set(self.sim.catalog.variants))
        if diff.is_empty:
            return
        per_device: dict[str, float] = {}
        for p in diff.load + diff.reload:
            per_device[p.device_id] = per_device.get(p.device_id, 0.0) + self.sim.load_delay_s(p.variant)
        # loads run in parallel over devices; the shims pick the published plan up on their next
        # poll (half a poll period on average)
        delay = max(per_device.values(), default=0.0) + self.cfg.shim.poll_s / 2
        self.pending = _Pending(target, now, len(diff.load) + len(diff.reload), len(diff.unload), reason)
        self.push(now + delay, _SWITCH, None)

    def _tick(self, now: float) -> None:
        """One controller tick: the control plane's `Controller.tick`, on the simulated clock."""
        self.now = now
        self.controller.tick()

    # --- requests -----------------------------------------------------------------------------

    def _drive(self, route: _Route, now: float) -> None:
        """Ask the route's policy what to do now, and do it (drop, send, or schedule a wake-up)."""
        policy = route.policy
        queue = route.queue
        while True:
            start = route.start_s
            decision = policy.decide(queue, now, route.in_flight < route.max_in_flight, start)
            send, drop, wake = decision.send, decision.drop, decision.wake_at
            if drop:
                status = self.status
                finish = self.finish
                for rid in drop:
                    queue.pop(rid)
                    status[rid] = DROPPED
                    finish[rid] = now
                    self._miss(rid, now)
                    self.served_by[rid] = route.variant_index
                    self.served_on[rid] = route.device_index
            if send:
                batch = [cast(_Req, queue.pop(rid)) for rid in send]  # the simulator queues only _Req
                route.in_flight += 1
                finish_at = (start if start is not None and start > now else now) + route.model.seconds(len(batch))
                route.flight.add(id(batch), finish_at)
                route.predicted_s[id(batch)] = (finish_at - now) * (1 + _busy_others(route))  # as the shim's worker
                route.start_s = route.flight.start_s(route.lanes)
                self._submit(route, batch, now)
                continue
            if wake is not None and queue:
                if wake <= now:
                    wake = now + WAKE_PAST_S
                if route.wake_at is None or wake < route.wake_at - EPS_S:
                    # a held queue's wake-up moves earlier with most arrivals: it goes on the
                    # wake-up heap only once it is due next (see `run`), not at every move
                    route.wake_at = wake
                    self.moved[route] = None
                    if wake < self.soonest_moved:
                        self.soonest_moved = wake
            return

    def _submit(self, route: _Route, batch: list[_Req], now: float) -> None:
        self.stats.batches += 1
        if route.running < route.lanes:
            self._start(route, batch, now, now)
        else:
            route.waiting.append((batch, now))

    def _share(self, dev: _Device, now: float) -> None:
        """Bring the running jobs' work up to `now` at the old shares (call before a change)."""
        elapsed = now - dev.updated_at
        if elapsed > 0 and dev.running:
            rate = 1.0 / dev.sharing
            for j in dev.running:
                j.work_s -= elapsed * rate
        dev.updated_at = now

    def _reschedule(self, dev: _Device, now: float) -> None:
        """Completion events for the running jobs at the new shares (older events go stale)."""
        if not dev.running:
            return
        share = dev.sharing
        heap = self.heap
        for j in dev.running:
            j.version += 1
            self.seq += 1
            heapq.heappush(heap, (now + (j.work_s if j.work_s > 0.0 else 0.0) * share, self.seq, _DONE, (j, j.version)))

    def _service_s(self, route: _Route, b: int) -> float:
        """A batch of b's time on the device alone: the p50 at b, or a draw around it (noise)."""
        if b >= len(route.median_s):  # beyond the modelled cap (should not happen): extend linearly
            return route.median_s[-1] * b / (len(route.median_s) - 1)
        service = route.median_s[b]
        sigma = route.sigma[b]
        if sigma > 0:
            service *= math.exp(sigma * self._gauss())
        return service

    def _gauss(self) -> float:
        """A standard normal draw: `random.Random.gauss(0, 1)` (Box-Muller, two draws per pair of
        uniforms; the same numbers from the same seed), written out so that it is compiled too."""
        z = self.gauss_next
        self.gauss_next = None
        if z is None:
            x2pi = self.rng.random() * (2.0 * math.pi)
            g2rad = math.sqrt(-2.0 * math.log(1.0 - self.rng.random()))
            z = math.cos(x2pi) * g2rad
            self.gauss_next = math.sin(x2pi) * g2rad
        return z

    def _start(self, route: _Route, batch: list[_Req], sent_at: float, now: float) -> None:
        dev = route.device
        self._share(dev, now)
        if route.running == 0:
            dev.sharing += 1
        route.running += 1
        dev.running.append(_Job(route, batch, sent_at, self._service_s(route, len(batch))))
        self._reschedule(dev, now)

    def _done(self, payload: tuple[_Job, int], now: float) -> None:
        job, version = payload
        if version != job.version:
            return  # rescheduled since: a newer event stands for it
        route, batch, sent_at = job.route, job.batch, job.sent_at
        dev = route.device
        self._share(dev, now)
        dev.running.remove(job)
        if route.waiting:  # its lane goes to the route's next batch
            nbatch, nsent = route.waiting.popleft()
            dev.running.append(_Job(route, nbatch, nsent, self._service_s(route, len(nbatch))))
        else:
            route.running -= 1
            if route.running == 0:
                dev.sharing -= 1
        self._reschedule(dev, now)
        route.in_flight -= 1
        route.flight.remove(id(batch))
        predicted_s = route.predicted_s.pop(id(batch), None)
        route.start_s = route.flight.start_s(route.lanes)
        route.policy.observe(len(batch), now - max(sent_at, route.last_done))  # as the worker: minus pipeline wait
        if predicted_s is not None:
            route.calibration.answered(sent_at, predicted_s, now)
        route.last_done = now
        status, finish, by, on = self.status, self.finish, self.served_by, self.served_on
        vi, di = route.variant_index, route.device_index
        for r in batch:
            rid = r.id
            if now <= r.deadline_s + EPS_S:
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

    def _unload(self, route: _Route, now: float) -> None:
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
        sim, cfg, trace = self.sim, self.cfg, self.trace
        demand0 = self.initial_demand if self.initial_demand is not None else initial_demand(trace)
        plan0 = self.solve(demand0, None)
        self._install(plan0, 0.0, None, len(plan0.placements), 0, "initial plan")
        for second in range(1, int(math.ceil(self.duration_s)) + 1):
            if second * cfg.control.tick_s <= self.duration_s:
                self.push(second * cfg.control.tick_s, _TICK, None)

        times = trace.time_s.tolist()
        deadlines = (trace.time_s + trace.deadline_ms / 1000.0).tolist()  # absolute (same float sum as per request)
        families = trace.family.tolist()
        n = len(times)
        heap = self.heap
        pop = heapq.heappop
        i = 0
        events = n  # every arrival, plus the timed events popped below
        status = self.status
        pickers = self.pickers  # updated in place when a plan switches
        slack_s = cfg.shim.slack_ms / 1000.0
        inf = math.inf
        wakes, moved = self.wakes, self.moved
        push = heapq.heappush
        while True:
            while wakes and wakes[0][2].wake_at != wakes[0][0]:
                pop(wakes)  # stale: its route's wake-up moved or fired
            # arrivals before the next timed event or wake-up (at equal times those go first)
            next_event = heap[0][0] if heap else inf
            if wakes and wakes[0][0] < next_event:
                next_event = wakes[0][0]
            if self.soonest_moved < next_event:
                next_event = self.soonest_moved
            while i < n and times[i] < next_event:
                now = times[i]
                picker = pickers.get(families[i])
                k: int | None = None
                if picker is not None:
                    if picker[2] is not None:
                        self.arrival_s = now
                        self.limit_s = deadlines[i] - slack_s
                    k = picker[0].pick_at(now, None, picker[2])
                if picker is None or k is None:
                    status[i] = UNSERVED
                    self.finish[i] = now
                    self._miss(i, now)
                else:
                    route = picker[1][k]
                    route.queue.add(_Req(i, now, deadlines[i]))
                    # A busy route's policy can only drop hopeless requests (time-triggered: its
                    # wake-up and the next completion call it); skipping the call here changes no outcome.
                    if route.in_flight < route.max_in_flight:
                        self._drive(route, now)
                        if heap and heap[0][0] < next_event:
                            next_event = heap[0][0]
                        if self.soonest_moved < next_event:
                            next_event = self.soonest_moved
                i += 1
            next_timed = heap[0][0] if heap else inf
            next_wake = wakes[0][0] if wakes else inf
            if self.soonest_moved < next_wake and self.soonest_moved < next_timed:
                for route in moved:  # a moved wake-up is due next: put them on the heap
                    self.seq += 1
                    push(wakes, (route.wake_at, self.seq, route))
                moved.clear()
                self.soonest_moved = inf
                next_wake = wakes[0][0]
            if next_wake < next_timed:
                now, _, route = pop(wakes)
                if route.wake_at == now:  # else stale
                    route.wake_at = None
                    events += 1
                    if route.queue:
                        self._drive(route, now)
                continue
            if not heap:  # and so no arrival is left either
                break
            now, _, kind, payload = pop(heap)
            events += 1
            if kind == _DONE:
                self._done(payload, now)
            elif kind == _TICK:
                self._tick(now)
            elif kind == _SWITCH:
                p = self.pending
                assert p is not None  # a switch event is pushed with its pending plan
                self.pending = None
                self._install(p.plan, now, p.decided_s, p.loads, p.unloads, p.reason)
            elif kind == _UNLOAD:
                self._unload(payload, now)
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
