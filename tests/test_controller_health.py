"""The controller plans for every device health change, including one it sees while a plan
change is being applied (it cannot re-plan then: the change waits until the apply ends).
Driven with the real `Controller.tick` and the real planner over a port whose devices the
test takes down and brings back (`ControlPort`, controlplane/port.py)."""

from orchestrator import scenarios
from orchestrator.controlplane.controller import Controller
from orchestrator.controlplane.planning import planning_demand, solve_plan
from orchestrator.controlplane.service import ControlPlaneConfig


class HealthPort:
    """A control plane reduced to the port: plans come from the planner for a fixed demand, an
    apply puts the plan in force at once (or, with `busy`, is still running), devices answer
    as the test says."""

    def __init__(self):
        sc = scenarios.small_resnet(devices=2, slo_ms=300.0)
        self.sc = sc
        self.config = ControlPlaneConfig(tick_s=1.0, dwell_s=0.0)
        self.catalog = sc.catalog
        self.plan = None
        self.estimates: dict[str, float] = {}
        self.counters = {"replans": 0}
        self.down: set[str] = set()
        self.busy = False
        self.last_apply_s = 0.0
        self.live = {d.id: True for d in sc.cluster.devices}
        self.ups = {d.id: 1 for d in sc.cluster.devices}
        self.applied: list[str] = []  # the reasons of the controller's applies
        self.decisions: list[tuple[str, str]] = []

    def flush_telemetry(self, before_second):
        return []

    def device_ids(self):
        return list(self.live)

    def device_live(self, device_id):
        return self.live[device_id]

    def device_ups(self, device_id):
        return self.ups[device_id]

    def planning_demand(self, override=None):
        return planning_demand(["resnet"], self.plan, {"resnet": 20.0}, {}, override)

    def solve(self):
        return solve_plan(self.catalog, self.sc.cluster, self.sc.profiles, slo_ms={"resnet": 300.0},
                          demand_rps=self.planning_demand(), current=self.plan, drained=sorted(self.down),
                          policy="milp")

    def apply(self, target, reason, kind="apply"):
        self.plan = target
        self.applied.append(reason)

    def record_history(self, rows):
        pass

    def record_decision(self, kind, reason, plan_version=None, detail=None, ts=None):
        self.decisions.append((kind, reason))


def test_a_device_that_comes_back_during_an_apply_is_planned_for_after_it():
    port = HealthPort()
    clock = [100.0]
    controller = Controller(port, clock=lambda: clock[0])
    assert "first plan" in controller.tick()  # the first look at health, and a plan for the demand
    gone = port.plan.placements[0].device_id

    port.live[gone] = False
    clock[0] += 1
    assert "went down" in (controller.tick() or ""), port.decisions
    assert not port.plan.placements_on(gone)

    port.busy = True  # an apply runs (e.g. the loads of the plan without the device) ...
    port.live[gone], port.ups[gone] = True, 2
    clock[0] += 1
    assert controller.tick() is None  # ... so no re-plan now, but the change is seen
    assert ("health", f"{gone} came back") in port.decisions
    clock[0] += 1
    assert controller.tick() is None  # still busy

    port.busy = False
    clock[0] += 1
    reason = controller.tick()
    assert reason is not None and f"{gone} came back" in reason, port.applied
    clock[0] += 1
    assert controller.tick() is None  # planned for once, not again
