"""A discrete-event simulator of the serving system: replays a trace against a modelled cluster.

It runs the *same* decision code as the live system and models only what the hardware does:

* planner (orchestrator/planner `make_plan`, any policy), re-planned by the control plane's own
  `Controller.tick` (controlplane/controller.py: demand estimators, hysteresis band, miss
  trigger and headroom, dwell time), run on a simulated clock over `SimControlPort`
  (simulation/control.py), whose telemetry intake is fed from the simulated outcomes;
* routes: the plan's routes as the shim builds them (dataplane/routes.py `plan_routes`: pairs,
  batch caps, deadlines, spill routes, latency models, batching policies and hold bounds, when a
  route is kept across plans), with the shim's `RoutingTable` (dataplane/routing.py:
  accuracy-first or weighted, per `ShimConfig.routing`) and its on-time prediction
  (dataplane/backlog.py `answer_by`, each route's `Calibration`);
* batching: the shim's policy objects (same ShimConfig defaults: Proteus, p95 latency model,
  2 ms slack, batches in flight per route = Triton instances + `pipeline` (1));
* plan changes as the executor makes them (`executor.compute_diff`): load what is new (a
  configurable delay per model, from its size; devices in parallel, models on one device in
  turn), then switch routes; old routes drain their queues and are unloaded `drain_s` later.

What is modelled (simulation/devices.py): a batch takes its profiled p50 latency on the device
alone, or a lognormal draw between p50 and p99 (`noise`); each route runs `instances` batches at
once; routes with a batch running share the device equally (processor sharing). Network and RPC
time are folded into the profiles (they are measured through Triton). docs/evaluation.md states
what is not modelled.

The parts: simulation/events.py (the event engine), simulation/devices.py (the hardware),
simulation/driver.py (one run over the data plane), simulation/control.py (the controller's
port). Output: a `Run` of per-request `Outcomes` in the live bench's shape (evaluation.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.catalog import Catalog
from orchestrator.cluster import Cluster
from orchestrator.controlplane.planning import solve_plan
from orchestrator.controlplane.service import ControlPlaneConfig
from orchestrator.dataplane.config import ShimConfig
from orchestrator.evaluation import Run, SpeedTimeline
from orchestrator.plan import Plan
from orchestrator.planner import PlannerOptions
from orchestrator.profiles import ProfileSet
from orchestrator.simulation.devices import ServiceTimes
from orchestrator.simulation.driver import SimStats, Simulation
from orchestrator.trace import Trace

__all__ = ["SimConfig", "SimStats", "Simulator"]


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


class Simulator:
    """Replays traces against one modelled cluster; `run(trace, policy)` returns a `Run`."""

    def __init__(self, catalog: Catalog, cluster: Cluster, profiles: ProfileSet, slo_ms: dict[str, float],
                 config: SimConfig = SimConfig(), service_profiles: ProfileSet | None = None,
                 speed: SpeedTimeline | None = None):
        """`profiles` are what the planner and the batching policy plan with (as live);
        `service_profiles`, when given, are what the modelled devices really take (e.g. a live
        run's observed service times, `Run.observed_profiles`), per (variant, device class) that
        has records there, else `profiles`; `speed`, when given, slows each device's batches by
        its factor at the time they start (a live run's `Run.speed_timeline`)."""
        self.catalog = catalog
        self.cluster = cluster
        self.profiles = profiles
        self.service_profiles = service_profiles
        self.speed = speed
        self.slo_ms = dict(slo_ms)
        self.config = config
        self.device_class = {d.id: d.device_class for d in cluster.devices}
        self.variants = sorted(catalog.variants)
        self.variant_index = {v: i for i, v in enumerate(self.variants)}
        self.accuracy = {name: v.accuracy for name, v in catalog.variants.items()}
        self.devices = [d.id for d in cluster.devices]
        self.device_index = {d: i for i, d in enumerate(self.devices)}
        self.service = ServiceTimes(profiles, service_profiles, config.noise)  # what the modelled devices take
        self.last_stats = SimStats()

    # --- models of the hardware ---------------------------------------------------------------

    def load_delay_s(self, variant: str) -> float:
        """Seconds to load one variant on a device (fixed part + size term)."""
        v = self.catalog.variants.get(variant)
        size_gb = v.onnx_bytes / 1e9 if v is not None else 0.0
        return self.config.load_fixed_s + self.config.load_s_per_gb * size_gb

    # --- the run --------------------------------------------------------------------------------

    def plan_for(self, policy: str, demand: dict[str, float], current: Plan | None,
                 profiles: ProfileSet | None = None) -> Plan:
        """A plan made with `profiles` (the controller's speed-corrected ones), else the profiles."""
        return solve_plan(self.catalog, self.cluster, profiles or self.profiles, slo_ms=self.slo_ms,
                          demand_rps=demand, current=current, policy=policy, options=self.config.planner)

    def run(self, trace: Trace, policy: str, initial_demand: dict[str, float] | None = None,
            duration_s: float | None = None) -> Run:
        simulation = Simulation(self, trace, policy, initial_demand, duration_s)
        self.last_stats = simulation.stats  # events, batches, planner calls and time of the latest run
        return simulation.run()
