"""Metrics over per-request outcomes (orchestrator/evaluation.py): hand-made runs with known answers."""

import math

import numpy as np
import pytest

from orchestrator.evaluation import (Outcomes, PlanEvent, Run, ServedBatch, csv_table, markdown_table,
                                     scaled_profiles, summarise, worst_window_accuracy)
from orchestrator.profiles import ProfileRecord, ProfileSet


def outcomes(rows):
    """rows: (arrival_s, status, latency_ms, variant, accuracy)."""
    return Outcomes.from_rows([{"arrival_s": a, "family": "resnet", "deadline_ms": 100.0, "status": s,
                                "latency_ms": lat, "variant": v, "device": "cpu0" if v else "", "accuracy": acc}
                               for a, s, lat, v, acc in rows])


def test_effective_accuracy_counts_every_request_and_only_met_deadlines():
    o = outcomes([(0.1, "ok", 50.0, "resnet50", 76.0), (0.2, "ok", 60.0, "resnet18", 70.0),
                  (0.3, "late", 150.0, "resnet50", 76.0), (0.4, "dropped", 1.0, "resnet50", 0.0),
                  (0.5, "unserved", 0.0, "", 0.0)])
    s = summarise(Run("x", o, duration_s=1.0))
    assert s.effective_accuracy == pytest.approx((76.0 + 70.0) / 5)
    assert s.miss_ratio == pytest.approx(3 / 5)
    assert s.served_rps == pytest.approx(3.0)  # ok + late
    assert s.goodput_rps == pytest.approx(2.0)
    assert s.drop_ratio == pytest.approx(1 / 5)
    assert s.error_ratio == pytest.approx(1 / 5)
    assert s.served_accuracy == pytest.approx((76 + 70 + 76) / 3)
    assert s.p50_ms == pytest.approx(60.0)  # percentiles over answered requests only


def test_worst_window_finds_the_bad_ten_seconds():
    rows = []
    for sec in range(60):
        good = not 30 <= sec < 40
        rows.append((sec + 0.5, "ok" if good else "dropped", 10.0, "resnet50", 76.0 if good else 0.0))
    o = outcomes(rows)
    assert worst_window_accuracy(o, 10.0, 60.0) == pytest.approx(0.0)
    assert summarise(Run("x", o, duration_s=60.0)).effective_accuracy == pytest.approx(76.0 * 50 / 60)
    # a run shorter than the window: the whole run's figure
    short = outcomes([(0.5, "ok", 10.0, "resnet50", 76.0), (1.5, "late", 200.0, "resnet50", 76.0)])
    assert worst_window_accuracy(short, 10.0, 2.0) == pytest.approx(38.0)


def test_switches_count_loads_after_the_initial_plan():
    o = outcomes([(0.1, "ok", 10.0, "resnet50", 76.0)])
    plans = [PlanEvent(0.0, 1, 2, 0, {"resnet": 5.0}, {}), PlanEvent(12.0, 2, 1, 1, {"resnet": 20.0}, {}),
             PlanEvent(30.0, 3, 0, 0, {"resnet": 19.0}, {})]
    s = summarise(Run("x", o, plans, 40.0))
    assert (s.switches, s.plan_changes) == (1, 2)


def test_outcomes_round_trip_through_files(tmp_path):
    o = outcomes([(0.25, "ok", 12.5, "resnet18", 69.758), (0.5, "error", math.nan, "", 0.0)])
    run = Run("milp", o, [PlanEvent(0.0, 1, 1, 0, {"resnet": 3.0}, {"resnet": [("cpu0", "resnet18", 1.0)]})], 1.0)
    run.save(tmp_path)
    back = Run.load(tmp_path, "milp")
    assert back.outcomes.status.tolist() == ["ok", "error"]
    assert back.outcomes.latency_ms[0] == pytest.approx(12.5) and math.isnan(back.outcomes.latency_ms[1])
    assert back.plans[0].routes == {"resnet": [("cpu0", "resnet18", 1.0)]}
    assert summarise(back) == summarise(run)


def test_observed_profiles_summarise_the_batches_per_variant_and_size(tmp_path):
    batches = [ServedBatch("cpu0", "resnet50", 1, float(ms)) for ms in range(1, 101)]  # 1..100 ms
    batches += [ServedBatch("cpu1", "resnet50", 2, 80.0), ServedBatch("cpu1", "resnet18", 1, 20.0)]
    run = Run("milp", outcomes([(0.1, "ok", 10.0, "resnet50", 76.13)]), [], 1.0, batches=batches)
    profiles = run.observed_profiles({"cpu0": "cpu-1t", "cpu1": "cpu-1t"})
    recs = {(r.variant, r.batch_size): r for r in profiles.records}
    assert set(recs) == {("resnet50", 1), ("resnet50", 2), ("resnet18", 1)}
    one = recs[("resnet50", 1)]
    assert (one.p50_ms, one.p95_ms, one.p99_ms, one.samples) == (50.0, 95.0, 99.0, 100)
    assert one.source == "observed" and one.device_class == "cpu-1t"
    assert recs[("resnet50", 2)].throughput_rps == pytest.approx(25.0)  # 2 images in 80 ms
    run.save(tmp_path)
    assert Run.load(tmp_path, "milp").batches == batches  # (sent_s not known: empty in the file)
    timed = [ServedBatch("cpu0", "resnet50", 1, 40.0, sent_s=0.125)]
    Run("milp", run.outcomes, [], 1.0, batches=timed).save(tmp_path)
    assert Run.load(tmp_path, "milp").batches == timed


def test_speed_timeline_is_the_slowdown_per_device_and_window():
    """Per device, the median ratio to the profiled p50 of the batches sent in each window; a
    window with none keeps the one before's factor, and those before the first batch take the
    device's median over the run; batches that overlapped on their device (each slowed the
    other) and those whose send time is unknown are left out."""
    profiles = ProfileSet([ProfileRecord(variant="resnet50", device_class="cpu-1t", batch_size=1, instances=1,
                                         threads=1, p50_ms=40.0, p95_ms=44.0, p99_ms=48.0, throughput_rps=25.0,
                                         samples=30)])
    b = lambda device, ms, t: ServedBatch(device, "resnet50", 1, ms, sent_s=t)  # noqa: E731
    batches = [b("cpu0", 40.0, 0.5), b("cpu0", 44.0, 1.5), b("cpu0", 120.0, 4.2), b("cpu0", 400.0, 4.4),
               b("cpu0", 80.0, 5.0), b("cpu0", 300.0, 6.0), b("cpu0", 300.0, 6.2),  # these two overlap
               b("cpu0", 999.0, 8.5), ServedBatch("cpu0", "resnet50", 1, 999.0), b("cpu1", 60.0, 5.5)]
    run = Run("milp", outcomes([]), [], 9.0, batches=batches)
    timeline = run.speed_timeline(profiles, {"cpu0": "cpu-1t", "cpu1": "cpu-1t", "cpu2": "cpu-1t"}, window_s=2.0)
    assert timeline.window_s == 2.0
    assert timeline.factors["cpu0"] == pytest.approx([1.05, 1.05, 3.0, 3.0, 999 / 40])
    assert timeline.factors["cpu1"] == pytest.approx([1.5] * 5)
    assert timeline.factors["cpu2"] == [1.0] * 5


def test_the_speed_note_gives_each_variant_s_median_and_the_slowest_window_backed_by_enough_batches():
    """What the live bench adds to each policy's notes: policies run one after the other on a
    shared machine meet different conditions. Lone batches only; a window needs five of them."""
    profiles = ProfileSet([ProfileRecord(variant=v, device_class="cpu-1t", batch_size=1, instances=1, threads=1,
                                         p50_ms=ms, p95_ms=ms, p99_ms=ms, throughput_rps=1000 / ms, samples=30)
                           for v, ms in (("resnet50", 100.0), ("resnet18", 50.0))])
    b = lambda device, ms, t, v="resnet50": ServedBatch(device, v, 1, ms, sent_s=t)  # noqa: E731
    batches = ([b("cpu0", 100.0, 0.5 + i) for i in range(6)]  # 0-10 s: as profiled
               + [b("cpu0", 150.0, 10.5 + i) for i in range(8)]  # 10-20 s: 1.5x
               + [b("cpu0", 900.0, 25.0 + 0.3 * i) for i in range(4)]  # 20-30 s: these overlap: left out
               + [b("cpu1", 55.0, 0.5 + i, "resnet18") for i in range(9)]  # 1.1x
               + [b("cpu1", 500.0, 12.0, "resnet18"), b("cpu1", 500.0, 22.0, "resnet18")])  # 10x, two only
    classes = {"cpu0": "cpu-1t", "cpu1": "cpu-1t"}
    note = Run("milp", outcomes([]), [], 30.0, batches=batches).speed_note(profiles, classes)
    assert note == ("batches that ran alone took resnet18 1.10x, resnet50 1.50x their profiled time (median); "
                    "slowest 10-s window: cpu0 1.50x at 10-20 s")
    assert Run("milp", outcomes([]), [], 30.0).speed_note(profiles, classes) is None  # nothing to compare


def test_tables_have_one_row_per_run():
    o = outcomes([(0.1, "ok", 10.0, "resnet50", 76.0)])
    runs = [summarise(Run(p, o, duration_s=1.0)) for p in ("milp", "clipper-ha")]
    md = markdown_table(runs)
    assert md.count("\n") == 4 and "| milp |" in md and "| clipper-ha |" in md
    assert csv_table(runs).splitlines()[0].startswith("policy,requests")


def test_unsorted_rows_are_ordered_by_arrival():
    o = outcomes([(2.0, "ok", 1.0, "a", 1.0), (1.0, "late", 1.0, "b", 2.0)])
    assert o.arrival_s.tolist() == [1.0, 2.0] and o.variant.tolist() == ["b", "a"]
    assert np.array_equal(o.met, [False, True])


def test_slowdown_is_the_median_ratio_to_the_profiled_p50_per_class_and_scales_the_profiles():
    profiles = ProfileSet([
        ProfileRecord(variant="resnet50", device_class="cpu-1t", batch_size=b, instances=1, threads=1,
                      p50_ms=40.0 * b, p95_ms=44.0 * b, p99_ms=48.0 * b, throughput_rps=25.0, samples=30)
        for b in (1, 2)])
    # four batches 1.5x slower than profiled, one held up 10x by the shim: the median ignores it;
    # a batch size nobody profiled is not compared
    batches = [ServedBatch("cpu0", "resnet50", 1, 60.0), ServedBatch("cpu1", "resnet50", 2, 120.0),
               ServedBatch("cpu0", "resnet50", 1, 60.0), ServedBatch("cpu1", "resnet50", 2, 120.0),
               ServedBatch("cpu0", "resnet50", 1, 400.0), ServedBatch("cpu0", "resnet50", 8, 5000.0)]
    run = Run("milp", outcomes([]), batches=batches)
    classes = {"cpu0": "cpu-1t", "cpu1": "cpu-1t", "gpu0": "gpu-x"}
    slowdown = run.slowdown(profiles, classes)
    assert slowdown == {"cpu-1t": pytest.approx(1.5), "gpu-x": 1.0}
    scaled = {r.batch_size: r for r in scaled_profiles(profiles, slowdown).records}
    assert scaled[2].p50_ms == pytest.approx(120.0) and scaled[2].p99_ms == pytest.approx(144.0)
    assert scaled[1].throughput_rps == pytest.approx(25.0 / 1.5)
    assert {r.p50_ms for r in profiles.records} == {40.0, 80.0}  # the input is left as it was
