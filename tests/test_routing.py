"""Weighted routing: split, determinism, skipping unhealthy devices, plan swaps."""

from collections import Counter

import pytest

from orchestrator.routing import DeviceHealth, RoutingTable, SmoothWeightedRoundRobin, static_plan


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
