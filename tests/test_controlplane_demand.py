"""Demand estimators (pure): window, EWMA, and the look-ahead forecaster; the tracker's gap filling."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.controlplane.demand import (DemandTracker, Ewma, LinearForecast, RecentPeak, WindowedRate,
                                              make_estimator)
from orchestrator.controlplane.intake import BadTelemetry, TelemetryIntake


def feed(est, series, start=100):
    for i, v in enumerate(series):
        est.observe(start + i, v)
    return est.estimate()


def test_window_is_the_mean_of_the_last_seconds():
    assert feed(WindowedRate(window_s=4), [100, 100, 2, 4, 6, 8]) == pytest.approx(5.0)


def test_ewma_follows_a_step_gradually():
    est = feed(Ewma(alpha=0.5), [10, 10, 10, 30])
    assert est == pytest.approx(20.0)


def test_forecast_leads_a_rising_ramp_and_does_not_undershoot_a_fall():
    ramp = [10, 12, 14, 16, 18, 20, 22, 24]
    window = feed(WindowedRate(window_s=5), ramp)
    forecast = feed(LinearForecast(window_s=8, horizon_s=3), ramp)
    assert forecast == pytest.approx(24 + 2 * 3)  # the trend, three seconds ahead
    assert forecast > ramp[-1] > window
    fall = list(reversed(ramp))
    assert feed(LinearForecast(window_s=8, horizon_s=3), fall) == pytest.approx((14 + 12 + 10) / 3)


def test_forecast_is_bounded_by_the_window_peak():
    est = feed(LinearForecast(window_s=8, horizon_s=30), [0, 0, 0, 0, 0, 0, 40, 40])
    assert est <= 1.5 * 40


def test_peak_keeps_the_recent_burst_then_forgets_it():
    est = RecentPeak(window_s=10, smooth_s=2)
    burst = [10, 10, 40, 44, 10, 10]
    assert feed(est, burst) == pytest.approx(42.0)  # the best 2-s mean, not one noisy second
    assert feed(est, [10] * 4, start=106) == pytest.approx(42.0)  # the burst is 8 s old: still planned for
    assert feed(est, [10] * 3, start=110) == pytest.approx(27.0)  # 44 still in the window, 40 gone
    assert feed(est, [10], start=113) == pytest.approx(10.0)  # no burst in the last 10 s
    assert make_estimator("peak").estimate() == 0.0


def _peak_by_scan(samples: list[float], window_s: int, smooth_s: int) -> float:
    """RecentPeak's definition, computed afresh: the best smooth_s-second mean in the last window_s."""
    ys = samples[-window_s:]
    if not ys:
        return 0.0
    k = min(smooth_s, len(ys))
    return max(sum(ys[i:i + k]) for i in range(len(ys) - k + 1)) / k


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 60), max_size=60), st.integers(1, 12), st.integers(1, 5))
def test_peak_kept_as_samples_come_equals_a_scan_of_the_window(arrivals, window_s, smooth_s):
    est = RecentPeak(window_s=window_s, smooth_s=smooth_s)
    seen: list[float] = []
    for second, a in enumerate(arrivals):
        est.observe(second, a)
        seen.append(float(a))
        assert est.estimate() == _peak_by_scan(seen, window_s, smooth_s)


def test_tracker_counts_missing_seconds_as_zero():
    t = DemandTracker("window")
    t.observe("resnet", 100, 10)
    t.observe("resnet", 104, 10)  # 101..103 had no arrivals
    assert t.estimate("resnet") == pytest.approx(20 / 5)
    t.observe("resnet", 102, 50)  # late: the past is not rewritten
    assert t.estimate("resnet") == pytest.approx(20 / 5)
    assert t.estimate("bert") is None


def test_unknown_estimator_is_refused():
    with pytest.raises(ValueError, match="crystal"):
        make_estimator("crystal")


def test_intake_sums_shims_per_second_and_flushes_finished_seconds():
    intake = TelemetryIntake()
    row = {"family": "resnet", "second": 100, "arrivals": 3, "completions": 3, "met": 2, "deadline_misses": 1,
           "served": {"resnet18": 3}}
    intake.add({"client_id": "a", "seconds": [row]}, now=101.0)
    intake.add({"client_id": "b", "seconds": [row, {**row, "second": 101}]}, now=102.0)
    done = intake.flush(before_second=101)
    assert [(f.second, f.arrivals, f.met, f.served) for f in done] == [(100, 6, 4, {"resnet18": 6})]
    assert [f.second for f in intake.flush(before_second=200)] == [101]
    with pytest.raises(BadTelemetry, match=r"seconds\[0\]\.family"):
        intake.add({"seconds": [{"second": 1}]}, now=0)


def test_intake_lists_each_client_with_its_kind_and_request_rate():
    intake = TelemetryIntake()
    rows = [{"family": "resnet", "second": s, "arrivals": 20, "completions": 20, "met": 20} for s in range(90, 100)]
    intake.add({"client_id": "gw-1", "kind": "gateway", "seconds": rows}, now=100.5)
    intake.add({"client_id": "app", "seconds": rows[-2:]}, now=100.5)  # no kind: an embedded shim
    assert intake.client_list(100.5) == [
        {"id": "app", "kind": "shim", "requests_per_s": 4.0, "reported_s_ago": 0.0},
        {"id": "gw-1", "kind": "gateway", "requests_per_s": 20.0, "reported_s_ago": 0.0}]
    assert [c["id"] for c in intake.client_list(120.0)] == []  # quiet for longer than the window
    with pytest.raises(BadTelemetry, match=r"kind must be one of shim, gateway, not 'proxy'"):
        intake.add({"client_id": "x", "kind": "proxy", "seconds": []}, now=100.5)


# -- demand floor: the family's declared peak (planning.floored) -----------------------------
def test_the_planning_demand_is_raised_to_the_floor_and_overrides_are_not():
    from orchestrator.controlplane.planning import planning_demand

    fams = ["bert", "resnet"]
    floors = {"resnet": 40.0, "gone": 9.0}  # a family the catalog no longer has is left out
    assert planning_demand(fams, None, {"resnet": 12.0}, {}, floors=floors) == {"resnet": 40.0}  # calm: the floor
    assert planning_demand(fams, None, {"resnet": 55.0}, {}, floors=floors) == {"resnet": 55.0}  # above it: the estimate
    assert planning_demand(fams, None, {}, {}, floors=floors) == {"resnet": 40.0}  # no traffic yet: planned for its peak
    assert planning_demand(fams, None, {"resnet": 12.0}, {"resnet": 5.0}, floors=floors) == {"resnet": 5.0}
    assert planning_demand(fams, None, {"resnet": 12.0}, {}, {"resnet": 3.0}, floors=floors) == {"resnet": 3.0}
    assert planning_demand(fams, None, {"resnet": 12.0}, {}) == {"resnet": 12.0}


def test_a_controller_with_a_demand_floor_plans_for_it_first_and_calm_below_it_does_not_re_plan():
    import sys
    import time
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from controlplane_helpers import stub_control_plane

    from orchestrator.controlplane.controller import Controller

    def report(second: int, n: int) -> dict:  # one client's counts of one second: all n answered in time
        return {"client_id": "test", "seconds": [{"family": "resnet", "second": second, "arrivals": n, "completions": n,
                                                  "met": n, "served": {"resnet18": n}, "served_met": {"resnet18": n}}]}

    cp = stub_control_plane(demand_floor={"resnet": 30.0}, dwell_s=0.0, estimator="window")
    controller = Controller(cp)
    reason = controller.tick()  # no traffic yet: the first plan is for the declared peak
    assert reason and "first plan" in reason and "resnet 30.0 rps" in reason, reason
    assert cp.plan.families["resnet"].demand_rps == 30.0
    version = cp.plan.version
    now = int(time.time())
    for s in range(now - 8, now - 2):  # a calm of 6 req/s, far below the floor
        cp.intake.add(report(s, 6), now=now)
    assert controller.tick() is None and cp.plan.version == version
    assert cp.estimates["resnet"] == pytest.approx(6.0)  # the estimate is what came; the plan stays at the floor
    for s in range(now - 2, now + 4):  # a burst above the floor: planned for at once
        cp.intake.add(report(s, 60), now=now + 6)
    controller.clock = lambda: now + 6.5
    reason = controller.tick()
    assert reason and "rose above" in reason, reason
    assert cp.plan.families["resnet"].demand_rps > 30.0


def test_a_restarted_controller_remembers_the_recorded_burst():
    """A new controller (a restarted control plane: same SQLite store) starts its estimators from
    the recorded history of the last 5 minutes, so the peak estimator still plans for the burst
    it saw before the restart instead of scaling the plan made for it down to the calm."""
    import sys
    import time
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from controlplane_helpers import stub_control_plane

    from orchestrator.controlplane.controller import Controller

    cp = stub_control_plane(dwell_s=0.0)
    now = int(time.time())
    rows = [{"second": s, "family": "resnet", "arrivals": 50 if now - 100 <= s < now - 94 else 10, "estimate": 0.0,
             "capacity": 0.0, "completions": 0, "met": 0, "misses": 0, "effective_accuracy": 0.0}
            for s in range(now - 200, now - 3)]
    rows += [{**rows[0], "second": now - 400, "arrivals": 500}]  # older than 5 minutes: forgotten
    cp.record_history(rows)
    cp.apply(cp.solve(demand={"resnet": 50.0}), reason="the plan in force before the restart")
    version = cp.plan.version
    controller = Controller(cp)
    assert controller.tick() is None and cp.plan.version == version
    assert cp.estimates["resnet"] == pytest.approx(50.0)
    cp.intake.add({"client_id": "test", "seconds": [  # calm telemetry after the restart
        {"family": "resnet", "second": s, "arrivals": 10, "completions": 10, "met": 10, "served": {"resnet18": 10},
         "served_met": {"resnet18": 10}} for s in range(now - 2, now + 3)]}, now=now + 5)
    controller.clock = lambda: now + 5.5
    assert controller.tick() is None and cp.plan.version == version  # the plan for the burst stays
    assert cp.estimates["resnet"] == pytest.approx(50.0)
    cp.config.estimator = "window"  # another estimator: it starts from the history too (the last 5 s: calm)
    controller.tick()
    assert cp.estimates["resnet"] == pytest.approx(10.0)


def test_a_plan_made_with_miss_headroom_is_remade_for_the_estimate_once_deadlines_are_met_again():
    """Misses under a plan make the controller re-plan with headroom (more capacity than the
    estimate: fast variants instead of accurate ones). Once deadlines are met long enough for the
    headroom to decay, the plan is made again for the estimate itself, which the band around the
    headroom's larger demand would otherwise keep out (a calm served by fast variants until the
    next demand change)."""
    import sys
    import time
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from controlplane_helpers import stub_control_plane

    from orchestrator.controlplane.controller import Controller

    cp = stub_control_plane(dwell_s=0.0, estimator="window")
    now = int(time.time())
    controller = Controller(cp, clock=lambda: now)

    def feed(first: int, last: int, missed: int) -> None:  # 20 req/s, `missed` of them late each second
        cp.intake.add({"client_id": "test", "seconds": [
            {"family": "resnet", "second": s, "arrivals": 20, "completions": 20, "met": 20 - missed,
             "deadline_misses": missed, "served": {"resnet50": 20}, "served_met": {"resnet50": 20 - missed}}
            for s in range(first, last)]}, now=last)

    feed(now - 12, now - 2, 0)
    assert "first plan" in (controller.tick() or "")
    assert cp.plan.families["resnet"].demand_rps == pytest.approx(20.0)
    feed(now - 2, now + 4, 10)  # half of each second late
    controller.clock = lambda: now + 6.5
    reason = controller.tick()
    assert reason and "missed the deadline" in reason and "1.25x headroom" in reason, reason
    assert cp.plan.families["resnet"].demand_rps == pytest.approx(25.0)
    reasons = []
    for t in range(now + 4, now + 24):  # deadlines met again: the headroom decays, tick by tick
        feed(t, t + 1, 0)
        controller.clock = lambda: t + 2.5
        reasons.append(controller.tick())
    spent = [r for r in reasons if r]
    assert len(spent) == 1 and "headroom the plan was made with is spent" in spent[0], reasons
    assert reasons.index(spent[0]) >= 7  # not before the headroom has decayed (0.97 a tick from 1.25)
    assert cp.plan.families["resnet"].demand_rps == pytest.approx(20.0)
