"""The discrete-event simulator (orchestrator/simulator.py): pure, fast, no Triton."""

from dataclasses import fields

import numpy as np
import pytest

from orchestrator import scenarios
from orchestrator.dataplane.batching import make_policy
from orchestrator.dataplane.latency import LatencyModel
from tests.route_loop import SimRequest, simulate_route
from orchestrator.controlplane.planning import initial_demand
from orchestrator.controlplane.service import ControlPlaneConfig
from orchestrator.evaluation import summarise
from orchestrator.planner import PlannerOptions
from orchestrator.shim.client import ShimConfig
from orchestrator.simulator import SimConfig, Simulator
from orchestrator.workloads import ConstantRate, FamilyLoad, MarkovModulatedRate, StepRate, generate

SLO = {"resnet": 300.0}


CONTROL = {f.name for f in fields(ControlPlaneConfig)}


def small(devices=2, **config):
    """The small-resnet scenario's simulator; `config` names SimConfig fields and the controller's
    (ControlPlaneConfig: dwell_s, estimator, auto, ...)."""
    sc = scenarios.small_resnet(devices=devices, slo_ms=300.0)
    control = ControlPlaneConfig(**{k: v for k, v in config.items() if k in CONTROL})
    sim_config = SimConfig(control=control, **{k: v for k, v in config.items() if k not in CONTROL})
    return sc, Simulator(sc.catalog, sc.cluster, sc.profiles, SLO, sim_config)


def constant(rate, duration=30.0, seed=1):
    return generate([FamilyLoad("resnet", ConstantRate(rate), 300.0)], duration, seed=seed)


def test_every_request_gets_exactly_one_outcome_and_runs_are_deterministic():
    _, sim = small()
    trace = generate([FamilyLoad("resnet", MarkovModulatedRate((8.0, 40.0), (10.0, 5.0)), 300.0)], 60, seed=3)
    a, b = sim.run(trace, "milp"), sim.run(trace, "milp")
    assert len(a.outcomes) == len(trace)
    assert set(a.outcomes.status.tolist()) <= {"ok", "late", "dropped", "error", "unserved"}
    assert np.array_equal(a.outcomes.status, b.outcomes.status)
    assert np.allclose(a.outcomes.latency_ms, b.outcomes.latency_ms, equal_nan=True)
    answered = a.outcomes.answered
    assert np.all(a.outcomes.latency_ms[answered] > 0)
    assert np.all(a.outcomes.variant[answered] != "")


def test_light_load_meets_every_deadline_with_the_planned_variants():
    sc, sim = small(noise=False)
    run = sim.run(constant(4.0), "clipper-ha")
    s = summarise(run)
    assert s.miss_ratio == 0.0
    best = max(v.accuracy for v in sc.catalog.variants.values()
               if v.name in set(run.outcomes.variant.tolist()))
    assert s.effective_accuracy == pytest.approx(best)


def test_overload_misses_deadlines_and_accuracy_scaling_serves_more():
    _, sim = small()
    trace = constant(40.0)  # well above what resnet50 serves on two one-core devices
    ha, milp = summarise(sim.run(trace, "clipper-ha")), summarise(sim.run(trace, "milp"))
    assert ha.miss_ratio > 0.3
    assert milp.goodput_rps > ha.goodput_rps
    assert milp.effective_accuracy > ha.effective_accuracy


def test_a_request_late_on_every_route_is_shed_at_arrival():
    """Far above what two one-core devices serve (120 rps against about 45 of ResNet-18), the
    routing sheds the requests that every route would answer after their deadline: dropped at
    arrival, sent nowhere (no variant, no device, latency 0), while the requests it sends are
    still answered; the light load before the step sheds nothing."""
    _, sim = small(noise=False)
    trace = generate([FamilyLoad("resnet", StepRate((4.0, 120.0), 10.0), 300.0)], 20, seed=4)
    o = sim.run(trace, "milp").outcomes
    shed = (o.status == "dropped") & (o.variant == "")
    assert shed.sum() > 100 and np.all(o.arrival_s[shed] >= 10.0)
    assert np.all(o.latency_ms[shed] == 0.0) and np.all(o.device[shed] == "")
    sent = ~shed
    assert np.all(o.variant[sent] != "") and (o.status[sent] == "ok").sum() > 0.5 * sent.sum()


def test_standby_variants_take_a_step_at_once_and_miss_less():
    """With the MILP's standby variants (spill routes) the overflow of a demand step goes to the
    fast variant before any re-plan, with no model load; without them it waits for the re-plan."""
    trace = generate([FamilyLoad("resnet", StepRate((4.0, 40.0), 20.0), 300.0)], 50, seed=2)
    runs = {}
    for standby in (True, False):
        _, sim = small(load_fixed_s=3.0, load_s_per_gb=0.0, dwell_s=5.0, planner=PlannerOptions(standby=standby))
        runs[standby] = sim.run(trace, "milp")
    with_standby, without = runs[True], runs[False]
    assert any(r[2] == 0.0 for r in with_standby.plans[0].routes["resnet"])  # the first plan has spill routes
    assert not any(p.loads for p in with_standby.plans[1:])  # the step needed no load
    first_replan = with_standby.plans[1].time_s
    o = with_standby.outcomes
    right_after = (o.arrival_s >= 20.0) & (o.arrival_s < first_replan)
    assert right_after.sum() > 0 and "resnet18" in set(o.variant[right_after].tolist())
    assert summarise(with_standby).miss_ratio < summarise(without).miss_ratio


def test_a_demand_step_replans_after_the_dwell_and_switches_after_the_load_delay():
    # without standby variants, so that the step needs a model load (the next test has them)
    _, sim = small(load_fixed_s=3.0, load_s_per_gb=0.0, dwell_s=5.0, planner=PlannerOptions(standby=False))
    trace = generate([FamilyLoad("resnet", StepRate((4.0, 40.0), 20.0), 300.0)], 50, seed=2)
    run = sim.run(trace, "milp")
    later = run.plans[1:]
    assert later, "the step should trigger a re-plan"
    with_loads = [p for p in later if p.loads]
    assert with_loads and all(p.time_s - p.decided_s >= 3.0 for p in with_loads)
    assert all(p.decided_s >= 20.0 for p in later)  # nothing to do before the step
    # served variants: the fast one appears only after the first switch
    first_switch = min(p.time_s for p in with_loads)
    early = run.outcomes.arrival_s < first_switch
    assert "resnet18" not in set(run.outcomes.variant[early].tolist())
    assert "resnet18" in set(run.outcomes.variant[~early].tolist())


def test_without_replanning_the_first_plan_stays():
    _, sim = small(auto=False)
    trace = generate([FamilyLoad("resnet", StepRate((4.0, 40.0), 20.0), 300.0)], 40, seed=2)
    assert len(sim.run(trace, "milp").plans) == 1


def test_one_route_matches_the_batching_modules_own_event_loop():
    """The simulator drives the same policy objects as tests/route_loop.py simulate_route: with one device,
    one static route, exact (p50) service times and no pipelining (simulate_route has none) both
    give nearly the same outcome per request. (Not exactly: like the shim's worker, the simulator
    tells the policy when a batch sent now would start, predicted from the p95 model, so a
    request may be dropped a little earlier than simulate_route, which does not.)"""
    sc, sim = small(devices=1, noise=False, auto=False, shim=ShimConfig(pipeline=0))
    trace = constant(9.0, duration=60.0, seed=5)
    run = sim.run(trace, "clipper-ha")
    (placement,) = run.plans[0].routes["resnet"]
    device, variant, _ = placement
    records = sc.profiles.for_pair(variant, "cpu-1t")
    p = next(p for p in sim.plan_for("clipper-ha", initial_demand(trace), None).placements)
    p50 = LatencyModel.from_profiles(records, "p50", instances=p.instances, threads=p.threads)
    policy = make_policy("proteus", model=LatencyModel.from_profiles(records, "p95", instances=p.instances,
                                                                     threads=p.threads),
                         batch_cap=p.batch_cap, slo_s=0.3, slack_s=0.002)
    arrivals = [SimRequest(i, t, t + 0.3) for i, t in enumerate(trace.time_s.tolist())]
    ref = simulate_route(policy, arrivals, p50.seconds, max_in_flight=p.instances)
    ref_met = np.zeros(len(trace), dtype=bool)
    for o in ref.outcomes:
        ref_met[o.id] = o.met
    differ = int(np.sum(run.outcomes.met != ref_met))
    assert differ <= 0.02 * len(trace), f"{differ} of {len(trace)} outcomes differ"
    assert abs(run.outcomes.met.mean() - ref_met.mean()) <= 0.02


def test_proteus_scale_runs_with_every_policy():
    sc = scenarios.proteus_scale(devices=40)
    sim = Simulator(sc.catalog, sc.cluster, sc.profiles, sc.slo_ms, SimConfig())
    loads = [FamilyLoad(f, ConstantRate(d / 50), sc.slo_ms[f]) for f, d in sc.demand_rps.items()]
    trace = generate(loads, 3.0, seed=0)
    for policy in ("milp", "model-switching", "clipper-ha", "clipper-ht", "infaas"):
        s = summarise(sim.run(trace, policy))
        assert s.requests == len(trace) and 0.0 <= s.miss_ratio < 0.2, policy


def test_the_initial_plan_is_made_for_the_initial_demand_given():
    """`run(..., initial_demand=...)` provisions the first plan for that demand, not for the
    trace's first seconds (without it: the trace's rate over its first 5 s)."""
    _, sim = small(auto=False)
    trace = constant(4.0)
    assert sim.run(trace, "milp").plans[0].demand_rps["resnet"] == pytest.approx(
        initial_demand(trace)["resnet"], abs=1e-3)
    run = sim.run(trace, "milp", initial_demand={"resnet": 30.0})
    assert run.plans[0].demand_rps == {"resnet": 30.0}


def test_reusing_the_plan_of_an_equal_request_changes_no_outcome(monkeypatch):
    """Within a run, a re-plan request equal to an earlier one (same demand estimate, same
    current placements) gets that request's plan instead of a second solve; the run's outcomes
    are exactly those of solving every request afresh."""
    # 5-s means in steps of 0.2 rps: estimates repeat, and on this trace (seed 2: 96 solves) 11
    # requests repeat an earlier (demand, hosting) pair; a re-plan for the demand of the last
    # hold is not even asked for (controller.py), so the repeats are of plans further back
    _, sim = small(estimator="window")
    trace = generate([FamilyLoad("resnet", MarkovModulatedRate((10.0, 40.0), (20.0, 5.0)), 300.0)], 300, seed=2)
    reused = sim.run(trace, "milp")
    stats = sim.last_stats
    assert stats.reused > 0 and stats.solves > stats.reused
    monkeypatch.setattr("orchestrator.simulation.driver.REPRODUCIBLE", frozenset())  # every request solved
    fresh = sim.run(trace, "milp")
    assert sim.last_stats.reused == 0 and sim.last_stats.solves == stats.solves
    assert np.array_equal(reused.outcomes.status, fresh.outcomes.status)
    assert np.array_equal(reused.outcomes.variant, fresh.outcomes.variant)
    assert np.allclose(reused.outcomes.latency_ms, fresh.outcomes.latency_ms, equal_nan=True)
    assert [p.routes for p in reused.plans] == [p.routes for p in fresh.plans]


def test_models_sharing_a_device_run_at_once_at_shared_speed():
    """Processor sharing: two routes on one device, a batch each sent at 0. Alone they take a and
    b (a < b, the profiles' p50, noise off); together each runs at half speed, so the short one
    ends at 2a. A second batch of the short route sent at 0 waits for its lane (one Triton
    instance), then shares the device with what is left of the long one."""
    import heapq

    from orchestrator.dataplane.routing import static_plan
    from orchestrator.simulation.devices import Request
    from orchestrator.simulation.driver import Simulation
    from orchestrator.simulation.events import DONE

    sc, sim = small(devices=1, noise=False)
    plan = static_plan({"resnet": [("cpu0", "resnet18", 1), ("cpu0", "resnet50", 1)]}, batch_cap=1, slo_ms=300.0)
    run = Simulation(sim, constant(20.0, duration=1.0), "milp", None, None)  # (outcome slots for ids 0-2)
    run._install(plan, 0.0, None, 2, 0, "test")
    fast, slow = run.routes[("cpu0", "resnet18")], run.routes[("cpu0", "resnet50")]
    a, b = fast.median_s[1], slow.median_s[1]
    assert 0 < a < b
    for route, rid in ((fast, 0), (slow, 1), (fast, 2)):
        route.in_flight += 1
        run.hardware.submit(route, [Request(rid, 0.0, 10.0)], 0.0)
    assert fast.running == 1 and len(fast.waiting) == 1  # one lane: the second batch waits
    done = {}
    while run.clock.heap:
        now, _, kind, payload = heapq.heappop(run.clock.heap)
        if kind == DONE and payload[1] == payload[0].version:
            done[payload[0].batch[0].id] = now
            run._done(payload, now)
    assert done[0] == pytest.approx(2 * a)
    # from 2a the fast route's second batch shares with the slow one's remaining b - a
    rest = b - a
    if rest > a:  # the fast batch (a alone) ends first, at 2a + 2a; the slow one then runs alone
        assert done[2] == pytest.approx(4 * a) and done[1] == pytest.approx(4 * a + (rest - a))
    else:
        assert done[1] == pytest.approx(2 * a + 2 * rest) and done[2] == pytest.approx(2 * a + 2 * rest + (a - rest))


def test_calibration_learns_batch_times_not_the_hold_the_policy_chooses():
    """At a low rate the Proteus policy holds each request to fill a batch, for most of its
    300-ms budget; the device still answers every batch in its profiled time. Calibration
    compares batch times (sent to answered) with their prediction, so the route does not look
    slow for the hold (a request's whole time would make it look 4x slow: routing would then
    pass it over, as it did a spill route that batches a burst)."""
    from orchestrator.simulation.driver import Simulation

    _, sim = small(devices=1, noise=False)
    run = Simulation(sim, constant(3.0, duration=60.0), "clipper-ht", None, None)
    result = run.run()
    o = result.outcomes
    assert summarise(result).miss_ratio == 0.0
    (route,) = run.routes.values()
    batch_of_one_ms = route.median_s[1] * 1000
    assert np.median(o.latency_ms) > 1.5 * batch_of_one_ms  # held: answered well after its batch could have been
    assert 0.7 < route.calibration.ratio < 1.1  # p50 service against the p95 model


def test_service_time_noise_draws_are_random_gauss_from_the_seed():
    """The simulator's own normal draws (written out so they compile) are `random.gauss`'s."""
    import random

    from orchestrator.simulation.driver import Simulation

    _, sim = small(seed=5)
    run = Simulation(sim, constant(1.0, duration=2.0), "milp", None, None)
    reference = random.Random(5)
    assert [run.hardware._gauss() for _ in range(101)] == [reference.gauss(0.0, 1.0) for _ in range(101)]


def test_a_demand_floor_at_the_workload_s_peak_meets_the_first_burst_and_keeps_the_calm_accurate():
    """`demand_floor` (the family's known peak, planning.floored): the first plan is made for the
    peak, the accuracy-first routing still sends most of the calm before the first burst to
    ResNet-50, and that burst misses far fewer deadlines than under a plan made for the calm
    (which the controller changes only after the burst has shown itself). The bursty workload
    of docs/results.md ("devices slower than profiled"), its trace seed 9: calm 10 req/s, bursts
    of 40 req/s, the first at 27 s."""
    sc = scenarios.small_resnet(devices=2, memory_mb=450.0)
    trace = generate([FamilyLoad("resnet", MarkovModulatedRate((10.0, 40.0), (20.0, 5.0), initial_state=0), 300.0)],
                     300.0, seed=9)
    first_burst = int(np.argmax(np.bincount(trace.time_s.astype(int)) >= 25))
    assert 10 < first_burst < 60
    runs = {}
    for floor in (0.0, 40.0):
        control = ControlPlaneConfig(demand_floor={"resnet": floor} if floor else {})
        runs[floor] = Simulator(sc.catalog, sc.cluster, sc.profiles, SLO, SimConfig(control=control, seed=0)).run(
            trace, "milp")
    assert runs[40.0].plans[0].demand_rps == {"resnet": 40.0}
    assert runs[0.0].plans[0].demand_rps["resnet"] < 20.0
    missed = {}
    for floor, run in runs.items():
        o = run.outcomes
        calm = o.arrival_s < first_burst
        assert (o.variant[calm] == "resnet50").mean() > 0.6, floor  # the calm is served accurately either way
        burst = (o.arrival_s >= first_burst) & (o.arrival_s < first_burst + 5)
        missed[floor] = int((o.status[burst] != "ok").sum())
    assert missed[40.0] < missed[0.0] / 2, missed
    assert summarise(runs[40.0]).effective_accuracy > summarise(runs[0.0]).effective_accuracy


def test_after_a_burst_the_calm_is_served_by_the_accurate_variant_the_devices_still_host():
    """The peak estimator keeps the plan made for a burst in force through the calm after it: it
    routes the fast variant only. The calm's accurate variant, which the devices still host, stands
    by as a route of weight 0 that takes spare time (planner/standby.py, dataplane/routing.py), so
    most of that calm is served by it, on time, with no model loaded. The bursty workload of
    docs/results.md, trace seed 9 (as the demand floor's test), on devices of 600 MB: room for
    ResNet-50 beside the two ResNet-18 instances the plan for a burst places."""
    sc = scenarios.small_resnet(devices=2, memory_mb=600.0)
    acc = {name: v.accuracy for name, v in sc.catalog.variants.items()}
    trace = generate([FamilyLoad("resnet", MarkovModulatedRate((10.0, 40.0), (20.0, 5.0), initial_state=0), 300.0)],
                     300.0, seed=9)
    run = Simulator(sc.catalog, sc.cluster, sc.profiles, SLO, SimConfig(seed=0)).run(trace, "milp")
    o = run.outcomes
    per_second = np.bincount(trace.time_s.astype(int))
    calm_second = per_second <= 15
    under_peak_plan = np.zeros(len(o.arrival_s), dtype=bool)
    standing: set[str] = set()
    for plan, after in zip(run.plans, run.plans[1:] + [None]):
        routes = plan.routes["resnet"]
        fastest_weighted = max(acc[v] for _, v, w in routes if w > 0)
        accurate = {v for _, v, w in routes if w == 0 and acc[v] > fastest_weighted}
        if accurate:
            standing |= accurate
            end = after.time_s if after is not None else np.inf
            under_peak_plan |= (o.arrival_s >= plan.time_s) & (o.arrival_s < end)
    calm = under_peak_plan & calm_second[np.minimum(o.arrival_s.astype(int), len(per_second) - 1)]
    assert calm.sum() > 200, calm.sum()  # the peak's plan was in force through a long calm
    assert not any(p.loads for p in run.plans[1:])
    assert np.isin(o.variant[calm], sorted(standing)).mean() > 0.5
    assert (o.status[calm] != "ok").mean() < 0.02


def test_a_speed_timeline_slows_the_batches_that_start_in_its_slow_windows():
    """`Simulator(speed=...)` (a live run's `Run.speed_timeline`): a factor that holds all run
    long serves exactly as profiles scaled by it do; a slow window slows the batches that start
    in it, and leaves those before it as they were."""
    from orchestrator.evaluation import SpeedTimeline, scaled_profiles

    sc, _ = small(devices=1, noise=False)
    (device,) = sc.cluster.devices
    trace = constant(3.0, duration=30.0)

    def run(**kw):
        return Simulator(sc.catalog, sc.cluster, sc.profiles, SLO, SimConfig(noise=False), **kw).run(trace, "clipper-ha")

    base = run()
    everywhere = run(speed=SpeedTimeline(10.0, {device.id: [2.0]}))
    scaled = run(service_profiles=scaled_profiles(sc.profiles, {device.device_class: 2.0}))
    assert np.array_equal(everywhere.outcomes.latency_ms, scaled.outcomes.latency_ms)
    assert np.nanmedian(everywhere.outcomes.latency_ms) > np.nanmedian(base.outcomes.latency_ms)

    window = run(speed=SpeedTimeline(10.0, {device.id: [1.0, 3.0, 1.0], "elsewhere": [9.0]}))
    t, lat, lat0 = trace.time_s, window.outcomes.latency_ms, base.outcomes.latency_ms
    before, slow = t < 9.0, (t >= 10.5) & (t < 19.0)
    assert np.array_equal(lat[before], lat0[before])
    assert np.median(lat[slow] - lat0[slow]) > 0.5 * np.median(lat0[slow])
