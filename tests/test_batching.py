"""Pure batching-policy tests: no Triton, simulated service times (tests/route_loop.py)."""

import bisect
import random

import pytest

from orchestrator.dataplane.batching import AimdPolicy, NoBatchingPolicy, ProteusPolicy, make_policy
from orchestrator.dataplane.latency import LatencyModel
from orchestrator.dataplane.queue import EPS_S, WAKE_PAST_S, RouteQueue
from tests.route_loop import SimRequest, simulate_route
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


def test_seconds_are_the_model_in_seconds_in_any_order_and_follow_what_it_learns():
    m = LatencyModel({1: 10.0, 4: 40.0, 8: 60.0})
    for b in (16, 3, 1, 8, 3, 0, 16):  # the cache grows on a large size first, then is read
        assert m.seconds(b) == pytest.approx(m.ms(b) / 1000.0)
    learned = LatencyModel.learned()
    learned.observe(2, 20.0)
    assert learned.seconds(2) == pytest.approx(0.020)
    learned.observe(2, 70.0)  # new points: the cached seconds are not kept
    assert learned.seconds(2) == pytest.approx(learned.ms(2) / 1000.0) and learned.seconds(2) > 0.020


# --- Proteus decisions -----------------------------------------------------------------------

def test_proteus_holds_a_lone_request_until_its_deadline_forces_a_send(req):
    p = ProteusPolicy(profiled_model(), batch_cap=16, slack_s=0.001, hold_factor=1.0)  # the paper's hold
    r = req(1, 0.0, 0.100)
    d = p.decide([r], now=0.0)
    assert d.send == () and d.drop == ()
    assert d.wake_at == pytest.approx(0.100 - 0.007 - 0.001)
    assert p.decide([r], now=d.wake_at).send == (1,)


def test_proteus_default_hold_leaves_room_for_a_slower_batch(req):
    p = ProteusPolicy(profiled_model(), batch_cap=16, slack_s=0.001)
    assert p.hold_factor == 2.0
    r = req(1, 0.0, 0.100)
    d = p.decide([r], now=0.0)
    assert d.send == () and d.wake_at == pytest.approx(0.100 - 2 * (0.007 + 0.001))
    assert p.decide([r], now=d.wake_at).send == (1,)
    # a deadline that leaves less than twice the latency but more than once: sent at once, not dropped
    tight = req(2, 0.0, 0.012)
    assert p.decide([tight], now=0.0).send == (2,)
    with pytest.raises(ValueError, match="hold_factor"):
        ProteusPolicy(profiled_model(), batch_cap=4, hold_factor=0.5)


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
    idle = p.decide([req(2, 0.0, 0.045)], now=0.0)  # an idle device may hold it until 45 - 2 x 7
    assert idle.drop == () and idle.send == () and idle.wake_at == pytest.approx(0.031)


# --- the route queue and the incremental decision --------------------------------------------

def test_route_queue_keeps_arrival_order_and_deadline_order(req):
    q = RouteQueue()
    for r in [req(1, 0.0, 0.5), req(2, 0.1, 0.2), req(3, 0.2), req(4, 0.3, 0.2), req(5, 0.4, 0.9)]:
        q.add(r)
    assert [r.id for r in q] == [1, 2, 3, 4, 5]  # iteration: arrival (insertion) order, as a dict
    assert [r.id for r in q.by_deadline] == [2, 4, 1, 5]  # by (deadline, arrival); no-deadline kept apart
    assert list(q.no_deadline) == [3]
    assert q.pop(4).id == 4 and q.pop(3).id == 3 and 4 not in q and len(q) == 3
    assert [r.id for r in q.by_deadline] == [2, 1, 5]
    with pytest.raises(ValueError, match="already queued"):
        q.add(req(1, 0.0, 0.1))
    q.clear()
    assert len(q) == 0 and not q.by_deadline and not q.no_deadline


def test_route_queue_take_removes_a_batch_at_the_front_or_anywhere_and_keeps_the_orders(req):
    def queue():
        q = RouteQueue()
        for r in [req(1, 0.0, 0.5), req(2, 0.1, 0.2), req(3, 0.2), req(4, 0.3, 0.2), req(5, 0.4, 0.9)]:
            q.put(r, r.id, r.arrival_s, r.deadline_s)
        return q

    q = queue()
    assert q.deadline_ids == [2, 4, 1, 5] and q.seq(0) == 2  # put: add with the fields passed in
    assert [r.id for r in q.take((2, 4))] == [2, 4]  # the front of the deadline order: one slice deletion
    assert q.deadline_ids == [1, 5] and [r.id for r in q.by_deadline] == [1, 5] and len(q.deadline_keys) == 2
    assert [r.id for r in q] == [1, 3, 5] and 2 not in q
    q = queue()
    assert [r.id for r in q.take((4, 3, 2))] == [4, 3, 2]  # not the front: one by one, no-deadline ones too
    assert q.deadline_ids == [1, 5] and list(q.no_deadline) == [] and [r.id for r in q] == [1, 5]
    q = queue()
    with pytest.raises(KeyError):
        q.take((2, 9))  # not queued: nothing is removed
    assert q.deadline_ids == [2, 4, 1, 5] and len(q) == 5


def reference_proteus_decide(p: ProteusPolicy, queue, now, can_send=True, start_s=None):
    """The decision as first written (partition the queue, sort the feasible requests by
    deadline on every call): the oracle the incremental `ProteusPolicy.decide` must equal."""
    def cost(b):
        return p.model.seconds(b) + p.slack_s
    cost1 = cost(1)
    t0 = now if start_s is None else max(now, start_s)
    drop, late, feasible, no_deadline, wake = [], [], [], [], None
    for r in queue:
        if r.deadline_s is None:
            no_deadline.append(r)
        elif t0 + cost1 > r.deadline_s + EPS_S:
            (late.append(r) if r.serve_late else drop.append(r.id))
        else:
            feasible.append(r)
            h = r.deadline_s - cost1 + WAKE_PAST_S
            wake = h if wake is None else min(wake, h)
    if not can_send:
        return (), tuple(drop), wake
    cap = p.batch_cap
    feasible.sort(key=lambda r: (r.deadline_s, r.arrival_s))
    if late:
        late.sort(key=lambda r: r.arrival_s)
        batch = [r.id for r in late[:cap]]
        if feasible and len(batch) < cap:
            extra = 0
            while len(batch) + extra < cap and extra < len(feasible) and \
                    t0 + cost(len(batch) + extra + 1) <= feasible[0].deadline_s + EPS_S:
                extra += 1
            batch += [r.id for r in feasible[:extra]]
        return tuple(batch), tuple(drop), wake
    if not feasible:
        return tuple(r.id for r in no_deadline[:cap]), tuple(drop), None
    if not p.model.known:
        return tuple(r.id for r in (feasible + no_deadline)[:cap]), tuple(drop), None
    d0 = feasible[0].deadline_s
    deadlines = [r.deadline_s for r in feasible]
    n = min(cap, len(feasible))
    best, start = 1, 0
    if not p.pass_over:
        while best < n and t0 + cost(best + 1) <= d0 + EPS_S:
            best += 1
    else:
        for b in range(n, 0, -1):
            start = bisect.bisect_left(deadlines, t0 + cost(b) - EPS_S)
            if len(feasible) - start >= b:
                best = b
                break
        else:
            start = 0
    if best < len(feasible) or best == cap:
        return tuple(r.id for r in feasible[start:start + best]), tuple(drop), None
    if no_deadline:
        fill = best
        while fill < cap and fill - best < len(no_deadline) and t0 + cost(fill + 1) <= d0 + EPS_S:
            fill += 1
        return tuple([r.id for r in feasible] + [r.id for r in no_deadline[:fill - best]]), tuple(drop), None
    send_by = d0 - cost(best) * p.hold_factor
    if p.max_hold_s is not None:
        send_by = min(send_by, min(r.arrival_s for r in feasible) + p.max_hold_s)
    if now + EPS_S >= send_by:
        return tuple(r.id for r in feasible), tuple(drop), None
    return (), tuple(drop), send_by if wake is None else min(wake, send_by)


@pytest.mark.parametrize("seed", range(4))
def test_incremental_decisions_equal_the_sort_per_call_reference(seed):
    """A queue kept across arrivals and removals (out-of-order deadlines, ties, no-deadline and
    serve-late requests, learning and unknown models, pass-over on and off, held and bounded):
    every decision equals the reference's on the same requests."""
    rng = random.Random(seed)
    checked = 0
    for _ in range(150):
        points = {b: rng.choice([3.0, 5.0, 8.0]) + rng.uniform(0.5, 3.0) * b
                  for b in rng.sample([1, 2, 4, 8, 16], rng.randint(0, 4))}
        model = LatencyModel(points, learn=rng.random() < 0.3)
        p = ProteusPolicy(model, rng.randint(1, 12), slack_s=rng.choice([0.0, 0.002]),
                          pass_over=rng.random() < 0.8, max_hold_s=rng.choice([None, None, 0.01]))
        q, now, rid = RouteQueue(), 0.0, 0
        grid = rng.random() < 0.5  # coarse times: many equal deadlines and arrivals
        for _ in range(60):
            now += rng.choice([0.0, 0.001, rng.uniform(0, 0.004)])
            for _ in range(rng.choice([0, 1, 1, 2, 5])):
                slo = rng.choice([0.01, 0.02, 0.05, rng.uniform(0.0, 0.08)])
                deadline = None if rng.random() < 0.08 else (round(now + slo, 2) if grid else now + slo)
                q.add(SimRequest(rid, now, deadline, serve_late=rng.random() < 0.05))
                rid += 1
            can_send = rng.random() < 0.7
            start_s = rng.choice([None, now + rng.uniform(-0.005, 0.02)])
            d = p.decide(q, now, can_send, start_s=start_s)
            assert (d.send, d.drop, d.wake_at) == reference_proteus_decide(p, list(q), now, can_send, start_s)
            checked += 1
            for i in d.drop + d.send:
                q.pop(i)
            if d.send and model.learn:
                p.observe(len(d.send), rng.uniform(0.002, 0.03))
            if q and rng.random() < 0.1:  # a request leaves by another way (e.g. its route retires)
                q.pop(rng.choice([r.id for r in q]))
    assert checked == 150 * 60
