"""Workload generators and the trace file format.

Statistical checks use fixed seeds (so they are deterministic) and bounds of several standard
deviations (so they do not depend on a lucky seed).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator import cli
from orchestrator.errors import UserError
from orchestrator.trace import Trace, read_trace, write_trace
from orchestrator.workloads import (ConstantRate, DiurnalRate, FamilyLoad, MarkovModulatedRate, StepRate,
                                    family_rng, generate)


def dispersion(times: np.ndarray, duration_s: float, window_s: float = 1.0) -> float:
    """Variance / mean of arrivals per window (1 for a Poisson process)."""
    counts = np.bincount((times // window_s).astype(int), minlength=int(duration_s / window_s))
    return float(counts.var() / counts.mean())


# --- generators ------------------------------------------------------------------------------

def test_constant_rate_count_and_dispersion_match_poisson():
    duration = 2000.0
    t = ConstantRate(20.0).arrivals(duration, np.random.default_rng(1))
    expected = 20.0 * duration  # 40,000; one standard deviation is 200
    assert abs(len(t) - expected) < 6 * math.sqrt(expected)
    assert np.all(np.diff(t) >= 0) and t[0] >= 0 and t[-1] < duration
    assert 0.85 < dispersion(t, duration) < 1.15
    gaps = np.diff(t)
    assert abs(gaps.mean() - 1 / 20) < 0.002  # exponential gaps with mean 1/rate
    assert abs(gaps.std() / gaps.mean() - 1) < 0.05  # coefficient of variation 1


def test_step_rate_each_segment_has_its_level():
    pattern = StepRate(levels=(10.0, 60.0, 20.0), step_s=200.0)
    duration = 800.0  # the last level holds for two steps
    t = pattern.arrivals(duration, np.random.default_rng(2))
    for (lo, hi), rate in [((0, 200), 10), ((200, 400), 60), ((400, 800), 20)]:
        n = np.count_nonzero((t >= lo) & (t < hi))
        expected = rate * (hi - lo)
        assert abs(n - expected) < 6 * math.sqrt(expected), (lo, hi, n, expected)
    assert pattern.mean_rate(duration) == pytest.approx((10 * 200 + 60 * 200 + 20 * 400) / 800)
    assert list(pattern.rate_at(np.array([0.0, 199.9, 200.0, 799.0]))) == [10, 10, 60, 20]


def test_diurnal_rate_follows_the_sinusoid():
    pattern = DiurnalRate(low=5.0, high=45.0, period_s=400.0)
    duration = 1200.0
    t = pattern.arrivals(duration, np.random.default_rng(3))
    expected = pattern.mean_rate(duration) * duration
    assert pattern.mean_rate(duration) == pytest.approx(25.0)  # whole periods: the midpoint
    assert abs(len(t) - expected) < 6 * math.sqrt(expected)
    counts = np.bincount((t // 10).astype(int), minlength=120)  # 10 s windows
    centres = np.arange(120) * 10 + 5.0
    assert np.corrcoef(counts, pattern.rate_at(centres))[0, 1] > 0.95
    trough = np.count_nonzero(t < 20)  # first 20 s: rate near 5
    peak = np.count_nonzero((t >= 190) & (t < 210))  # around 200 s: rate near 45
    assert peak > 4 * trough


def test_mmpp_is_bursty_and_has_its_stationary_mean():
    pattern = MarkovModulatedRate(rates=(10.0, 50.0), mean_dwell_s=(20.0, 5.0))
    assert pattern.stationary() == pytest.approx([0.8, 0.2])
    assert pattern.mean_rate() == pytest.approx(18.0)
    duration = 5000.0
    t = pattern.arrivals(duration, np.random.default_rng(4))
    # the rate itself is random: ~200 sojourns pairs, so allow 15 % around the long-run mean
    assert abs(len(t) / duration - 18.0) < 0.15 * 18.0
    poisson = ConstantRate(18.0).arrivals(duration, np.random.default_rng(4))
    assert dispersion(poisson, duration) < 1.15
    assert dispersion(t, duration) > 3.0  # bursts: far more variable than Poisson at the same mean


def test_mmpp_state_path_matches_dwell_times_and_switching():
    pattern = MarkovModulatedRate(rates=(5.0, 20.0, 80.0), mean_dwell_s=(10.0, 4.0, 2.0),
                                  switch=((0, 0.75, 0.25), (1.0, 0, 0), (0.5, 0.5, 0)))
    starts, ends, states = pattern.state_path(20000.0, np.random.default_rng(5))
    assert starts[0] == 0 and ends[-1] == 20000.0 and np.all(starts[1:] == ends[:-1])
    assert np.all(states[1:] != states[:-1])  # a sojourn ends by switching state
    share = np.array([np.sum((ends - starts)[states == s]) for s in range(3)]) / 20000.0
    assert share == pytest.approx(pattern.stationary(), abs=0.03)
    dwell_0 = (ends - starts)[:-1][states[:-1] == 0]
    assert dwell_0.mean() == pytest.approx(10.0, rel=0.1)
    after_0 = states[1:][states[:-1] == 0]
    assert np.mean(after_0 == 1) == pytest.approx(0.75, abs=0.05)


def test_generation_is_reproducible_and_families_are_independent():
    resnet = FamilyLoad("resnet", MarkovModulatedRate((10.0, 40.0), (10.0, 3.0)), deadline_ms=300)
    bert = FamilyLoad("bert", ConstantRate(5.0), deadline_ms=100)
    a = generate([resnet], 120, seed=7)
    b = generate([resnet], 120, seed=7)
    c = generate([resnet], 120, seed=8)
    both = generate([resnet, bert], 120, seed=7)
    assert np.array_equal(a.time_s, b.time_s)
    assert not np.array_equal(a.time_s[:50], c.time_s[:50])
    assert np.array_equal(both.for_family("resnet").time_s, a.time_s)  # adding bert changed nothing
    assert set(both.deadline_ms[both.family == "bert"]) == {100.0}
    assert np.all(np.diff(both.time_s) >= 0)
    assert len(both) == len(a) + len(both.for_family("bert"))


@pytest.mark.parametrize("make, field", [
    (lambda: ConstantRate(-1.0), "rate"),
    (lambda: StepRate(levels=(1.0, float("nan")), step_s=1.0), "levels[1]"),
    (lambda: StepRate(levels=(1.0,), step_s=0.0), "step_s"),
    (lambda: DiurnalRate(low=10.0, high=5.0, period_s=60.0), "high"),
    (lambda: MarkovModulatedRate(rates=(1.0, 2.0), mean_dwell_s=(1.0,)), "mean_dwell_s"),
    (lambda: MarkovModulatedRate(rates=(1.0, 2.0, 3.0), mean_dwell_s=(1.0, 1.0, 1.0),
                                 switch=((0, 0.5, 0.4), (1, 0, 0), (1, 0, 0))), "switch"),
    (lambda: FamilyLoad("res,net", ConstantRate(1.0), 300), "family"),
    (lambda: FamilyLoad("resnet", ConstantRate(1.0), -5), "deadline_ms"),
    (lambda: generate([FamilyLoad("a", ConstantRate(1.0), 1), FamilyLoad("a", ConstantRate(2.0), 1)], 10), "'a'"),
])
def test_bad_generator_configs_name_the_field(make, field):
    with pytest.raises(UserError, match=None) as e:
        make()
    assert field in str(e.value)


def test_family_rng_depends_on_seed_and_name_only():
    assert family_rng(1, "resnet").random() == family_rng(1, "resnet").random()
    assert family_rng(1, "resnet").random() != family_rng(1, "bert").random()


# --- trace files ------------------------------------------------------------------------------

def test_csv_round_trip(tmp_path):
    trace = generate([FamilyLoad("resnet", StepRate((20.0, 60.0), 10.0), 300),
                      FamilyLoad("bert", DiurnalRate(2.0, 10.0, 20.0), 87.5)], 20, seed=3)
    path = tmp_path / "trace.csv"
    write_trace(path, trace)
    assert path.read_text().splitlines()[0] == "time_s,family,deadline_ms"
    back = read_trace(path, known_families={"resnet", "bert"})
    assert len(back) == len(trace) > 0
    assert np.allclose(back.time_s, trace.time_s, atol=1e-6, rtol=0)
    assert list(back.family) == list(trace.family)
    assert np.array_equal(back.deadline_ms, trace.deadline_ms)
    again = tmp_path / "again.csv"
    write_trace(again, back)
    assert again.read_bytes() == path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.csv", "trace.csv"]  # no temp files left


def test_extra_columns_any_order_and_blank_lines_are_fine(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("request_id,deadline_ms,family,time_s,note\n"
                    "a,300,resnet,0.5,x\n\n"
                    "b,150,bert,0.5,\"with, comma\"\n"
                    "c,300,resnet,2.25,\n")
    t = read_trace(path)
    assert list(t.time_s) == [0.5, 0.5, 2.25]
    assert list(t.family) == ["resnet", "bert", "resnet"]
    assert list(t.deadline_ms) == [300, 150, 300]


def test_header_only_is_an_empty_trace(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("time_s,family,deadline_ms\n")
    assert len(read_trace(path)) == 0


GOOD = "time_s,family,deadline_ms\n0.1,resnet,300\n0.2,resnet,300\n"


@pytest.mark.parametrize("text, line, words", [
    ("time_s,family\n0.1,resnet\n", 1, "missing column(s) deadline_ms"),
    ("time,family,deadline_ms\n0.1,resnet,300\n", 1, "missing column(s) time_s"),
    (GOOD + "abc,resnet,300\n", 4, "time_s is not a number: 'abc'"),
    (GOOD + "0.3,resnet,soon\n", 4, "deadline_ms is not a number"),
    (GOOD + "0.3,resnet,nan\n", 4, "not a finite number"),
    (GOOD + "0.3,resnet,-5\n", 4, "deadline_ms must be positive"),
    (GOOD + "0.3,resnet,0\n", 4, "deadline_ms must be positive"),
    (GOOD + "-0.3,resnet,300\n", 4, "time_s must not be negative"),
    (GOOD + "0.15,resnet,300\n", 4, "earlier than 0.2 on line 3"),
    (GOOD + "\n0.3,vgg,300\n", 5, "unknown family 'vgg' (known: bert, resnet)"),
    (GOOD + "0.3,,300\n", 4, "family is empty"),
    (GOOD + "0.3,resnet\n", 4, "expected 3 fields"),
])
def test_bad_trace_names_file_and_line(tmp_path, text, line, words):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(UserError) as e:
        read_trace(path, known_families={"resnet", "bert"})
    msg = str(e.value)
    assert msg.startswith(f"{path}:{line}: "), msg
    assert words in msg
    assert "\n" not in msg


def test_unreadable_trace_files(tmp_path):
    with pytest.raises(UserError, match="trace file not found"):
        read_trace(tmp_path / "nope.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(UserError, match="empty file"):
        read_trace(empty)
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"time_s,family,deadline_ms\n\xff\xfe,\x00\n")
    with pytest.raises(UserError, match="not a UTF-8"):
        read_trace(binary)


def test_write_refuses_unsorted_trace_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(GOOD)
    bad = Trace(np.array([1.0, 0.5]), np.array(["a", "a"], dtype=object), np.array([1.0, 1.0]))
    with pytest.raises(ValueError):
        write_trace(path, bad)
    assert path.read_text() == GOOD


def test_window_counts_and_merge():
    a = Trace(np.array([0.1, 0.2, 1.5]), np.array(["a"] * 3, dtype=object), np.full(3, 100.0))
    b = Trace(np.array([0.15, 2.0]), np.array(["b"] * 2, dtype=object), np.full(2, 50.0))
    m = Trace.merge(a, b)
    assert list(m.time_s) == [0.1, 0.15, 0.2, 1.5, 2.0]
    assert list(m.family) == ["a", "b", "a", "a", "b"]
    assert list(m.window_counts(1.0)) == [3, 2]  # the last arrival (at 2.0) closes the last window
    assert list(m.window_counts(1.0, duration_s=4.0)) == [3, 1, 1, 0]


# --- the command ----------------------------------------------------------------------------

@pytest.fixture
def run_cli(monkeypatch):
    """`orchestrator ...` through the real entry point, with only the trace command registered."""
    monkeypatch.setattr(cli, "COMMANDS", ["trace"])
    return cli.main


def test_cli_generate_is_reproducible_and_show_summarises(tmp_path, run_cli, capsys):
    out1, out2 = tmp_path / "a.csv", tmp_path / "b.csv"
    args = ["trace", "generate", "--kind", "bursty", "--rate", "20", "--duration", "60", "--family", "resnet",
            "--deadline-ms", "300", "--seed", "1"]
    assert run_cli(args + ["--out", str(out1)]) == 0
    assert run_cli(args + ["--out", str(out2)]) == 0
    assert out1.read_bytes() == out2.read_bytes()
    trace = read_trace(out1)
    assert trace.families() == ["resnet"] and set(trace.deadline_ms) == {300.0}
    assert 0 < trace.duration_s <= 60
    capsys.readouterr()
    assert run_cli(["trace", "show", str(out1)]) == 0
    text = capsys.readouterr().out
    assert f"{len(trace)} requests over" in text
    peak = int(trace.window_counts(1.0).max())
    row = next(line for line in text.splitlines() if line.startswith("resnet "))
    assert f"{peak:.1f}" in row.split()
    spark = next(line for line in text.splitlines() if line.startswith("resnet") and "|" in line)
    assert "@" in spark  # the peak window reaches the top of the ramp


@pytest.mark.parametrize("kind", ["constant", "step", "diurnal"])
def test_cli_generate_kinds(tmp_path, run_cli, kind):
    out = tmp_path / "t.csv"
    assert run_cli(["trace", "generate", "--kind", kind, "--rate", "10", "--duration", "300", "--family", "f",
                    "--out", str(out)]) == 0
    t = read_trace(out)
    mean = {"constant": 10, "step": 10 * 5 / 3, "diurnal": 20}[kind]  # peak factor 3
    assert abs(len(t) - mean * 300) < 6 * math.sqrt(mean * 300)


def test_cli_merge_and_bad_input(tmp_path, run_cli, capsys):
    a, b, m = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "m.csv"
    run_cli(["trace", "generate", "--rate", "5", "--duration", "30", "--family", "resnet", "--out", str(a)])
    run_cli(["trace", "generate", "--rate", "5", "--duration", "30", "--family", "bert", "--out", str(b)])
    assert run_cli(["trace", "merge", str(a), str(b), "--out", str(m)]) == 0
    assert read_trace(m).families() == ["bert", "resnet"]
    capsys.readouterr()
    assert run_cli(["trace", "show", str(m), "--families", "resnet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {m}:") and "unknown family 'bert'" in err and "\n" not in err
    assert run_cli(["trace", "generate", "--rate", "0", "--duration", "30", "--family", "x",
                    "--out", str(tmp_path / "x.csv")]) == 2
    assert "argument --rate: must be positive, not 0" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_family_index_and_the_initial_demand_count_each_family_s_requests():
    from orchestrator.controlplane.planning import initial_demand
    trace = generate([FamilyLoad("vit", ConstantRate(30.0), 100.0), FamilyLoad("resnet", ConstantRate(10.0), 300.0),
                      FamilyLoad("bert", ConstantRate(5.0), 200.0)], 20.0, seed=3)
    families, index = trace.family_index()
    assert families == ["bert", "resnet", "vit"] == trace.families()
    assert [families[i] for i in index.tolist()] == trace.family.tolist()
    demand = initial_demand(trace, window_s=5.0)
    for f in families:
        assert demand[f] == np.sum((trace.family == f) & (trace.time_s < 5.0)) / 5.0
    assert 20 < demand["vit"] < 40 and demand["bert"] < demand["resnet"] < demand["vit"]
