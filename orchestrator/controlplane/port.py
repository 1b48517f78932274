"""What the controller (controller.py) reads and calls: the narrow port that the live control
plane (`service.ControlPlane`) and the simulator's stand-in (`simulation/control.py` `SimControlPort`) both
implement, so the same `Controller.tick` runs on either."""

from __future__ import annotations

from typing import Protocol

from orchestrator.catalog import Catalog
from orchestrator.controlplane.intake import FamilySecond
from orchestrator.controlplane.service import ControlPlaneConfig
from orchestrator.plan import Plan


class ControlPort(Protocol):
    config: ControlPlaneConfig  # tick, estimator, dwell, hysteresis, miss trigger, lateness, auto, policy
    catalog: Catalog
    plan: Plan | None  # the plan in force
    estimates: dict[str, float]  # family -> demand estimate (rps), written by the controller
    counters: dict[str, int]  # "replans", ...
    down: set[str]  # devices that do not answer, written by the controller

    @property
    def busy(self) -> bool:
        """A plan change is being applied."""
        ...

    @property
    def last_apply_s(self) -> float:
        """How long the last plan change with model loads took."""
        ...

    def flush_telemetry(self, before_second: int) -> list[FamilySecond]:
        """The telemetry seconds before `before_second` not handed out yet (summed over clients)."""
        ...

    def device_ids(self) -> list[str]: ...

    def device_live(self, device_id: str) -> bool:
        """Whether the device's server answers (False, not an exception, when it does not)."""
        ...

    def device_ups(self, device_id: str) -> int:
        """How many times the device has become live: a device that went down and came back
        between two ticks (a quick restart) shows as a new count."""
        ...

    def device_ready_models(self, device_id: str, since: float) -> frozenset[str] | None:
        """The models the device's server had READY at its last answer; None unless its last
        probe answered, after `since` (an index older than the plan in force says nothing)."""
        ...

    def planning_demand(self, override: dict[str, float] | None = None) -> dict[str, float]: ...

    def speed_change(self) -> tuple[str, bool] | None:
        """Why the plan in force no longer matches the speeds observed in service, and whether a
        device got slower; None when it matches (controlplane/speed.py)."""
        ...

    def solve(self) -> Plan:
        """A plan for the planning demand, with the settings in force (and the observed speeds)."""
        ...

    def apply(self, target: Plan, reason: str, kind: str = "apply", routes_only: bool = False) -> object:
        """Carry `target` out (the executor); with `routes_only`, raise NotRoutesOnly instead of
        loading or unloading a model."""
        ...

    def record_history(self, rows: list[dict]) -> None: ...

    def recorded_arrivals(self, since_second: int) -> list[tuple[str, int, float]]:
        """(family, second, arrivals) of the history recorded from `since_second` on, oldest
        first: what a controller's demand estimators start from (after a restart)."""
        ...

    def record_decision(self, kind: str, reason: str, plan_version: int | None = None,
                        detail: dict | None = None, ts: float | None = None) -> object: ...
