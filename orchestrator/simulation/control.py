"""The controller's port (controlplane/port.py) on the simulated clock, so that the control
plane's own `Controller.tick` runs unchanged in a simulated run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.controlplane.intake import FamilySecond
from orchestrator.controlplane.planning import planning_demand
from orchestrator.controlplane.service import ControlPlaneConfig
from orchestrator.controlplane.speed import ObservedSpeed
from orchestrator.plan import Plan

if TYPE_CHECKING:
    from orchestrator.simulation.driver import Simulation


class SimControlPort:
    """The controller's port (controlplane/port.py) on the simulated clock, so that the real
    `Controller.tick` runs unchanged: telemetry seconds come from the simulated outcomes, and the
    routes' lone batch times feed the observed speeds as the shims' reports do live, `solve`
    calls the planner (with the profiles corrected by those speeds), `apply` starts a simulated plan change, which keeps it busy until it is in
    force. Devices do not fail; history and decision records are dropped."""

    def __init__(self, run: "Simulation", config: ControlPlaneConfig, families: list[str]):
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
        self.speed = ObservedSpeed(run.sim.profiles, run.sim.device_class.get)  # the routes' lone batches

    @property
    def busy(self) -> bool:
        return self._run.pending is not None

    def device_live(self, device_id: str) -> bool:
        return True  # simulated devices do not fail

    def device_ups(self, device_id: str) -> int:
        return 1

    def device_ready_models(self, device_id: str, since: float) -> frozenset[str] | None:
        return frozenset(p.variant for p in self.plan.placements_on(device_id)) if self.plan else frozenset()

    # nothing is persisted
    def record_history(self, rows: list[dict]) -> None:
        pass

    def recorded_arrivals(self, since_second: int) -> list[tuple[str, int, float]]:
        return []

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
        for (device_id, variant), route in run.routes.items():  # what the shims' reports carry, live
            sent, alone = route.take_speed()
            if sent or alone:
                self.speed.observe("sim", device_id, variant, route.placement.instances, route.placement.threads,
                                   sent, {size: (n, seconds) for size, (n, seconds) in alone.items()}, run.now)
        return rows

    def speed_change(self) -> tuple[str, bool] | None:
        return self.speed.replan_reason() if self.config.observed_speed and self.plan is not None else None

    def device_ids(self) -> list[str]:
        return list(self._run.sim.devices)

    def planning_demand(self, override: dict[str, float] | None = None) -> dict[str, float]:
        return planning_demand(self._families, self.plan, self.estimates, {}, override,
                               floors=self.config.demand_floor)

    def solve(self) -> Plan:
        if not self.config.observed_speed:
            return self._run.solve(self.planning_demand(), self.plan)
        profiles = self.speed.corrected()
        return self._run.solve(self.planning_demand(), self.plan, profiles, tuple(sorted(self.speed.used.items())))

    def apply(self, target: Plan, reason: str, kind: str = "apply", routes_only: bool = False) -> None:
        """`routes_only` comes only with a routing revision around a restarted device, which the
        simulator's devices never are."""
        self._run.start_apply(target, self._run.now, reason)


