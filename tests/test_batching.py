"""Pure batching-policy tests: no Triton, simulated service times (orchestrator.batching.simulate_route)."""

import random

import pytest

from orchestrator.batching import (AimdPolicy, LatencyModel, NoBatchingPolicy, ProteusPolicy, SimRequest,
                                   make_policy, simulate_route)
from orchestrator.profiles import ProfileRecord


def service_ms(b: int) -> float:
    """A device with a fixed cost per call and a per-image cost: batching pays."""
    return 5.0 + 2.0 * b


def service_s(b: int) -> float:
    return service_ms(b) / 1000.0


def profiled_model() -> LatencyModel:
    return LatencyModel({b: service_ms(b) for b in (1, 2, 4, 8, 16)})


def poisson_arrivals(rate_rps: float, duration_s: float, deadline_ms: float, seed: int = 7) -> list[SimRequest]:
    rng = random.Random(seed)
    t, out = 0.0, []
    while True:
        t += rng.expovariate(rate_rps)
        if t >= duration_s:
            return out
        out.append(SimRequest(len(out), t, t + deadline_ms / 1000.0))


@pytest.fixture
def req():
    def make(rid, arrival, deadline=None, serve_late=False):
        return SimRequest(rid, arrival, deadline, serve_late)
    return make


# --- latency model -------------------------------------------------------------------------

def test_latency_model_interpolates_and_extrapolates():
    m = LatencyModel({1: 10.0, 4: 40.0, 8: 60.0})
    assert m.ms(1) == 10.0
    assert m.ms(2) == pytest.approx(20.0)
    assert m.ms(6) == pytest.approx(50.0)
    assert m.ms(16) == pytest.approx(100.0)  # slope of the last two points: 5 ms per image
    assert LatencyModel({4: 40.0}).ms(8) == pytest.approx(80.0)  # one point: proportional
    assert LatencyModel({4: 40.0}).ms(2) == 40.0  # below the smallest measured size: its latency
    assert not LatencyModel().known and LatencyModel().ms(3) == 0.0


def _rec(batch, p50, p95, p99, instances=1, threads=1):
    return ProfileRecord("resnet18", "cpu-1t", batch, instances, threads, p50, p95, p99, 1.0, 100)


def test_latency_model_from_profiles_picks_percentile_and_config():
    recs = [_rec(1, 10, 12, 15), _rec(4, 30, 36, 45), _rec(1, 7, 8, 9, instances=2), _rec(2, 9, 10, 11, instances=2),
            _rec(4, 15, 16, 17, instances=2)]
    assert LatencyModel.from_profiles(recs, "p99", instances=1, threads=1).points_ms == {1: 15, 4: 45}
    assert LatencyModel.from_profiles(recs, "p50", instances=1, threads=1).ms(4) == 30
    # no matching config: the most measured one (instances=2, three batch sizes)
    assert LatencyModel.from_profiles(recs, "p95", instances=3, threads=1).points_ms == {1: 8, 2: 10, 4: 16}
    with pytest.raises(ValueError, match="percentile"):
        LatencyModel.from_profiles(recs, "p90")


def test_learned_model_follows_observations_and_profiled_one_does_not():
    learned = LatencyModel.learned()
    learned.observe(4, 40.0)
    learned.observe(4, 50.0)
    assert learned.ms(4) == pytest.approx(42.0)
    fixed = LatencyModel({4: 40.0})
    fixed.observe(4, 400.0)
    assert fixed.ms(4) == 40.0


# --- Proteus decisions -----------------------------------------------------------------------

def test_proteus_holds_a_lone_request_until_its_deadline_forces_a_send(req):
    p = ProteusPolicy(profiled_model(), batch_cap=16, slack_s=0.001)
    r = req(1, 0.0, 0.100)
    d = p.decide([r], now=0.0)
    assert d.send == () and d.drop == ()
    assert d.wake_at == pytest.approx(0.100 - 0.007 - 0.001)
    assert p.decide([r], now=d.wake_at).send == (1,)


def test_proteus_hold_can_be_bounded(req):
    p = ProteusPolicy(profiled_model(), batch_cap=16, max_hold_s=0.010)
    r = req(1, 0.5, 10.0)
    assert p.decide([r], now=0.5).wake_at == pytest.approx(0.51)
    assert p.decide([r], now=0.51).send == (1,)


def test_proteus_sends_largest_batch_that_meets_the_earliest_deadline(req):
    p = ProteusPolicy(profiled_model(), batch_cap=16, pass_over=False)
    # earliest deadline 20 ms away: 5 + 2b <= 20 -> b = 7
    queue = [req(i, 0.0, 0.020 + 0.001 * i) for i in range(12)]
    assert p.decide(queue, now=0.0).send == tuple(range(7))
    # passing over requests 0-2 lets 9 go: 5 + 2*9 = 23 ms <= the deadlines of 3..11
    assert ProteusPolicy(profiled_model(), batch_cap=16).decide(queue, now=0.0).send == tuple(range(3, 12))
    # the cap binds: a full queue goes at once even with time to spare
    queue = [req(i, 0.0, 1.0) for i in range(20)]
    assert p.decide(queue, now=0.0).send == tuple(range(16))


def test_proteus_orders_by_deadline_not_arrival(req):
    p = ProteusPolicy(profiled_model(), batch_cap=2)
    queue = [req(1, 0.0, 0.5), req(2, 0.01, 0.05), req(3, 0.02, 0.04)]
    assert p.decide(queue, now=0.02).send == (3, 2)


def test_proteus_drops_hopeless_requests_unless_asked_to_serve_late(req):
    p = ProteusPolicy(profiled_model(), batch_cap=8)
    queue = [req(1, 0.0, 0.005), req(2, 0.0, 0.004, serve_late=True), req(3, 0.0, 0.5)]
    d = p.decide(queue, now=0.0)  # batch of one takes 7 ms: 1 and 2 cannot make it
    assert d.drop == (1,)
    assert d.send[0] == 2  # late but wanted: sent at once, topped up with what still fits
    assert 3 in d.send


def test_proteus_when_busy_only_drops_and_wakes_when_a_request_turns_hopeless(req):
    p = ProteusPolicy(profiled_model(), batch_cap=8)
    queue = [req(1, 0.0, 0.003), req(2, 0.0, 0.100)]
    d = p.decide(queue, now=0.0, can_send=False)
    assert d.send == () and d.drop == (1,)
    assert d.wake_at == pytest.approx(0.100 - 0.007, abs=1e-5)


def test_proteus_without_a_latency_model_sends_at_once(req):
    p = ProteusPolicy(LatencyModel.learned(), batch_cap=4)
    queue = [req(i, 0.0, 1.0) for i in range(6)]
    assert p.decide(queue, now=0.0).send == (0, 1, 2, 3)


def test_requests_without_deadline_are_sent_at_once(req):
    p = ProteusPolicy(profiled_model(), batch_cap=4)
    assert p.decide([req(1, 0.0), req(2, 0.0)], now=0.0).send == (1, 2)


# --- baselines -------------------------------------------------------------------------------

def test_aimd_grows_additively_and_backs_off_multiplicatively(req):
    p = AimdPolicy(batch_cap=8, slo_s=0.050)
    queue = [req(i, 0.0, None) for i in range(10)]
    assert p.decide(queue, 0.0).send == (0,)
    for _ in range(3):
        p.observe(1, 0.010)
    assert p.decide(queue, 0.0).send == (0, 1, 2, 3)
    p.observe(4, 0.060)  # over the SLO: x0.9
    assert p.limit == pytest.approx(3.6)
    for _ in range(20):
        p.observe(3, 0.010)
    assert p.limit == 8  # never above the cap
    assert p.decide(queue, 0.0, can_send=False).send == ()


def test_no_batching_sends_one_in_arrival_order(req):
    p = NoBatchingPolicy()
    assert p.decide([req(5, 0.0, 0.001), req(6, 0.0, 1.0)], 0.0).send == (5,)


def test_make_policy_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown batching policy 'fifo'"):
        make_policy("fifo", model=LatencyModel(), batch_cap=4, slo_s=0.1)


# --- simulated runs --------------------------------------------------------------------------

def run(policy, arrivals):
    return simulate_route(policy, arrivals, service_s)


def test_every_request_gets_exactly_one_outcome_and_runs_are_deterministic():
    arrivals = poisson_arrivals(300, 2.0, 40)
    a = run(ProteusPolicy(profiled_model(), 16), arrivals)
    b = run(ProteusPolicy(profiled_model(), 16), arrivals)
    assert sorted(o.id for o in a.outcomes) == [r.id for r in arrivals]
    assert [(o.id, o.finish_s) for o in a.outcomes] == [(o.id, o.finish_s) for o in b.outcomes]


def test_proteus_meets_every_deadline_under_light_load_and_batches():
    arrivals = poisson_arrivals(200, 3.0, 50)  # capacity is ~430 rps at batch 16, ~140 at batch 1
    res = run(ProteusPolicy(profiled_model(), 16), arrivals)
    assert res.miss_rate == 0.0
    assert res.mean_batch > 2


def test_proteus_misses_fewer_deadlines_than_baselines_above_capacity():
    arrivals = poisson_arrivals(600, 3.0, 50)  # above capacity, tight deadline
    proteus = run(ProteusPolicy(profiled_model(), 16), arrivals)
    none = run(NoBatchingPolicy(), arrivals)
    aimd = run(AimdPolicy(16, slo_s=0.050), arrivals)
    print(f"miss rate: proteus {proteus.miss_rate:.3f} (drops {proteus.drops}, mean batch {proteus.mean_batch:.1f}), "
          f"none {none.miss_rate:.3f}, aimd {aimd.miss_rate:.3f} (mean batch {aimd.mean_batch:.1f})")
    assert proteus.miss_rate < none.miss_rate
    assert proteus.miss_rate < aimd.miss_rate
    # what Proteus served, it served in time: its misses are its explicit drops
    assert all(o.met for o in proteus.outcomes if o.finish_s is not None)
    # it serves near capacity (~430 rps of 600), not a trickle
    assert proteus.miss_rate < 0.4


def test_passing_over_urgent_requests_keeps_batches_large_under_overload():
    arrivals = poisson_arrivals(600, 3.0, 50)
    strict = run(ProteusPolicy(profiled_model(), 16, pass_over=False), arrivals)
    passing = run(ProteusPolicy(profiled_model(), 16), arrivals)
    assert passing.mean_batch > 2 * strict.mean_batch
    assert passing.miss_rate < strict.miss_rate


def test_proteus_passes_over_the_most_urgent_request_when_a_bigger_batch_serves_more(req):
    p = ProteusPolicy(profiled_model(), batch_cap=4)
    # request 0 allows only a batch of 1 (7 ms); the other four allow a full batch of 4 (13 ms)
    queue = [req(0, 0.0, 0.008)] + [req(i, 0.0, 0.020) for i in range(1, 5)]
    assert p.decide(queue, now=0.0).send == (1, 2, 3, 4)
    assert ProteusPolicy(profiled_model(), 4, pass_over=False).decide(queue, now=0.0).send == (0,)


def test_proteus_plans_from_when_a_busy_device_frees(req):
    p = ProteusPolicy(profiled_model(), batch_cap=16)
    queue = [req(1, 0.0, 0.030), req(2, 0.0, 0.050)]
    d = p.decide(queue, now=0.0, start_s=0.025)  # starting at 25 ms, request 1 (7 ms alone) cannot make 30 ms
    assert d.drop == (1,)
    assert p.decide([req(2, 0.0, 0.045)], now=0.0, start_s=0.040).drop == (2,)  # 40 + 7 > 45
    idle = p.decide([req(2, 0.0, 0.045)], now=0.0)  # an idle device may hold it until 45 - 7
    assert idle.drop == () and idle.send == () and idle.wake_at == pytest.approx(0.038)
