"""The on-time prediction (orchestrator/backlog.py): what a route has ahead of a request, how the
device's sharing stretches it, and how calibration learns a device's speed from its batches."""

import pytest

from orchestrator.backlog import CALIBRATION_RANGE, Calibration, answer_by, in_flight_s


def seconds(b: int) -> float:
    return 0.010 + 0.005 * b  # 15 ms alone at batch 1, 20 ms at 2


def test_the_queue_is_cut_into_batches_of_the_cap_then_the_requests_own_batch():
    # 5 queued at cap 2: two full batches (2 x 20 ms), the fifth rides with the new request (20 ms)
    assert answer_by(1.0, 5, 2, seconds, [], 0) == pytest.approx(1.0 + 0.060)
    assert answer_by(1.0, 0, 2, seconds, [], 0) == pytest.approx(1.0 + 0.015)


def test_batches_in_flight_count_until_the_last_ends_plus_how_late_the_oldest_is():
    assert in_flight_s(1.0, [1.010, 1.030]) == pytest.approx(0.030)
    # the oldest should have ended 5 ms ago and still runs: the other waits that much longer
    assert in_flight_s(1.0, [0.995, 1.030]) == pytest.approx(0.035)
    assert answer_by(1.0, 0, 2, seconds, [1.010, 1.030], 0) == pytest.approx(1.0 + 0.030 + 0.015)


def test_other_busy_models_on_the_device_stretch_the_work_by_their_number():
    """Processor sharing: with k other models running a batch, this route gets 1 / (k + 1) of the
    device, so its work takes k + 1 times as long."""
    alone = answer_by(1.0, 3, 2, seconds, [1.020], 0) - 1.0
    assert answer_by(1.0, 3, 2, seconds, [1.020], 1) - 1.0 == pytest.approx(2 * alone)
    assert answer_by(1.0, 3, 2, seconds, [1.020], 3) - 1.0 == pytest.approx(4 * alone)


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


def test_one_odd_batch_moves_the_ratio_little_and_it_stays_in_range():
    cal = Calibration()
    cal.answered(0.0, 0.010, 10.0)  # a thousand times the prediction
    assert 1.0 < cal.ratio <= 1.0 + 0.05 * (CALIBRATION_RANGE[1] - 1.0) + 1e-12
    for _ in range(500):
        cal.answered(0.0, 0.010, 10.0)
    assert cal.ratio == pytest.approx(CALIBRATION_RANGE[1])
    assert Calibration().budget_use(1.0, 1.1, 1.0) == float("inf")  # no budget left
