"""Plan stability: demand noise around a plan changes no placement, a demand change the plan in
force absorbs by re-routing loads nothing (standbys included), and a real shift still re-plans."""

from __future__ import annotations

import dataclasses
import random

import pytest

from orchestrator.plan import Plan
from orchestrator.planner import PlannerOptions, build_problem, make_plan
from orchestrator.scenarios import proteus_scale, small_resnet

from tests.planner_checks import check_plan


def hosting(plan: Plan) -> set[tuple]:
    return {(p.device_id, p.variant, p.instances, p.threads) for p in plan.placements}


def noisy(demand: dict[str, float], rng: random.Random) -> dict[str, float]:
    return {f: d * rng.uniform(0.95, 1.05) for f, d in demand.items()}


@pytest.mark.parametrize("seed", range(4))
def test_five_percent_noise_at_proteus_scale_changes_no_placement(seed):
    """40 devices, 46 variants, 9 families: the plan as served (standbys included) is re-planned
    for every family up or down 5 %, and for per-family draws within +-5 %: every placement stays,
    everything is served, and the re-plan is proven optimal (the kept plan's bound)."""
    s = proteus_scale(seed=seed)
    base = make_plan(s.request())
    rng = random.Random(seed)
    cases = [{f: d * k for f, d in s.demand_rps.items()} for k in (0.95, 1.05)]
    cases += [noisy(s.demand_rps, rng) for _ in range(4)]
    for demand in cases:
        req = s.request(demand_rps=demand, current=base)
        plan = make_plan(req)
        assert hosting(plan) == hosting(base)
        assert plan.solver.status == "OPTIMAL"
        assert all(fp.unserved_rps < 1e-6 * fp.demand_rps for fp in plan.families.values())
        check_plan(build_problem(req), plan)


def test_a_change_absorbed_by_re_routing_loads_no_model_standbys_included():
    """A plan in force without standbys (made with standby off): re-planned with standbys on for
    demand it serves by re-routing, nothing is loaded, although the standby layer would load the
    fastest variant beside each serving device in a fresh plan."""
    s = small_resnet(devices=3, demand_rps=8.0, slo_ms=600.0)
    base = make_plan(s.request(options=PlannerOptions(standby=False)))
    fresh = make_plan(s.request())
    assert hosting(fresh) > hosting(base)  # a fresh plan does get standbys
    for demand in (6.0, 7.6, 8.4, 9.0):
        plan = make_plan(s.request(demand_rps={"resnet": demand}, current=base))
        assert hosting(plan) == hosting(base), demand
        assert plan.families["resnet"].unserved_rps < 1e-6
    # at Proteus scale: noise around a plan in force without standbys loads nothing either
    p = proteus_scale(seed=1)
    bare = make_plan(p.request(options=PlannerOptions(standby=False)))
    plan = make_plan(p.request(demand_rps=noisy(p.demand_rps, random.Random(7)), current=bare))
    assert hosting(plan) == hosting(bare)


def test_when_the_milp_only_re_routes_the_final_plan_loads_nothing():
    """Over a grid of demand changes, whenever the MILP's own decision (standby off) loads nothing
    the final plan (standby on) loads nothing."""
    s = small_resnet(devices=4, demand_rps=12.0, slo_ms=600.0)
    base = make_plan(s.request())
    kept = 0
    for demand in (3.0, 6.0, 9.0, 11.0, 12.5, 14.0, 20.0, 30.0, 60.0):
        req = s.request(demand_rps={"resnet": demand}, current=base)
        bare = make_plan(dataclasses.replace(req, options=PlannerOptions(standby=False)))
        full = make_plan(req)
        if hosting(bare) <= hosting(base):
            kept += 1
            assert hosting(full) <= hosting(base), demand
    assert kept >= 3  # the grid does exercise routing-only re-plans


def test_a_real_shift_changes_the_plan_and_the_threshold_decides_small_gains():
    """x3 demand needs new placements; a small drop whose best plan gains 0.32 points is kept under
    the default threshold (0.5 points) and taken with no threshold."""
    s = small_resnet(devices=4, demand_rps=20.0)
    base = make_plan(s.request(options=PlannerOptions(standby=False)))
    spike = make_plan(s.request(demand_rps={"resnet": 60.0}, current=base, options=PlannerOptions(standby=False)))
    assert hosting(spike) != hosting(base) and spike.families["resnet"].unserved_rps < 1e-6
    current = make_plan(s.request(demand_rps={"resnet": 26.0}, options=PlannerOptions(standby=False)))
    keep = make_plan(s.request(current=current, options=PlannerOptions(standby=False)))
    take = make_plan(s.request(current=current, options=PlannerOptions(standby=False, change_threshold=0.0)))
    assert hosting(keep) == hosting(current)
    assert hosting(take) != hosting(current)
    gain = take.families["resnet"].effective_accuracy - keep.families["resnet"].effective_accuracy
    assert 0 < gain < 0.5
