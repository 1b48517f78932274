"""Standby variants (planner/standby.py): the MILP's plan gets each served family's fastest
variant as a spill route where memory allows, and nothing else changes."""

from __future__ import annotations

import dataclasses

from orchestrator.planner import PlannerOptions, build_problem, make_plan
from orchestrator.scenarios import small_resnet

from planner_checks import check_plan


def _plans(scenario, policy="milp", **overrides):
    req = scenario.request(**overrides)
    without = make_plan(dataclasses.replace(req, options=PlannerOptions(standby=False)), policy)
    with_standby = make_plan(req, policy)
    check_plan(build_problem(req), with_standby)
    return without, with_standby


def test_each_serving_device_gets_the_fastest_variant_as_a_spill_route():
    s = small_resnet(devices=2, demand_rps=2.0, slo_ms=600.0)  # calm: ResNet-152 on both devices
    without, plan = _plans(s)
    assert {p.variant for p in without.placements} == {"resnet152"}
    spill = [r for r in plan.families["resnet"].routes if r.weight == 0]
    assert sorted((r.device_id, r.variant) for r in spill) == [("cpu0", "resnet18"), ("cpu1", "resnet18")]
    for r in spill:
        p = plan.placement(r.device_id, r.variant)
        assert p.served_rps == 0 and p.capacity_rps > 0
    # the weighted routes, the served figures and the predicted accuracy are the MILP's own
    assert [r for r in plan.families["resnet"].routes if r.weight > 0] == list(without.families["resnet"].routes)
    assert plan.families["resnet"].effective_accuracy == without.families["resnet"].effective_accuracy
    assert any("spill routes" in n and "standby loaded" in n for n in plan.notes)


def test_no_standby_where_memory_is_full_or_the_fastest_variant_is_already_there():
    # ResNet-152's footprint plus ResNet-18's does not fit: no standby at all
    s = small_resnet(devices=2, demand_rps=2.0, slo_ms=600.0)
    m152 = s.catalog.variants["resnet152"].memory_mb
    m18 = s.catalog.variants["resnet18"].memory_mb
    tight = small_resnet(devices=2, demand_rps=2.0, slo_ms=600.0, memory_mb=m152 + m18 / 2)
    without, plan = _plans(tight)
    assert plan.placements == without.placements and plan.families == without.families
    # overload: ResNet-18 already serves on every device, nothing to add
    busy_without, busy = _plans(small_resnet(devices=2, demand_rps=200.0, slo_ms=600.0))
    assert all(r.weight > 0 for r in busy.families["resnet"].routes)
    assert busy.placements == busy_without.placements


def test_baselines_get_no_standby():
    s = small_resnet(devices=2, demand_rps=2.0, slo_ms=600.0)
    for policy in ("clipper-ha", "model-switching", "infaas"):
        plan = make_plan(s.request(), policy)
        assert all(r.weight > 0 for r in plan.families["resnet"].routes), policy
