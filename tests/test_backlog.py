"""backlog.py: the in-flight state the shim's workers and the simulator keep, and the prediction over it."""

import random

from orchestrator.backlog import InFlight, answer_by


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


def test_answer_by_counts_queue_own_and_others_in_flight():
    def seconds(b):
        return 0.01 * b

    # 5 queued at cap 2: two full batches, then the new request joins the fifth's batch (2)
    assert answer_by(10.0, 5, 2, seconds, 0.5, [0.25, 0.125]) == 10.0 + (2 * 0.02 + 0.02 + 0.5 + 0.25 + 0.125)
    assert answer_by(10.0, 0, 4, seconds, 0.0, ()) == 10.0 + 0.01
