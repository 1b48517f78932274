"""The bench's and simulate command's pure parts: result mapping, flags, errors (no Triton)."""

import numpy as np
import pytest

from orchestrator import scenarios
from orchestrator.bench import outcome_row
from orchestrator.controlplane.planning import initial_demand
from orchestrator.cli import main
from orchestrator.dataplane.status import Status
from orchestrator.shim.client import Result
from orchestrator.trace import Trace, write_trace

CATALOG = scenarios.small_resnet().catalog


def result(status, outputs=True, error=""):
    return Result(status, {"logits": np.zeros(3)} if outputs else None, "resnet50", "cpu0", 42.0, error)


@pytest.mark.parametrize("res, expected", [
    (result(Status.OK), "ok"),
    (result(Status.LATE), "late"),
    (result(Status.DROPPED, outputs=False, error="dropped: 3.0 ms left"), "dropped"),
    (result(Status.UNSERVED, outputs=False, error="family 'resnet' has no route in plan version 2"), "unserved"),
    (result(Status.ERROR, outputs=False, error="cpu0: unreachable"), "error"),
    (None, "error"),
])
def test_shim_results_map_to_outcome_statuses(res, expected):
    row = outcome_row(res, 1.5, "resnet", 300.0, CATALOG)
    assert row["status"] == expected
    assert row["accuracy"] == (CATALOG.variants["resnet50"].accuracy if expected in ("ok", "late") else 0.0)


def test_initial_demand_is_the_rate_of_the_first_seconds():
    trace = Trace(np.array([0.5, 1.0, 2.0, 4.0, 6.0, 9.0]), np.array(["a", "a", "b", "a", "a", "a"], dtype=object),
                  np.full(6, 100.0))
    assert initial_demand(trace, 5.0) == {"a": 3 / 5, "b": 1 / 5}


def test_bench_rejects_an_unknown_policy(capsys, tmp_path):
    trace = tmp_path / "t.csv"
    write_trace(trace, Trace(np.array([0.1]), np.array(["resnet"], dtype=object), np.array([300.0])))
    assert main(["bench", "--trace", str(trace), "--policies", "milp,oracle"]) == 2
    assert "unknown policy 'oracle'" in capsys.readouterr().err


def test_simulate_a_small_scenario_end_to_end(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["simulate", "--scenario", "small-resnet", "--devices", "2", "--duration", "20",
                 "--policies", "milp,clipper-ht", "--slo", "resnet=300", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| milp |" in text and "| clipper-ht |" in text
    for name in ("results.md", "results.csv", "milp.requests.csv", "clipper-ht.plans.json", "timeline.png",
                 "accuracy.png", "latency_cdf.png"):
        assert (out / name).exists(), name


def test_simulate_needs_a_cluster_or_a_scenario(capsys):
    assert main(["simulate", "--policies", "milp"]) == 2
    assert "give --scenario" in capsys.readouterr().err


def test_bad_slo_flag_is_a_clear_error(capsys):
    assert main(["simulate", "--scenario", "small-resnet", "--duration", "5", "--slo", "resnet"]) == 2
    assert "--slo expects FAMILY=MS" in capsys.readouterr().err


def test_bad_hold_factor_is_a_clear_error(capsys):
    assert main(["simulate", "--scenario", "small-resnet", "--duration", "5", "--hold-factor", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "--hold-factor: must be >= 1, not 0.5" in err and "Traceback" not in err and err.count("\n") == 1


def test_timeline_plot_with_many_variants_drops_the_variant_legend(tmp_path):
    from orchestrator.evaluation import Outcomes, Run
    from orchestrator.plots import plot_runs

    n = 400
    rng = np.random.default_rng(0)
    variants = [f"v{i}" for i in range(12)]
    pick = rng.integers(0, 12, n)
    o = Outcomes(arrival_s=np.sort(rng.random(n) * 20), family=np.full(n, "f", dtype=object),
                 deadline_ms=np.full(n, 100.0), status=np.full(n, "ok", dtype=object),
                 latency_ms=rng.random(n) * 50, variant=np.array(variants, dtype=object)[pick],
                 device=np.full(n, "d", dtype=object), accuracy=60.0 + pick)
    paths = plot_runs([Run("milp", o, duration_s=20.0, mode="simulated")], tmp_path)
    assert all(p.stat().st_size > 5_000 for p in paths)
    assert not (tmp_path / "machine.png").exists()  # no activity recorded: no machine plot


def test_a_live_run_s_activity_is_plotted_as_the_machine_s_cores(tmp_path):
    from orchestrator.evaluation import Outcomes, Run
    from orchestrator.plots import plot_runs

    n = 100
    o = Outcomes(arrival_s=np.linspace(0, 9.9, n), family=np.full(n, "f", dtype=object),
                 deadline_ms=np.full(n, 100.0), status=np.array(["ok", "late"] * 50, dtype=object),
                 latency_ms=np.full(n, 50.0), variant=np.full(n, "v", dtype=object),
                 device=np.full(n, "d0", dtype=object), accuracy=np.full(n, 70.0))
    rows = "".join(f"{t}.0,0.1,0.9,0.0,0.5,0.01,0.8,4,700,3\n" for t in range(1, 11))
    activity = ("t_s,bench_cores,cpu0_busy,cpu0_steal,cpu1_busy,cpu1_steal,d0_server_cores,d0_executions,"
                "d0_compute_ms,d0_queue_ms\n" + rows)
    paths = plot_runs([Run("milp", o, duration_s=10.0, activity_csv=activity)], tmp_path)
    assert tmp_path / "machine.png" in paths and (tmp_path / "machine.png").stat().st_size > 10_000
    run = Run("milp", o, duration_s=10.0, activity_csv=activity)
    run.save(tmp_path)
    assert Run.load(tmp_path, "milp").activity_csv == activity
