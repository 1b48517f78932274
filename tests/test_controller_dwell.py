"""The controller's dwell time counts from the last change of what is loaded: a re-plan that only
moves traffic among loaded models (milliseconds to apply) does not hold back the next model
change. Driven through the simulator, which runs the real `Controller.tick` on a simulated clock."""

from orchestrator import scenarios
from orchestrator.simulator import SimConfig, Simulator
from orchestrator.workloads import FamilyLoad, StepRate, generate

DWELL_S = 10.0


def test_a_routes_only_replan_does_not_start_a_dwell():
    sc = scenarios.small_resnet(devices=2, slo_ms=300.0)
    sim = Simulator(sc.catalog, sc.cluster, sc.profiles, {"resnet": 300.0}, SimConfig(dwell_s=DWELL_S, estimator="peak"))
    trace = generate([FamilyLoad("resnet", StepRate((4.0, 8.0, 40.0), 8.0), 300.0)], 40, seed=2)
    plans = sim.run(trace, "milp").plans[1:]  # after the initial plan
    changes_models = [p.loads > 0 or p.unloads > 0 for p in plans]
    decided = [p.decided_s for p in plans]
    # a routes-only re-plan followed by a model change sooner than the dwell
    quick = [(decided[i], decided[i + 1]) for i in range(len(plans) - 1)
             if not changes_models[i] and changes_models[i + 1] and decided[i + 1] - decided[i] < DWELL_S]
    assert quick, [(p.decided_s, p.loads, p.unloads, p.demand_rps) for p in plans]
    # model changes still keep the dwell between them
    model_times = [t for t, c in zip(decided, changes_models) if c]
    assert len(model_times) >= 2
    assert all(b - a >= DWELL_S - 1e-9 for a, b in zip(model_times, model_times[1:])), model_times
