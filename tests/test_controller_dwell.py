"""The controller's dwell time (least time between two changes of what is loaded) holds back
scaling *down* only: rising demand re-plans at once, and a re-plan that only moves traffic among
loaded models (milliseconds to apply) does not start a dwell. Driven through the simulator,
which runs the real `Controller.tick` on a simulated clock."""

from orchestrator import scenarios
from orchestrator.controlplane.service import ControlPlaneConfig
from orchestrator.planner import PlannerOptions
from orchestrator.simulator import SimConfig, Simulator
from orchestrator.workloads import FamilyLoad, StepRate, generate

DWELL_S = 10.0


def plans_for(levels, step_s):
    # 450 MB a device (ResNet-152 alone, or two smaller variants) and without the MILP's standby
    # variants: with room for every variant, most of these steps are routes-only, and the dwell
    # rules are about changes of what is loaded
    sc = scenarios.small_resnet(devices=2, slo_ms=300.0, memory_mb=450.0)
    sim = Simulator(sc.catalog, sc.cluster, sc.profiles, {"resnet": 300.0},
                    SimConfig(control=ControlPlaneConfig(dwell_s=DWELL_S, estimator="window"), planner=PlannerOptions(standby=False)))
    trace = generate([FamilyLoad("resnet", StepRate(levels, step_s), 300.0)], 60, seed=2)
    return sim.run(trace, "milp", initial_demand={"resnet": levels[0]}).plans


def model_changes(plans):
    return [p for p in plans[1:] if p.loads or p.unloads]


def test_rising_demand_skips_the_dwell_and_falling_demand_waits_for_it():
    plans = plans_for((4.0, 40.0, 4.0), 25.0)
    changes = model_changes(plans)
    log = [(p.decided_s, p.loads, p.unloads, p.reason) for p in plans]
    gaps = [(b.decided_s - a.decided_s, b.reason) for a, b in zip(changes, changes[1:])]
    assert any("rose above" in why and gap < DWELL_S for gap, why in gaps), log
    falls = [(gap, why) for gap, why in gaps if "fell below" in why]
    assert falls and all(gap >= DWELL_S for gap, _ in falls), log


def test_a_routes_only_replan_does_not_start_a_dwell():
    plans = plans_for((40.0, 30.0, 4.0), 6.0)
    log = [(p.decided_s, p.loads, p.unloads, p.reason) for p in plans]
    quick = [(a.decided_s, b.decided_s) for a, b in zip(plans[1:], plans[2:])
             if not (a.loads or a.unloads) and (b.loads or b.unloads) and "fell below" in b.reason
             and b.decided_s - a.decided_s < DWELL_S]
    assert quick, log


def test_a_re_plan_that_holds_is_not_repeated_every_tick(monkeypatch):
    """Demand a hundred times what the plan was made for, far above what the two devices serve:
    once the plan is at capacity, a re-plan comes out as the plan in force (a hold). A re-plan for
    the demand of that hold (the miss trigger's headroom counted) is not made again, so the planner
    does not run every tick while nothing changes."""
    from orchestrator.simulation.control import SimControlPort

    solves = []
    solve = SimControlPort.solve
    monkeypatch.setattr(SimControlPort, "solve", lambda port: solves.append(port._run.now) or solve(port))
    sc = scenarios.small_resnet(devices=2, slo_ms=300.0)
    sim = Simulator(sc.catalog, sc.cluster, sc.profiles, {"resnet": 300.0},
                    SimConfig(control=ControlPlaneConfig(estimator="window")))
    trace = generate([FamilyLoad("resnet", StepRate((4.0, 400.0), 20.0), 300.0)], 45, seed=2)
    sim.run(trace, "milp", initial_demand={"resnet": 4.0})
    assert any(t >= 20 for t in solves), solves  # the step was planned for
    assert len([t for t in solves if t >= 30]) <= 2, solves  # not once a tick for the steady overload
