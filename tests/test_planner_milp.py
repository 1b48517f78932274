"""The MILP planner is a function of its request: equal requests give equal plans when SCIP stops
at the gap (status OPTIMAL). The simulator relies on this to reuse a plan within a run."""

from dataclasses import replace

from orchestrator import scenarios
from orchestrator.planner import PlanRequest, make_plan


def _same(a, b) -> None:
    assert a.solver.status == b.solver.status == "OPTIMAL"
    assert a.placements == b.placements
    assert a.families == b.families
    assert a.solver.objective == b.solver.objective


def _request(sc, demand, current=None) -> PlanRequest:
    return PlanRequest(catalog=sc.catalog, cluster=sc.cluster, profiles=sc.profiles,
                       slo_ms={f: sc.slo_ms[f] for f in demand}, demand_rps=demand, current=current)


def test_equal_requests_give_equal_plans_cold_and_against_a_current_plan():
    sc = scenarios.small_resnet(devices=3, slo_ms=300.0)
    cold = _request(sc, {"resnet": 25.0})
    first = make_plan(cold)
    _same(first, make_plan(replace(cold)))
    replan = _request(sc, {"resnet": 11.0}, current=first.with_version(7))
    again = _request(sc, {"resnet": 11.0}, current=first.with_version(9))  # the version plays no part
    _same(make_plan(replan), make_plan(again))


def test_equal_requests_give_equal_plans_at_proteus_scale():
    sc = scenarios.proteus_scale(devices=40)
    req = _request(sc, dict(sc.demand_rps))
    _same(make_plan(req), make_plan(req))


def test_a_replan_reads_only_what_each_device_hosts_now():
    """Two current plans hosting the same (device, variant, instances, threads) but routing
    different traffic give the same re-plan: the simulator keys its reuse of plans on that."""
    sc = scenarios.small_resnet(devices=3, slo_ms=300.0)
    current = make_plan(_request(sc, {"resnet": 25.0}))
    rerouted = replace(current, placements=tuple(replace(p, served_rps=p.served_rps / 2 + 1.0)
                                                 for p in current.placements))
    assert rerouted.placements != current.placements
    _same(make_plan(_request(sc, {"resnet": 12.0}, current)), make_plan(_request(sc, {"resnet": 12.0}, rerouted)))
