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


def test_an_idle_device_becomes_a_warm_spare_of_the_busiest_families():
    """A device without weighted routes (it came back, or demand is low) gets the fastest
    variant of each family with demand: when a serving device fails, the re-plan that moves its
    traffic there needs no load."""
    from orchestrator.planner.standby import add_standby

    s = small_resnet(devices=2, demand_rps=2.0, slo_ms=600.0)
    req = dataclasses.replace(s.request(), options=PlannerOptions(standby=False))
    full = make_plan(req, "milp")
    fam = full.families["resnet"]
    only_cpu0 = dataclasses.replace(
        full, placements=tuple(p for p in full.placements if p.device_id == "cpu0"),
        families={"resnet": dataclasses.replace(fam, routes=tuple(r for r in fam.routes if r.device_id == "cpu0"))})
    plan = add_standby(only_cpu0, build_problem(req))
    spare = plan.placement("cpu1", "resnet18")
    assert spare is not None and spare.served_rps == 0
    assert ("cpu1", "resnet18", 0.0) in [(r.device_id, r.variant, r.weight) for r in plan.families["resnet"].routes]
    assert [p for p in plan.placements if p.device_id == "cpu1"] == [spare]  # nothing else lands there
    # a family the plan does not serve gets no spare
    idle = dataclasses.replace(only_cpu0, families={"resnet": dataclasses.replace(
        only_cpu0.families["resnet"], served_rps=0.0, unserved_rps=2.0, routes=())})
    assert add_standby(idle, build_problem(req)).placement("cpu1", "resnet18") is None
    # a device the objective prices stays idle: a spare would put it to use
    priced = dataclasses.replace(req, options=PlannerOptions(standby=False, objective="cost"))
    assert add_standby(only_cpu0, build_problem(priced)).placement("cpu1", "resnet18") is None


def test_the_standby_takes_the_instance_config_that_fits_where_the_fastest_one_does_not():
    """On 450-MB devices holding ResNet-50, ResNet-18 with two instances (its fastest config,
    262 MB) does not fit beside it, one instance (131 MB) does: that one stands by."""
    sc = small_resnet(devices=2, memory_mb=450.0)
    plan = make_plan(sc.request(demand_rps={"resnet": 10.0}, slo_ms={"resnet": 300.0}))
    assert {p.variant for p in plan.placements if p.served_rps > 0} == {"resnet50"}
    spill = [r for r in plan.families["resnet"].routes if r.weight == 0]
    assert {(r.device_id, r.variant) for r in spill} == {("cpu0", "resnet18"), ("cpu1", "resnet18")}, plan.placements
    assert all(plan.placement(r.device_id, "resnet18").instances == 1 for r in spill)


def test_a_plan_for_a_peak_keeps_the_calm_s_accurate_variant_standing_by_for_spare_time():
    """Re-planned for a burst, the MILP routes the fast variant, and the calm's accurate variant,
    which the devices still host (kept, serving nothing), becomes a route of weight 0 there: the
    shims send it requests only with spare time (dataplane/routing.py), so the calm under a plan
    for the peak is served accurately, without a load. Nothing else changes."""
    s = small_resnet(devices=2, demand_rps=2.0, slo_ms=600.0)
    calm = make_plan(s.request())
    assert {r.variant for r in calm.families["resnet"].routes if r.weight > 0} == {"resnet152"}
    req = s.request(demand_rps={"resnet": 60.0}, current=calm)
    without, peak = _plans(s, demand_rps={"resnet": 60.0}, current=calm)
    routes = peak.families["resnet"].routes
    assert {r.variant for r in routes if r.weight > 0} == {"resnet18"}
    standing = sorted((r.device_id, r.variant) for r in routes if r.weight == 0)
    assert standing == [("cpu0", "resnet152"), ("cpu1", "resnet152")]
    assert all(peak.placement(d, v).served_rps == 0 for d, v in standing)
    assert peak.loaded_pairs() == without.loaded_pairs()  # nothing loaded for them: the MILP kept them
    assert [r for r in routes if r.weight > 0] == list(without.families["resnet"].routes)
    assert peak.families["resnet"].effective_accuracy == without.families["resnet"].effective_accuracy
    assert make_plan(req).families == peak.families
    # the calm's own plan routes its most accurate variant already: only the fast spill routes
    assert {r.variant for r in calm.families["resnet"].routes if r.weight == 0} == {"resnet18"}
    # a plan for the peak from scratch hosts nothing more accurate: no such route
    cold = make_plan(s.request(demand_rps={"resnet": 60.0}))
    assert {r.variant for r in cold.families["resnet"].routes} == {"resnet18"}
