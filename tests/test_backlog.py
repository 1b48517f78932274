"""The on-time prediction (orchestrator/dataplane/backlog.py): the in-flight state the shim's workers and the
simulator keep, what a route has ahead of a request, how the device's sharing stretches it, and
how calibration learns a device's speed from its batches."""

import random

import pytest

from orchestrator.dataplane.backlog import (CALIBRATION_ALPHA, CALIBRATION_IDLE_S, CALIBRATION_RANGE, Calibration, InFlight,
                                           answer_by)
from orchestrator.dataplane.latency import LatencyModel

MODEL = LatencyModel({1: 15.0, 2: 20.0})  # 15 ms alone at batch 1, 20 ms at 2, +5 ms per request beyond


def in_flight_s(now: float, finish_at: list[float]) -> float:
    """The definition: until the last batch's predicted finish, plus however late the first is."""
    if not finish_at:
        return 0.0
    first, last = min(finish_at), max(finish_at)
    return (last - now if last > now else 0.0) + (now - first if first < now else 0.0)


def test_in_flight_keeps_first_and_last_through_sends_and_answers():
    rng = random.Random(0)
    flight, expected = InFlight(), {}  # key -> predicted finish
    for step in range(5000):
        if expected and rng.random() < 0.5:
            key = rng.choice(list(expected))
            flight.remove(key)
            del expected[key]
        else:
            key = step
            expected[key] = finish = rng.choice([1.0, 2.0, rng.random() * 3])  # ties included
            flight.add(key, finish)
        now = rng.random() * 3
        assert flight.seconds(now) == in_flight_s(now, list(expected.values()))
        lanes = rng.randint(1, 3)
        k = len(expected) - lanes
        assert flight.start_s(lanes) == (sorted(expected.values())[k] if expected and k >= 0 else None)
    flight.remove(-1)  # not in flight: ignored


def test_the_queue_is_cut_into_batches_of_the_cap_then_the_requests_own_batch():
    # 5 queued at cap 2: two full batches (2 x 20 ms), the fifth rides with the new request (20 ms)
    assert answer_by(1.0, 5, 2, MODEL, 0.0, 0) == pytest.approx(1.0 + 0.060)
    assert answer_by(1.0, 0, 2, MODEL, 0.0, 0) == pytest.approx(1.0 + 0.015)


def test_batches_in_flight_count_until_the_last_ends_plus_how_late_the_oldest_is():
    flight = InFlight()
    flight.add(1, 1.010)
    flight.add(2, 1.030)
    assert flight.seconds(1.0) == pytest.approx(0.030)
    late = InFlight()  # the oldest should have ended 5 ms ago and still runs: the other waits that much longer
    late.add(1, 0.995)
    late.add(2, 1.030)
    assert late.seconds(1.0) == pytest.approx(0.035)
    assert answer_by(1.0, 0, 2, MODEL, flight.seconds(1.0), 0) == pytest.approx(1.0 + 0.030 + 0.015)


def test_other_busy_models_on_the_device_stretch_the_work_by_their_number():
    """Processor sharing: with k other models running a batch, this route gets 1 / (k + 1) of the
    device, so its work takes k + 1 times as long."""
    alone = answer_by(1.0, 3, 2, MODEL, 0.020, 0) - 1.0
    assert answer_by(1.0, 3, 2, MODEL, 0.020, 1) - 1.0 == pytest.approx(2 * alone)
    assert answer_by(1.0, 3, 2, MODEL, 0.020, 3) - 1.0 == pytest.approx(4 * alone)


def test_calibration_learns_a_device_slower_than_its_profile_from_its_batches():
    cal = Calibration()
    assert cal.budget_use(0.0, 0.050, 0.100) == pytest.approx(0.5)
    for i in range(200):  # every batch takes twice what was predicted when it was sent
        cal.answered(sent_s=i, predicted_s=0.020, now=i + 0.040)
    assert cal.ratio == pytest.approx(2.0, rel=1e-3)
    assert cal.budget_use(0.0, 0.050, 0.100) == pytest.approx(1.0, rel=1e-3)  # no longer on time
    for i in range(200):  # and back when the device is as fast as profiled again
        cal.answered(sent_s=i, predicted_s=0.020, now=i + 0.020)
    assert cal.ratio == pytest.approx(1.0, rel=1e-3)


def test_a_route_passed_over_as_slow_is_tried_again_after_a_while():
    """The ratio of a route with no answered batch for CALIBRATION_IDLE_S relaxes towards 1,
    halving its distance every CALIBRATION_IDLE_S: a route judged slow during a burst (and then
    sent nothing) is on time again for the calm, and its next batch is folded into that."""
    cal = Calibration()
    for i in range(200):  # every batch twice as slow as predicted; the last answered at 199.04
        cal.answered(sent_s=i, predicted_s=0.020, now=i + 0.040)
    assert cal.budget_use(199.04 + CALIBRATION_IDLE_S, 199.04 + CALIBRATION_IDLE_S + 0.050,
                          199.04 + CALIBRATION_IDLE_S + 0.100) == pytest.approx(1.0, rel=1e-3)  # not yet
    later = 199.04 + 2 * CALIBRATION_IDLE_S
    assert cal.at(later) == pytest.approx(1.5, rel=1e-3)
    assert cal.budget_use(later, later + 0.050, later + 0.100) == pytest.approx(0.75, rel=1e-3)
    assert cal.at(later + 10 * CALIBRATION_IDLE_S) == pytest.approx(1.0, abs=2e-3)
    cal.answered(sent_s=later - 0.020, predicted_s=0.020, now=later)  # as fast as profiled now
    assert cal.ratio == pytest.approx(1.5 + CALIBRATION_ALPHA * (1.0 - 1.5), rel=1e-3)


def test_one_odd_batch_moves_the_ratio_little_and_it_stays_in_range():
    cal = Calibration()
    cal.answered(0.0, 0.010, 10.0)  # a thousand times the prediction
    assert 1.0 < cal.ratio <= 1.0 + 0.05 * (CALIBRATION_RANGE[1] - 1.0) + 1e-12
    for _ in range(500):
        cal.answered(0.0, 0.010, 10.0)
    assert cal.ratio == pytest.approx(CALIBRATION_RANGE[1])
    assert Calibration().budget_use(1.0, 1.1, 1.0) == float("inf")  # no budget left
