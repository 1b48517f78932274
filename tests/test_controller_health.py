"""The controller plans for every device health change, including one it sees while a plan
change is being applied (it cannot re-plan then: the change waits until the apply ends), and
tries a failed re-plan again with a backoff until it succeeds, planning around the devices whose
loads failed meanwhile; a device whose Triton lost the plan's models without looking down
(restarted between two probes) is planned for too.
Driven with the real `Controller.tick` and the real planner over a port whose devices the
test takes down and brings back (`ControlPort`, controlplane/port.py)."""

from types import SimpleNamespace

from orchestrator import scenarios
from orchestrator.controlplane.controller import RETRY_FIRST_S, RETRY_MAX_S, Controller
from orchestrator.controlplane.executor import ApplyBusy, ApplyFailed, NotRoutesOnly
from orchestrator.controlplane.planning import planning_demand, solve_plan
from orchestrator.controlplane.service import ControlPlaneConfig
from orchestrator.plan import FamilyPlan, Placement, Plan, Route, SolverInfo


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
        self.failing: set[str] = set()  # devices whose loads fail (a corrupt or stuck model there)
        self.emptied: set[str] = set()  # devices whose Triton has nothing READY (restarted unseen)
        self.slo_ms = 300.0
        self.refuse = 0  # applies to refuse with ApplyBusy

    def flush_telemetry(self, before_second):
        return []

    def device_ids(self):
        return list(self.live)

    def device_live(self, device_id):
        return self.live[device_id]

    def device_ups(self, device_id):
        return self.ups[device_id]

    def device_ready_models(self, device_id, since):
        if device_id in self.emptied or self.plan is None:
            return frozenset()
        return frozenset(p.variant for p in self.plan.placements_on(device_id))

    def speed_change(self):
        return None  # the devices run as profiled

    def planning_demand(self, override=None):
        return planning_demand(["resnet"], self.plan, {"resnet": 20.0}, {}, override)

    def solve(self):
        return solve_plan(self.catalog, self.sc.cluster, self.sc.profiles, slo_ms={"resnet": self.slo_ms},
                          demand_rps=self.planning_demand(), current=self.plan, drained=sorted(self.down),
                          policy="milp")

    def apply(self, target, reason, kind="apply", routes_only=False):
        if self.refuse:  # an operator's apply started between the controller's look and its apply
            self.refuse -= 1
            raise ApplyBusy("another apply is in progress")
        before = self.plan.loaded_pairs() if self.plan is not None else set()
        to_load = {(d, v) for d, v in target.loaded_pairs() if (d, v) not in before or d in self.emptied}
        if routes_only and (to_load or before - target.loaded_pairs() - {(d, v) for d, v in before if d in self.emptied}):
            raise NotRoutesOnly(f"it would load {sorted(to_load)}")
        bad = sorted({d for d, _ in to_load if d in self.failing})
        if bad:
            raise ApplyFailed(f"load on {', '.join(bad)} failed; rolled back", frozenset(bad))
        self.plan = target
        self.emptied -= {d for d, _ in target.loaded_pairs()}  # the executor loads what is missing
        self.applied.append(reason)
        return SimpleNamespace(plan=target)  # as the executor's ApplyResult

    def recorded_arrivals(self, since_second):
        return []

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


def test_a_health_change_whose_re_plan_met_another_apply_is_planned_for_at_the_next_tick():
    port, clock = HealthPort(), [100.0]
    controller = Controller(port, clock=lambda: clock[0])
    controller.tick()
    gone = port.plan.placements[0].device_id
    port.live[gone] = False
    port.refuse = 1
    clock[0] += 1
    assert "went down" in controller.tick()
    assert port.plan.placements_on(gone)  # not applied: the other apply came first
    clock[0] += 1
    assert f"{gone} went down" in (controller.tick() or ""), port.decisions[-2:]
    assert not port.plan.placements_on(gone)


def test_a_failed_re_plan_is_tried_again_with_a_backoff_until_it_succeeds():
    port = HealthPort()
    clock = [100.0]
    controller = Controller(port, clock=lambda: clock[0])
    controller.tick()
    gone = port.plan.placements[0].device_id
    port.live[gone] = False
    clock[0] += 1
    controller.tick()
    assert not port.plan.placements_on(gone)
    before = port.plan

    port.failing.add(gone)  # it comes back, but its models do not load (a corrupt file)
    port.live[gone], port.ups[gone] = True, 2
    tries = []
    for _ in range(int(4 * RETRY_MAX_S)):  # four minutes of ticks, one a second
        clock[0] += 1
        reason = controller.tick()
        if reason is not None:
            tries.append((clock[0], reason))
    assert port.plan is before  # every attempt rolled back
    assert "came back" in tries[0][1] and all("retry of a failed re-plan" in r and "came back" in r
                                                for _, r in tries[1:]), tries
    gaps = [b - a for (a, _), (b, _) in zip(tries, tries[1:])]
    assert gaps[:4] == [RETRY_FIRST_S, 2 * RETRY_FIRST_S, 4 * RETRY_FIRST_S, 8 * RETRY_FIRST_S], gaps
    assert max(gaps) == RETRY_MAX_S and len(tries) < 12
    assert sum("trying again in" in r for k, r in port.decisions if k == "error") == len(tries)

    port.failing.clear()  # mended: the next retry puts it back into the plan, and retries stop
    for _ in range(int(RETRY_MAX_S) + 1):
        clock[0] += 1
        controller.tick()
    assert port.plan.placements_on(gone), port.decisions[-3:]
    applied = len(port.applied)
    for _ in range(int(2 * RETRY_MAX_S)):
        clock[0] += 1
        assert controller.tick() is None
    assert len(port.applied) == applied


def test_a_device_restarted_between_two_probes_is_named_and_planned_for_once():
    """It never looked down (same run count), but its Triton has none of the plan's models."""
    port = HealthPort()
    clock = [100.0]
    controller = Controller(port, clock=lambda: clock[0])
    controller.tick()
    dev = port.plan.placements[0].device_id
    applied = len(port.applied)

    port.emptied.add(dev)
    port.busy = True  # while an apply runs, a model may be missing for good reason: nothing is said
    for _ in range(3):
        clock[0] += 1
        assert controller.tick() is None
    port.busy = False
    clock[0] += 1
    assert controller.tick() is None  # first look at the gap: the index may lag a load just done
    clock[0] += 1
    reason = controller.tick()
    assert reason is not None and f"{dev} lacks" in reason, port.decisions
    assert len(port.applied) == applied + 1 and dev not in port.emptied  # re-planned: the apply loads it
    for _ in range(5):
        clock[0] += 1
        assert controller.tick() is None  # named once

    port.failing.add(dev)  # gone again, and now its load fails: named once, then the retry's backoff
    port.emptied.add(dev)
    reasons = []
    for _ in range(12):
        clock[0] += 1
        reasons.append(controller.tick())
    named = [r for r in reasons if r and "lacks" in r and "retry" not in r]
    assert len(named) == 1 and any(r and r.startswith("retry of a failed re-plan") for r in reasons), reasons


def test_a_device_whose_loads_fail_is_planned_around_until_the_retry():
    """The plan in force routes to a device that lost its model (restarted unseen), and loading
    it again fails (a stuck or corrupt model): the traffic moves to the other device at once
    instead of waiting for the retry, and the retry puts the device back once it is mended."""
    port = HealthPort()
    clock = [100.0]
    controller = Controller(port, clock=lambda: clock[0])
    controller.tick()
    devices = {p.device_id for p in port.plan.placements if p.served_rps > 0}
    assert len(devices) == 2, port.plan.placements  # 20 rps needs both devices
    dev = port.plan.placements[0].device_id
    other = next(d for d in devices if d != dev)

    port.emptied.add(dev)
    port.failing.add(dev)
    reasons = []
    for _ in range(3):  # the gap is seen at two ticks in a row, then planned for
        clock[0] += 1
        reasons.append(controller.tick())
    assert any(r and f"{dev} lacks" in r for r in reasons), reasons
    assert not port.plan.placements_on(dev) and port.plan.placements_on(other), port.decisions[-3:]
    assert port.applied[-1].startswith(f"controller: planning around {dev} (its loads failed)"), port.applied

    for _ in range(int(RETRY_FIRST_S) + 1):  # the retry fails again: still planned around
        clock[0] += 1
        controller.tick()
    assert sum("trying again in" in r for k, r in port.decisions if k == "error") == 2, port.decisions
    assert not port.plan.placements_on(dev)

    port.failing.clear()  # mended: the next retry loads it and routes to it again
    for _ in range(int(2 * RETRY_FIRST_S) + 1):
        clock[0] += 1
        controller.tick()
    assert port.plan.placements_on(dev) and "retry of a failed re-plan" in port.applied[-1], port.decisions


def test_a_device_restarted_between_two_probes_is_routed_around_before_its_loads():
    """Its index told the restart (a new run, `ups`, while it never looked down): the plan in
    force stops routing to it at once, before the re-plan that loads its models again, so a load
    that never ends costs no request sent to the models it lost. Restarted once more (mended), it
    gets a fresh try at once instead of waiting for the retry."""
    port = HealthPort()
    clock = [100.0]
    controller = Controller(port, clock=lambda: clock[0])
    controller.tick()
    dev = next(p.device_id for p in port.plan.placements if p.served_rps > 0)
    plans, first = [], len(port.applied)
    apply = port.apply

    def recording_apply(target, reason, kind="apply", routes_only=False):
        result = apply(target, reason, kind, routes_only)
        plans.append(port.plan)
        return result
    port.apply = recording_apply

    port.emptied.add(dev)
    port.failing.add(dev)  # its load never ends (the executor's timeout fails it)
    port.ups[dev] += 1
    clock[0] += 1
    reason = controller.tick()
    assert reason is not None and f"{dev} came back" in reason, port.decisions
    assert plans and not plans[0].placements_on(dev), port.applied  # routed around before any load there
    assert port.applied[first].startswith(f"controller: {dev} restarted (empty)"), port.applied
    assert all(not p.placements_on(dev) for p in plans) and not port.plan.placements_on(dev), port.decisions[-3:]

    port.failing.clear()  # mended, and its server restarted again: back in the plan at once
    port.ups[dev] += 1
    clock[0] += 1
    assert f"{dev} came back" in (controller.tick() or ""), port.decisions[-3:]
    assert port.plan.placements_on(dev), port.decisions[-3:]


def _planned_around(port, controller, clock):
    """A first plan on both devices, then one of them loses its model and its load fails:
    planned around. Returns (that device, the other)."""
    controller.tick()
    devices = {p.device_id for p in port.plan.placements if p.served_rps > 0}
    dev = port.plan.placements[0].device_id
    other = next(d for d in devices if d != dev)
    port.emptied.add(dev)
    port.failing.add(dev)
    for _ in range(3):
        clock[0] += 1
        controller.tick()
    assert not port.plan.placements_on(dev) and port.plan.placements_on(other), port.decisions[-3:]
    return dev, other


def test_a_re_plan_for_another_reason_does_not_cancel_the_retry_of_a_device_planned_around():
    """A plan made meanwhile (here: a setting changed) leaves the device out too; the retry that
    tries it again still comes, and takes it back once it is mended. (A chaos run once left a
    mended node out for 37 s: a hold made between two retries had cancelled them.)"""
    port, clock = HealthPort(), [100.0]
    controller = Controller(port, clock=lambda: clock[0])
    dev, _ = _planned_around(port, controller, clock)
    clock[0] += 1
    assert controller.tick(settings_changed=True) == "operator changed a setting"
    assert not port.plan.placements_on(dev)
    port.failing.clear()  # mended
    for _ in range(int(2 * RETRY_FIRST_S) + 1):
        clock[0] += 1
        controller.tick()
    assert port.plan.placements_on(dev), port.decisions[-4:]


def test_when_no_other_device_serves_a_family_the_devices_planned_around_are_tried_again_at_once():
    """The device planned around (its load failed) was mended meanwhile; the only other one goes
    down: rather than a plan that routes the family nowhere until the retry, it is tried now. If
    its load fails again, it is planned around again with the next backoff."""
    port, clock = HealthPort(), [100.0]
    controller = Controller(port, clock=lambda: clock[0])
    dev, other = _planned_around(port, controller, clock)
    port.failing.clear()
    port.live[other] = False
    clock[0] += 1
    reason = controller.tick()
    assert f"{other} went down" in reason and f"trying {dev} again at once" in port.applied[-1], port.applied[-1]
    assert port.plan.placements_on(dev) and not port.plan.placements_on(other)

    port.live[other], port.ups[other] = True, 2  # the other comes back; then the first is lost again, for good
    clock[0] += 1
    controller.tick()
    port.emptied.add(dev)
    port.failing.add(dev)
    for _ in range(3):
        clock[0] += 1
        controller.tick()
    port.live[other] = False
    clock[0] += 1
    controller.tick()
    assert "trying again in 10 s" in [r for k, r in port.decisions if k == "error"][-1], port.decisions[-3:]


def test_devices_planned_around_are_not_tried_early_when_they_would_not_route_the_family_either():
    """A family no plan can route (no variant meets a 1-ms SLO): the re-plans it causes do not
    let the device planned around out early (each try of a broken load can hold the controller
    for the load timeout); the retry's backoff still decides."""
    port, clock = HealthPort(), [100.0]
    controller = Controller(port, clock=lambda: clock[0])
    dev, _ = _planned_around(port, controller, clock)
    errors = sum(k == "error" for k, _ in port.decisions)
    port.slo_ms = 1.0
    clock[0] += 1
    controller.tick(settings_changed=True)
    assert not any("again at once" in r for r in port.applied), port.applied[-1]
    assert sum(k == "error" for k, _ in port.decisions) == errors, port.decisions[-2:]


def test_a_failed_retry_that_rolled_back_a_good_load_is_followed_by_the_plan_without_the_failing_device():
    """A retry loads two devices: one loads (mended), the other's load fails, and the apply rolls
    back both. The plan in force routes to neither; the plan around the failing device loads the
    good one at once instead of waiting for the next retry."""
    port, clock = HealthPort(), [100.0]
    controller = Controller(port, clock=lambda: clock[0])
    dev, other = _planned_around(port, controller, clock)
    port.emptied.add(other)  # the other device lost its model too, and its load never ends
    port.failing.add(other)
    port.failing.discard(dev)  # while the first was mended
    for _ in range(int(2 * RETRY_FIRST_S) + 2):
        clock[0] += 1
        controller.tick()
    assert port.plan.placements_on(dev) and not port.plan.placements_on(other), port.decisions[-4:]


def test_a_routing_revision_takes_out_only_the_lost_models_and_keeps_every_family_routed():
    """`Plan.without`: the routes to the lost (device, variant) go, the family's other routes
    carry their share (weights sum to 1 again), every other placement stays as it was (so the
    executor loads and unloads nothing); a family left with no route is not revised."""
    port = HealthPort()
    plan = solve_plan(port.catalog, port.sc.cluster, port.sc.profiles, slo_ms={"resnet": 300.0},
                      demand_rps={"resnet": 20.0}, current=None, policy="milp")
    routed = [r for r in plan.families["resnet"].routes if r.weight > 0]
    assert len(routed) >= 2, plan.families["resnet"].routes
    lost = (routed[0].device_id, routed[0].variant)
    revised = plan.without({lost})
    routes = revised.families["resnet"].routes
    assert lost not in {(r.device_id, r.variant) for r in routes}
    assert abs(sum(r.weight for r in routes) - 1.0) < 1e-9
    scale = 1.0 / (1.0 - routed[0].weight)
    for r in routes:
        before = next(b for b in plan.families["resnet"].routes if (b.device_id, b.variant) == (r.device_id, r.variant))
        assert abs(r.weight - before.weight * scale) < 1e-9
    assert set(revised.placements) == {p for p in plan.placements if (p.device_id, p.variant) != lost}
    assert revised.version == plan.version and "routing revision" in revised.notes[-1]
    assert plan.without({(r.device_id, r.variant) for r in plan.families["resnet"].routes}) is None


def test_a_routing_revision_gives_the_traffic_to_the_warm_spares_by_their_capacity():
    """The lost placement carried the family alone, beside warm spares (weight 0): the spares
    carry it now, in proportion to their capacity (the two-node chaos bench's case)."""
    def placement(d, cap):
        return Placement(d, "resnet18", batch_cap=4, capacity_rps=cap, served_rps=0.0)
    plan = Plan(version=3, policy="milp", placements=(placement("a", 40.0), placement("b", 10.0), placement("c", 30.0)),
                families={"resnet": FamilyPlan("resnet", 300.0, 20.0, 20.0, 0.0,
                                               (Route("a", "resnet18", 1.0), Route("b", "resnet18", 0.0),
                                                Route("c", "resnet18", 0.0)), 69.0)},
                solver=SolverInfo("OPTIMAL"))
    routes = plan.without({("a", "resnet18")}).families["resnet"].routes
    assert [(r.device_id, r.weight) for r in routes] == [("b", 0.25), ("c", 0.75)]
    assert plan.without({("a", "resnet18"), ("b", "resnet18"), ("c", "resnet18")}) is None


def test_a_new_controller_plans_once_for_live_devices_the_resumed_plan_leaves_out():
    """A control plane restarted on its state file resumes a plan made while a device was down or
    planned around (the retry that would have taken it back was lost with the old process)."""
    port = HealthPort()
    gone = port.sc.cluster.devices[0].id
    port.down = {gone}
    port.plan = port.solve()  # made without `gone`
    port.down = set()
    assert not port.plan.placements_on(gone)
    clock = [100.0]
    controller = Controller(port, clock=lambda: clock[0])
    reason = controller.tick()
    assert reason is not None and f"{gone} is live and unused" in reason, port.decisions
    assert port.plan.placements_on(gone)

    port2 = HealthPort()  # a resumed plan that uses every device: nothing to do at the first look
    port2.plan = port2.solve()
    assert all(port2.plan.placements_on(d.id) for d in port2.sc.cluster.devices)
    assert Controller(port2, clock=lambda: clock[0]).tick() is None and not port2.decisions
