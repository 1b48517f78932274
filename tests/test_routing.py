"""Weighted routing: split, determinism, skipping unhealthy devices, plan swaps."""

from collections import Counter

import pytest

from orchestrator.dataplane.routing import SPARE_USE, DeviceHealth, RoutingTable, SmoothWeightedRoundRobin, static_plan


def test_smooth_wrr_interleaves_by_weight_and_is_deterministic():
    rr = SmoothWeightedRoundRobin({"a": 3, "b": 1})
    picks = [rr.pick() for _ in range(8)]
    assert picks == ["a", "a", "b", "a", "a", "a", "b", "a"]
    assert SmoothWeightedRoundRobin({"a": 0.75, "b": 0.25}).pick() == "a"


@pytest.mark.parametrize("weights", [{"a": 3, "b": 1}, {"a": 0.5, "b": 0.3, "c": 0.2}, {"a": 1, "b": 0}])
def test_smooth_wrr_split_matches_weights(weights):
    rr = SmoothWeightedRoundRobin(weights)
    n = 1000
    counts = Counter(rr.pick() for _ in range(n))
    total = sum(weights.values())
    for k, w in weights.items():
        assert abs(counts[k] - n * w / total) <= 1  # exact up to rounding
    assert "b" not in counts or weights["b"] > 0  # zero weight never picked


def test_routing_table_splits_a_family_and_rejects_unknown_families():
    table = RoutingTable(static_plan({"resnet": [("cpu0", "resnet18", 3), ("cpu1", "resnet50", 1)]}))
    counts = Counter(table.pick("resnet").variant for _ in range(400))
    assert counts == {"resnet18": 300, "resnet50": 100}
    with pytest.raises(ValueError, match=r"unknown family 'vit'.*\['resnet'\]"):
        table.pick("vit")


def test_unhealthy_devices_are_skipped_until_their_cooldown_ends():
    table = RoutingTable(static_plan({"resnet": [("cpu0", "resnet18", 3), ("cpu1", "resnet50", 1)]}))
    health = DeviceHealth(cooldown_s=2.0)
    health.mark_failed("cpu0", now=10.0)
    assert {table.pick("resnet", lambda r: health.healthy(r.device_id, 11.0)).device_id for _ in range(20)} == {"cpu1"}
    assert health.failures == {"cpu0": 1}
    counts = Counter(table.pick("resnet", lambda r: health.healthy(r.device_id, 12.0)).device_id for _ in range(400))
    assert counts == {"cpu0": 300, "cpu1": 100}
    health.mark_failed("cpu0", now=20.0)
    health.mark_ok("cpu0")
    assert health.healthy("cpu0", 20.0)


def test_when_every_device_is_unhealthy_routes_are_tried_anyway_and_exclusions_hold():
    table = RoutingTable(static_plan({"resnet": [("cpu0", "resnet18", 1), ("cpu1", "resnet50", 1)]}))
    assert table.pick("resnet", lambda r: False) is not None
    assert {table.pick("resnet", exclude_devices={"cpu0"}).device_id for _ in range(5)} == {"cpu1"}
    assert table.pick("resnet", exclude_devices={"cpu0", "cpu1"}) is None


def test_plan_swap_keeps_round_robin_state_only_for_unchanged_families():
    plan1 = static_plan({"a": [("d0", "v0", 1), ("d1", "v1", 1)], "b": [("d0", "w0", 1), ("d1", "w1", 1)]})
    t1 = RoutingTable(plan1)
    assert t1.pick("a").device_id == "d0" and t1.pick("b").device_id == "d0"
    plan2 = static_plan({"a": [("d0", "v0", 1), ("d1", "v1", 1)], "b": [("d2", "w2", 1)]}, version=2)
    t2 = RoutingTable(plan2, previous=t1)
    assert t2.pick("a").device_id == "d1"  # continues where plan 1 left off
    assert t2.pick("b").device_id == "d2"
    assert t2.routes("b")[0].weight == 1.0


def test_static_plan_normalises_weights_and_rejects_empty_families():
    plan = static_plan({"resnet": [("cpu0", "resnet18", 3), ("cpu1", "resnet50", 1)]}, batch_cap=4, slo_ms=100)
    assert [r.weight for r in plan.families["resnet"].routes] == [0.75, 0.25]
    assert plan.placement("cpu1", "resnet50").batch_cap == 4
    with pytest.raises(ValueError, match="positive weight"):
        static_plan({"resnet": []})


# --- accuracy-first ----------------------------------------------------------------------------

ACC = {"resnet18": 69.76, "resnet34": 73.31, "resnet50": 76.13}


def planned(demand_rps: float):
    """A plan made for `demand_rps`: resnet50 on cpu0 carries 40 %, resnet18 on cpu1 60 %."""
    plan = static_plan({"resnet": [("cpu0", "resnet50", 0.4), ("cpu1", "resnet18", 0.6)]})
    fam = plan.families["resnet"]
    from dataclasses import replace
    return replace(plan, families={"resnet": replace(fam, demand_rps=demand_rps)})


def picks_at(table, rate_rps: float, seconds: float) -> Counter:
    n = int(rate_rps * seconds)
    return Counter(table.pick("resnet", now=i / rate_rps).variant for i in range(n))


def test_accuracy_first_serves_calm_demand_with_the_accurate_routes_only():
    table = RoutingTable(planned(50.0), accuracy=ACC)  # resnet50 may carry 20 rps
    assert picks_at(table, 15.0, 20.0) == Counter({"resnet50": 300})
    weighted = RoutingTable(planned(50.0))  # the plan's split, whatever the load
    assert picks_at(weighted, 15.0, 20.0) == Counter({"resnet50": 120, "resnet18": 180})


def test_accuracy_first_spills_above_the_planned_flow_and_overloads_in_proportion():
    counts = picks_at(RoutingTable(planned(50.0), accuracy=ACC), 30.0, 20.0)  # above resnet50's 20 rps
    assert abs(counts["resnet50"] - 20 * 20) <= 11  # its planned flow (+ the bucket's first fill) ...
    assert counts["resnet18"] == 600 - counts["resnet50"]  # ... and the rest spills to resnet18 at once
    counts = picks_at(RoutingTable(planned(50.0), accuracy=ACC), 50.0, 20.0)  # the planned demand: the plan's split
    assert abs(counts["resnet50"] - 0.4 * 1000) <= 11
    counts = picks_at(RoutingTable(planned(50.0), accuracy=ACC), 100.0, 20.0)  # twice the plan: every route
    assert abs(counts["resnet50"] - 0.4 * 2000) <= 11  # over its flow, in the plan's proportions


def test_accuracy_first_falls_back_to_weights_without_a_planned_demand_or_accuracies():
    assert picks_at(RoutingTable(planned(0.0), accuracy=ACC), 15.0, 20.0) == Counter({"resnet50": 120, "resnet18": 180})
    same = RoutingTable(planned(50.0), accuracy=ACC)
    again = RoutingTable(planned(50.0), previous=same, accuracy=ACC)
    assert again._rr["resnet"] is same._rr["resnet"]  # a re-publish keeps the buckets
    moved = RoutingTable(planned(60.0), previous=same, accuracy=ACC)
    assert moved._rr["resnet"] is not same._rr["resnet"]  # a new planned demand refills them


# --- accuracy-first by time (budget_use) and spill routes ------------------------------------------


def with_spill(demand_rps: float):
    """resnet50 on cpu0 carries everything the plan made for `demand_rps`; resnet18 on cpu0 is a spill route."""
    plan = static_plan({"resnet": [("cpu0", "resnet50", 1.0), ("cpu0", "resnet18", 0.0)]})
    from dataclasses import replace
    return replace(plan, families={"resnet": replace(plan.families["resnet"], demand_rps=demand_rps)})


def picks_with(table, rate_rps: float, seconds: float, on_time) -> Counter:
    """Picks with a time prediction: `on_time(route)` True -> uses 0.8 of the budget (on time,
    no spare time), False -> 1.5 (late); or a float, used as is. A request shed counts as "shed"."""
    n = int(rate_rps * seconds)

    def use(route):
        v = on_time(route)
        return v if not isinstance(v, bool) else (0.8 if v else 1.5)
    picked = (table.pick("resnet", now=i / rate_rps, budget_use=use) for i in range(n))
    return Counter(r.variant if r is not None else "shed" for r in picked)


def test_with_on_time_planned_flows_come_first_then_the_fastest_route_on_time():
    # 30 rps, within the plan's 50: the token split (resnet50's 20 rps, the rest to resnet18)
    by_time = picks_with(RoutingTable(planned(50.0), accuracy=ACC), 30.0, 20.0, on_time=lambda r: True)
    assert by_time == picks_at(RoutingTable(planned(50.0), accuracy=ACC), 30.0, 20.0)
    # 60 rps, above it: resnet50 keeps its planned 20 rps and everything else goes to the fast
    # resnet18 while it answers on time (by tokens alone the overflow would follow the weights)
    counts = picks_with(RoutingTable(planned(50.0), accuracy=ACC), 60.0, 20.0, on_time=lambda r: True)
    assert abs(counts["resnet50"] - 20 * 20) <= 11 and counts["resnet18"] == 1200 - counts["resnet50"]
    tokens_only = picks_at(RoutingTable(planned(50.0), accuracy=ACC), 60.0, 20.0)
    assert tokens_only["resnet50"] > counts["resnet50"] + 50
    # ... and to resnet50 when resnet18 would be late
    late18 = picks_with(RoutingTable(planned(50.0), accuracy=ACC), 60.0, 20.0,
                        on_time=lambda r: r.variant != "resnet18")
    assert late18 == Counter({"resnet50": 1200})
    # resnet50 predicted late: everything goes to resnet18, token or not
    late50 = picks_with(RoutingTable(planned(50.0), accuracy=ACC), 60.0, 20.0,
                        on_time=lambda r: r.variant != "resnet50")
    assert late50 == Counter({"resnet18": 1200})
    # spare time (both routes would answer within SPARE_USE of the budget): what resnet50's planned
    # flow cannot take goes to it anyway, before resnet18's planned flow
    spare = picks_with(RoutingTable(planned(50.0), accuracy=ACC), 60.0, 20.0, on_time=lambda r: SPARE_USE / 2)
    assert spare == Counter({"resnet50": 1200})


def test_a_spill_route_takes_only_what_the_weighted_routes_cannot_answer_in_time():
    table = RoutingTable(with_spill(10.0), accuracy=ACC)
    assert table.planned_routes("resnet") == [table.plan.families["resnet"].routes[0]]  # spill routes carry no share
    assert table.routes("resnet") == list(table.plan.families["resnet"].routes)  # but may take requests
    # without a time test, never: even at ten times the planned demand
    assert picks_at(RoutingTable(with_spill(10.0), accuracy=ACC), 100.0, 5.0) == Counter({"resnet50": 500})
    # with one: within the planned flow only what resnet50 would answer late (every third request)
    calls = iter(range(10**6))
    within = picks_with(table, 6.0, 10.0, on_time=lambda r: r.variant == "resnet18" or next(calls) % 3 != 0)
    assert within == Counter({"resnet50": 40, "resnet18": 20})
    # beyond the planned 10 rps: the overflow too
    beyond = picks_with(RoutingTable(with_spill(10.0), accuracy=ACC), 30.0, 10.0, on_time=lambda r: True)
    assert abs(beyond["resnet50"] - 10 * 10) <= 6 and beyond["resnet18"] == 300 - beyond["resnet50"]
    # weighted routing ignores spill routes and time alike
    assert picks_with(RoutingTable(with_spill(10.0)), 30.0, 2.0, on_time=lambda r: False) == Counter({"resnet50": 60})


def test_a_request_late_on_every_route_goes_where_it_is_answered_soonest_or_is_shed():
    """No route on time (within ON_TIME_USE): the route predicted to answer soonest while that is
    before the deadline (LATE_USE), whatever the weights; past it on every route, the request is
    shed (None, `shed_last`), unless the caller asks for an answer anyway (`shed=False`)."""
    soon = {"resnet50": 0.95, "resnet18": 0.9}  # both past ON_TIME_USE, resnet18 before the deadline
    table = RoutingTable(with_spill(10.0), accuracy=ACC)
    picked = [table.pick("resnet", now=i / 30.0, budget_use=lambda r: soon[r.variant]) for i in range(60)]
    assert Counter(r.variant for r in picked) == Counter({"resnet18": 60})  # not the plan's resnet50
    assert not table.shed_last
    late = {"resnet50": 1.6, "resnet18": 1.2}  # past the deadline everywhere
    assert [table.pick("resnet", now=3.0 + i / 30.0, budget_use=lambda r: late[r.variant]) for i in range(5)] == [None] * 5
    assert table.shed_last and table.picker("resnet").shed == 5
    anyway = table.pick("resnet", now=4.0, budget_use=lambda r: late[r.variant], shed=False)
    assert anyway is not None and anyway.variant == "resnet18" and not table.shed_last
    # the next pick that finds a route on time clears the mark; weighted routing never sheds
    assert table.pick("resnet", now=5.0, budget_use=lambda r: 0.3).variant == "resnet50" and not table.shed_last
    weighted = RoutingTable(with_spill(10.0))
    assert weighted.pick("resnet", now=5.0, budget_use=lambda r: late[r.variant]).variant == "resnet50"
    assert not weighted.shed_last
    # every device marked unhealthy: tried anyway, but a shed request stays shed
    assert table.pick("resnet", lambda r: False, now=6.0, budget_use=lambda r: late[r.variant]) is not None
    assert table.pick("resnet", now=7.0, budget_use=lambda r: late[r.variant]) is None and table.shed_last


def with_upgrade(demand_rps: float):
    """resnet18 on cpu0 carries everything the plan made for `demand_rps` (a plan for a peak);
    resnet50, still loaded on cpu0, stands by without a share (planner/standby.py)."""
    plan = static_plan({"resnet": [("cpu0", "resnet18", 1.0), ("cpu0", "resnet50", 0.0)]})
    from dataclasses import replace
    return replace(plan, families={"resnet": replace(plan.families["resnet"], demand_rps=demand_rps)})


def test_a_route_more_accurate_than_the_planned_ones_takes_spare_time_and_never_an_overflow():
    """A weight-0 route more accurate than every route with a share takes a request only with
    spare time (the device idle enough to answer within SPARE_USE of the budget): the calm under
    a plan for the peak. Never as the overflow's route: that is the fastest route on time, and the
    accurate variant's device time would slow the planned routes beside it (a burst)."""
    # spare time: the accurate route first, whatever the planned flows
    spare = picks_with(RoutingTable(with_upgrade(40.0), accuracy=ACC), 10.0, 10.0, on_time=lambda r: SPARE_USE / 2)
    assert spare == Counter({"resnet50": 100})
    # ... only while its device is idle (nothing in flight or queued on any of its routes): where
    # requests would use little of their budget even on a busy device (a GPU), they go as planned
    table = RoutingTable(with_upgrade(40.0), accuracy=ACC)
    busy_device = Counter(table.pick("resnet", now=i / 10.0, budget_use=lambda r: SPARE_USE / 2,
                                     idle=lambda r: False).variant for i in range(100))
    assert busy_device == Counter({"resnet18": 100})
    # no spare time (every route would use 0.8 of the budget): the planned route, within its flow
    busy = picks_with(RoutingTable(with_upgrade(40.0), accuracy=ACC), 10.0, 10.0, on_time=lambda r: True)
    assert busy == Counter({"resnet18": 100})
    # past the planned flow with the planned route late and the accurate one on time but without
    # spare time: not the accurate route (a spill route of a fast variant would take it); the
    # planned route would answer after the deadline, so the request is shed
    over = picks_with(RoutingTable(with_upgrade(10.0), accuracy=ACC), 30.0, 10.0,
                      on_time=lambda r: 0.7 if r.variant == "resnet50" else 1.5)
    assert over == Counter({"shed": 300})
    over = picks_with(RoutingTable(with_upgrade(10.0), accuracy=ACC), 30.0, 10.0,
                      on_time=lambda r: 0.7 if r.variant == "resnet50" else 0.95)
    assert over == Counter({"resnet18": 300})
    # the fast spill route still takes the overflow where the accurate one stands by too
    both = static_plan({"resnet": [("cpu0", "resnet34", 1.0), ("cpu0", "resnet50", 0.0), ("cpu0", "resnet18", 0.0)]})
    from dataclasses import replace
    both = replace(both, families={"resnet": replace(both.families["resnet"], demand_rps=10.0)})
    spilled = picks_with(RoutingTable(both, accuracy=ACC), 30.0, 10.0,
                         on_time=lambda r: 0.8 if r.variant == "resnet34" else 0.7)
    assert abs(spilled["resnet34"] - 10 * 10) <= 6 and spilled["resnet50"] == 0
    assert spilled["resnet18"] == 300 - spilled["resnet34"]


def test_a_new_spill_route_replaces_the_picker():
    same = RoutingTable(planned(50.0), accuracy=ACC)
    spilled = static_plan({"resnet": [("cpu0", "resnet50", 0.4), ("cpu1", "resnet18", 0.6), ("cpu0", "resnet18", 0.0)]})
    from dataclasses import replace
    spilled = replace(spilled, families={"resnet": replace(spilled.families["resnet"], demand_rps=50.0)})
    assert RoutingTable(spilled, previous=same, accuracy=ACC)._rr["resnet"] is not same._rr["resnet"]
