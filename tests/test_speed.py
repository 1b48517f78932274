"""Observed speed (controlplane/speed.py): batches that ran alone on a device, against the profile,
become bounded, decayed factors the planner plans with; the reports that carry them are checked;
a simulated cluster slower than its profiles is re-planned at its real speed."""

from __future__ import annotations

import pytest

from orchestrator import scenarios
from orchestrator.controlplane.intake import BadTelemetry, TelemetryIntake, parse_batches
from orchestrator.controlplane.service import ControlPlaneConfig
from orchestrator.controlplane.speed import BOUNDS, HALF_LIFE_S, MIN_BATCHES, ObservedSpeed
from orchestrator.evaluation import scaled_profiles
from orchestrator.dataplane.latency import LatencyModel
from orchestrator.simulator import SimConfig, Simulator
from orchestrator.workloads import ConstantRate, FamilyLoad, generate

SC = scenarios.small_resnet(devices=2)
CLASS = "cpu-1t"


def p50_s(variant: str, size: int, instances: int = 1) -> float:
    records = [r for r in SC.profiles.for_pair(variant, CLASS) if r.instances == instances]
    return LatencyModel({r.batch_size: r.p50_ms for r in records}).seconds(size)


def speed() -> ObservedSpeed:
    return ObservedSpeed(SC.profiles, {"cpu0": CLASS, "cpu1": CLASS}.get)


def feed(s: ObservedSpeed, factor: float, batches: int, now: float, size: int = 2, variant: str = "resnet50",
         client: str = "c1", device: str = "cpu0") -> None:
    s.observe(client, device, variant, 1, 1, batches, {size: (batches, batches * factor * p50_s(variant, size))}, now)


def test_a_factor_needs_enough_batches_is_bounded_and_ignores_a_few_percent():
    s = speed()
    feed(s, 1.3, int(MIN_BATCHES) - 1, now=0.0)
    assert s.factor(CLASS, "resnet50") == 1.0  # too few batches back it
    feed(s, 1.3, 2, now=0.0)
    assert s.factor(CLASS, "resnet50") == pytest.approx(1.3)
    s2 = speed()
    feed(s2, 1.06, 100, now=0.0)
    assert s2.factor(CLASS, "resnet50") == 1.0  # within the dead band: a mean against a p50
    s3 = speed()
    feed(s3, 10.0, 100, now=0.0)
    assert s3.factor(CLASS, "resnet50") == BOUNDS[1]
    assert s3.factor(CLASS, "resnet18") == BOUNDS[1]  # never measured alone: its class's factor


def test_a_factor_follows_a_change_of_speed_within_a_few_half_lives():
    s = speed()
    for t in range(0, 120, 1):  # two minutes at 1.3x
        feed(s, 1.3, 2, now=float(t))
    assert s.factor(CLASS, "resnet50") == pytest.approx(1.3)
    noisy = speed()
    for t in range(0, 120, 1):
        feed(noisy, 1.0, 2, now=float(t))
    feed(noisy, 3.0, 5, now=120.0)  # one bad second among 240 batches moves nothing
    assert noisy.factor(CLASS, "resnet50") == 1.0
    t = 120.0
    while t < 120 + 3 * HALF_LIFE_S:  # back at full speed: the old figure decays
        feed(s, 1.0, 2, now=t)
        t += 1
    assert s.factor(CLASS, "resnet50") < 1.1


def test_a_device_two_clients_send_to_is_not_measured():
    s = speed()
    feed(s, 1.5, 50, now=0.0, client="gateway-a")
    feed(s, 1.5, 50, now=1.0, client="shim-b")  # another client's batches ran there too
    assert s.shared_skipped == 50
    assert s.factor(CLASS, "resnet50") == 1.5  # the first report, before the second client showed up
    fresh = speed()
    fresh.observe("a", "cpu0", "resnet50", 1, 1, 10, {}, 0.0)
    feed(fresh, 1.5, 50, now=1.0, client="b")
    assert fresh.factor(CLASS, "resnet50") == 1.0 and fresh.shared_skipped == 50
    feed(fresh, 1.5, 50, now=40.0, client="b")  # the other client has not sent there for 30 s
    assert fresh.factor(CLASS, "resnet50") == 1.5


def test_corrected_profiles_scale_the_measured_pairs_and_record_what_the_plan_used():
    s = speed()
    assert s.corrected() is SC.profiles and s.change() is None
    for size in (1, 2, 4):
        feed(s, 1.4, 30, now=0.0, size=size)
    change = s.change()
    assert change is not None and s.slower()
    assert "resnet50 on cpu-1t runs at 1.40x its profiled time (the plan used 1.00x)" in change
    assert "4 variant(s) not measured alone on cpu-1t are planned at its 1.40x" in change
    corrected = s.corrected()
    assert s.change() is None and not s.slower()  # the next plan uses it
    for r in SC.profiles.records:  # resnet50 measured; the class's other variants at its factor
        c = next(x for x in corrected.records if x.key == r.key)
        assert c.p50_ms == pytest.approx(1.4 * r.p50_ms) and c.throughput_rps == pytest.approx(r.throughput_rps / 1.4)
    other = ObservedSpeed(SC.profiles, {"cpu0": CLASS, "gpu0": "gpu"}.get)
    feed(other, 1.4, 30, now=0.0)
    assert other.corrected().for_pair("resnet50", "gpu") == SC.profiles.for_pair("resnet50", "gpu")  # other classes
    rows = s.rows({(CLASS, "resnet50"): (4, 20.0)})
    assert rows == [{"device_class": CLASS, "variant": "resnet50", "factor": 1.4, "planned_factor": 1.4,
                     "batches": 90.0, "batch_cap": 4, "profiled_capacity_rps": 20.0,
                     "observed_capacity_rps": pytest.approx(20.0 / 1.4, abs=0.01)}]


def test_each_profiled_batch_size_gets_its_own_factor_where_enough_batches_back_it():
    s = speed()
    feed(s, 1.2, 40, now=0.0, size=1)
    feed(s, 1.6, 40, now=0.0, size=8)
    assert s.factor(CLASS, "resnet50", 1) == pytest.approx(1.2)
    assert s.factor(CLASS, "resnet50", 8) == pytest.approx(1.6)
    assert s.factor(CLASS, "resnet50", 4) == pytest.approx(s.factor(CLASS, "resnet50"))  # none at 4: all sizes


def test_bad_batch_reports_are_refused_naming_the_field():
    families = {"resnet": {"resnet18", "resnet50"}}
    good = {"batches": [{"device_id": "cpu0", "variant": "resnet18", "instances": 1, "threads": 1, "sent": 3,
                         "alone": [[1, 2, 0.05]]}]}
    assert parse_batches(good, families) == good["batches"]
    for bad, field in ((["x"], "batches[0] must be an object"),
                       ([{"device_id": "", "variant": "resnet18"}], "batches[0].device_id"),
                       ([{"device_id": "cpu0", "variant": "vgg"}], "batches[0].variant 'vgg'"),
                       ([{"device_id": "cpu0", "variant": "resnet18", "instances": 0}], "batches[0].instances"),
                       ([{"device_id": "cpu0", "variant": "resnet18", "sent": -1}], "batches[0].sent"),
                       ([{"device_id": "cpu0", "variant": "resnet18", "alone": [[0, 1, 0.1]]}], "batches[0].alone[0]"),
                       ([{"device_id": "cpu0", "variant": "resnet18", "alone": [[1, 1, float("nan")]]}],
                        "batches[0].alone[0]"),
                       ([{"device_id": "cpu0", "variant": "resnet18", "alone": [[1, 1, 7200.0]]}],
                        "batches[0].alone[0]")):
        with pytest.raises(BadTelemetry, match=field.replace("[", r"\[").replace("]", r"\]")):
            parse_batches({"batches": bad}, families)
    intake = TelemetryIntake(families)
    seen = []
    intake.on_batches = lambda client, batches, now: seen.append((client, batches))
    intake.add({"client_id": "c", "seconds": [], **good}, 100.0)
    assert seen == [("c", good["batches"])]
    with pytest.raises(BadTelemetry):
        intake.add({"client_id": "c", "seconds": [], "batches": [{"device_id": "cpu0", "variant": "vgg"}]}, 100.0)
    assert len(seen) == 1  # all of a report or nothing


def slow_run(observed_speed: bool, slowdown: float = 1.3):
    """Two one-core CPU devices that take `slowdown` x their profiled time, 60 s of Poisson load at
    what ResNet-50 on both would serve on paper."""
    service = scaled_profiles(SC.profiles, {CLASS: slowdown})
    config = SimConfig(control=ControlPlaneConfig(dwell_s=10.0, observed_speed=observed_speed), seed=1)
    sim = Simulator(SC.catalog, SC.cluster, SC.profiles, {"resnet": 300.0}, config, service_profiles=service)
    cap50 = sum(r.throughput_rps for r in SC.profiles.for_pair("resnet50", CLASS)
                if r.batch_size == 1 and r.instances == 1)
    trace = generate([FamilyLoad("resnet", ConstantRate(1.6 * cap50), 300.0)], 60.0, seed=3)
    return sim.run(trace, "milp")


def test_a_simulated_cluster_slower_than_profiled_is_re_planned_at_its_speed():
    from orchestrator.evaluation import summarise

    informed, blind = slow_run(True), slow_run(False)
    reasons = [e.reason for e in informed.plans]
    assert any("speed changed" in r and "at its 1.30x" in r for r in reasons), reasons
    assert not any("speed changed" in e.reason for e in blind.plans)
    a, b = summarise(informed), summarise(blind)
    assert a.miss_ratio < b.miss_ratio and a.effective_accuracy >= b.effective_accuracy, (a, b)
