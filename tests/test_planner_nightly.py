"""Nightly solver tests at scale (not in default CI): `make nightly` or
`.venv/bin/python -m pytest -q -m nightly tests/test_planner_nightly.py`."""

from __future__ import annotations

import pytest

from orchestrator.planner import PlannerOptions, build_problem, make_plan
from orchestrator.scenarios import proteus_scale, thousand_devices

from tests.planner_checks import check_plan

pytestmark = pytest.mark.nightly


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_proteus_scale_solves_to_optimality(seed):
    s = proteus_scale(seed=seed)  # 40 devices x 4 classes, 46 variants, 9 families
    req = s.request()
    plan = make_plan(req)
    assert plan.solver.status == "OPTIMAL"
    check_plan(build_problem(req), plan)
    assert all(f.unserved_rps < 1e-6 for f in plan.families.values())


@pytest.mark.parametrize("seed", [0, 1])
def test_thousand_devices_solve_to_optimality(seed):
    s = thousand_devices(seed=seed)
    req = s.request()
    plan = make_plan(req)
    assert plan.solver.status == "OPTIMAL"
    check_plan(build_problem(req), plan)
    assert len({p.device_id for p in plan.placements}) > 900


def test_proteus_scale_overload_and_replan():
    s = proteus_scale(seed=0)
    base = make_plan(s.request())
    spike = s.request(demand_rps={f: 3 * d for f, d in s.demand_rps.items()}, current=base,
                      options=PlannerOptions(time_limit_s=20.0))
    plan = make_plan(spike)
    assert plan.solver.status in ("OPTIMAL", "FEASIBLE")
    assert plan.solver.gap < 1e-3
    check_plan(build_problem(spike), plan)
    # x3 is still within this cluster's capacity (the old "> 0" held only by 1e-11 rounding)
    assert sum(f.unserved_rps for f in plan.families.values()) < 1e-6 * sum(s.demand_rps.values())
    overload = s.request(demand_rps={f: 10 * d for f, d in s.demand_rps.items()})  # x10 is beyond it
    plan = make_plan(overload)
    assert plan.solver.status == "OPTIMAL"
    check_plan(build_problem(overload), plan)
    short = [f for f in plan.families.values() if f.unserved_rps > 1.0]
    assert short and all(f.reason.startswith("not enough capacity") for f in short)
