"""Nightly solver tests (not in default CI): `make nightly`, or
`.venv/bin/python -m pytest -q -m nightly tests/test_planner_nightly.py tests/test_planner_served.py`.

* optimality: many more random instances than the default suite against the exhaustive search
  (small, cold and re-planned) and the per-device reference MILP (medium);
* scale: Proteus scale (40 devices, 46 variants, 9 families) and 1,000 devices, cold and re-planned
  from the plan in force (noise, x0.5, x3): status, gap and time (a generous bound; the figures are
  printed as a table at the end of the run; benchmarks/planner_bench.py has the goals).
"""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from orchestrator.planner import build_problem, make_plan
from orchestrator.scenarios import proteus_scale, thousand_devices

from tests.planner_checks import check_plan
from tests.test_planner_properties import (_search_size, check_against_reference, check_exact, check_standby_layer,
                                           instances, medium)

pytestmark = pytest.mark.nightly
MANY = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROWS: list[tuple] = []  # (instance, runs, statuses, cpu p50 ms, cpu max ms, max gap, bound s)


def summary(write) -> None:
    """The table of the scale tests run (tests/conftest.py prints it at the end of the session)."""
    if not ROWS:
        return
    write("")
    write(f"{'planner at scale':<44} {'runs':>4}  {'status':<22} {'cpu p50':>9} {'cpu max':>9} {'max gap':>8}  bound")
    for name, runs, statuses, p50, worst, gap, bound in ROWS:
        write(f"{name:<44} {runs:>4}  {statuses:<22} {p50:>7.1f}ms {worst:>7.1f}ms {gap:>8.1e}  < {bound:g} s")


def timed(requests) -> list[tuple]:
    out = []
    for req in requests:
        c0 = time.process_time()
        plan = make_plan(req)
        out.append((req, plan, 1000 * (time.process_time() - c0)))
    return out


def record(name: str, runs: list[tuple], bound_s: float) -> None:
    cpu = sorted(ms for _, _, ms in runs)
    statuses: dict[str, int] = {}
    for _, plan, _ in runs:
        statuses[plan.solver.status] = statuses.get(plan.solver.status, 0) + 1
    ROWS.append((name, len(runs), " ".join(f"{k} {v}" for k, v in sorted(statuses.items())), cpu[len(cpu) // 2],
                 cpu[-1], max(plan.solver.gap for _, plan, _ in runs), bound_s))
    assert cpu[-1] < 1000 * bound_s, f"{name}: {cpu[-1]:.0f} ms of CPU, bound {bound_s} s"
    for req, plan, _ in runs:
        check_plan(build_problem(req), plan)


# --- optimality ---------------------------------------------------------------------------

@MANY
@given(instances(floors=True))
def test_many_small_instances_equal_the_exhaustive_search(req):
    assume(req.profiles.device_classes() >= {d.device_class for d in req.cluster.devices})
    assume(_search_size(req) <= 5000)
    plan = make_plan(req)
    check_exact(build_problem(req), plan)


@MANY
@given(instances(floors=True), st.sampled_from([0.5, 0.95, 1.05, 2.0, 3.0]), st.sampled_from([0.0, 0.5]))
def test_many_small_re_plans_equal_the_exhaustive_search(req, factor, threshold):
    import dataclasses
    assume(req.profiles.device_classes() >= {d.device_class for d in req.cluster.devices})
    assume(_search_size(req) <= 3000)
    first = make_plan(dataclasses.replace(req, options=dataclasses.replace(req.options, standby=True)))
    req2 = dataclasses.replace(req, current=first, demand_rps={f: d * factor for f, d in req.demand_rps.items()},
                               options=dataclasses.replace(req.options, change_threshold=threshold))
    plan = make_plan(req2)
    prob = build_problem(req2)
    check_exact(prob, plan)
    check_standby_layer(prob, plan)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10**6))
def test_many_medium_instances_equal_the_per_device_reference_milp(seed):
    check_against_reference(medium(seed), time_limit_s=300.0)


# --- scale --------------------------------------------------------------------------------

def replans(scenario_fn, seeds, factors):
    for seed in seeds:
        s = scenario_fn(seed=seed)
        base = make_plan(s.request())
        rng = random.Random(seed)
        for k in factors:
            demand = ({f: d * rng.uniform(0.95, 1.05) for f, d in s.demand_rps.items()} if k == "noise"
                      else {f: d * k for f, d in s.demand_rps.items()})
            yield s.request(demand_rps=demand, current=base)


def test_proteus_scale_cold_is_optimal():
    runs = timed(proteus_scale(seed=seed).request() for seed in range(10))
    record("proteus-40 cold", runs, bound_s=1.0)
    assert all(plan.solver.status == "OPTIMAL" for _, plan, _ in runs)
    assert all(f.unserved_rps < 1e-6 * f.demand_rps for _, plan, _ in runs for f in plan.families.values())


def test_thousand_devices_cold_is_optimal():
    runs = timed(thousand_devices(seed=seed).request() for seed in range(3))
    record("1,000 devices cold", runs, bound_s=5.0)
    assert all(plan.solver.status == "OPTIMAL" for _, plan, _ in runs)
    assert all(len({p.device_id for p in plan.placements}) > 900 for _, plan, _ in runs)


def test_proteus_scale_noise_re_plans_are_proven_optimal():
    runs = timed(replans(proteus_scale, range(6), ("noise", 0.95, 1.05, 0.5)))
    record("proteus-40 re-plan noise/x0.95/x1.05/x0.5", runs, bound_s=2.0)
    assert all(plan.solver.status == "OPTIMAL" for _, plan, _ in runs)


def test_proteus_scale_spike_re_plans_within_the_time_limit():
    runs = timed(replans(proteus_scale, range(4), (3.0,)))
    record("proteus-40 re-plan x3", runs, bound_s=4.0)
    assert all(plan.solver.gap < 1e-3 for _, plan, _ in runs)
    assert all(f.unserved_rps < 1e-6 * f.demand_rps for _, plan, _ in runs for f in plan.families.values())


def test_thousand_devices_re_plans():
    runs = timed(replans(thousand_devices, range(2), ("noise", 1.05, 3.0)))
    record("1,000 devices re-plan noise/x1.05/x3", runs, bound_s=8.0)
    assert all(plan.solver.gap < 1e-3 for _, plan, _ in runs)
    assert all(f.unserved_rps < 1e-6 * f.demand_rps for _, plan, _ in runs for f in plan.families.values())


def test_proteus_scale_overload_serves_the_most():
    s = proteus_scale(seed=0)
    overload = s.request(demand_rps={f: 10 * d for f, d in s.demand_rps.items()})  # x10 is beyond the cluster
    runs = timed([overload])
    record("proteus-40 cold x10 (overload)", runs, bound_s=2.0)
    plan = runs[0][1]
    assert plan.solver.status == "OPTIMAL"
    short = [f for f in plan.families.values() if f.unserved_rps > 1.0]
    assert short and all(f.reason.startswith("not enough capacity") for f in short)
