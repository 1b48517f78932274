"""The live bench when a Triton server dies under it: the policy's run goes on (its requests get
error outcomes while the server is down) under the control plane's supervision, which restarts
the server; the run says so in its notes; the next policy runs on the restarted server; and a
policy that fails outright leaves the runs before it written."""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

import orchestrator.bench as bench
from orchestrator.bench import BenchConfig, run_bench
from orchestrator.catalog import Catalog
from orchestrator.errors import UserError
from orchestrator.evaluation import Outcomes, Run, summarise
from orchestrator.trace import Trace
from orchestrator.triton.runtime import ClusterRuntime
from tests.controlplane_helpers import cluster_for, synthetic_profiles

pytestmark = pytest.mark.slow

RATE_RPS, DURATION_S, DEADLINE_MS = 4.0, 8.0, 2000.0
KILL_AT_S = 2.0


def steady_trace(rate: float, duration_s: float) -> Trace:
    n = int(rate * duration_s)
    return Trace(np.arange(n) / rate, np.array(["resnet"] * n, dtype=object), np.full(n, DEADLINE_MS))


def test_a_server_killed_during_a_policy_s_run_is_restarted_and_the_next_policy_runs_on_it(model_repo, tmp_path):
    full = Catalog.load(model_repo)
    # ResNet-18 alone, whatever the policy: its answers do not depend on how loaded this machine is
    catalog = replace(full, variants={"resnet18": full.variants["resnet18"]})
    cluster = cluster_for(model_repo, devices=1, memory_mb=400)
    trace = steady_trace(RATE_RPS, DURATION_S)
    lines: list[str] = []
    killed: list[int] = []
    with ClusterRuntime(cluster, model_repo, run_dir=tmp_path / "triton") as runtime:
        server = runtime.servers["cpu0"]

        def progress(line: str) -> None:
            lines.append(line)
            if line.startswith("clipper-ht: initial plan") and not killed:  # the trace clock starts now
                def kill() -> None:
                    time.sleep(KILL_AT_S)
                    killed.append(server.pid)
                    os.killpg(server.pid, signal.SIGKILL)  # the server and its python-backend stubs
                threading.Thread(target=kill, daemon=True).start()

        runs = run_bench(trace, cluster, catalog, synthetic_profiles(catalog), ["clipper-ht", "clipper-ha"],
                         {"resnet": DEADLINE_MS}, tmp_path / "out", BenchConfig(settle_s=0.2), runtime=runtime,
                         progress=progress)
        assert killed, lines
        assert server.pid != killed[0] and server.is_running(), "the killed server was restarted"
    first, second = (summarise(r) for r in runs)
    assert [r.policy for r in runs] == ["clipper-ht", "clipper-ha"]
    assert first.requests == second.requests == len(trace)  # one outcome per request, errors included
    errors = sum(1 for s in runs[0].outcomes.status if s == "error")
    assert errors > 0, "requests sent while the server was down are error outcomes"
    health = [n for n in runs[0].notes if n.startswith("device health changed")]
    assert health and "exited" in health[0] and "restarted" in health[0], runs[0].notes
    # the restart is the first run's: the next one's notes do not carry it over (a probe that timed
    # out on a loaded machine may still note a device that "went down" and "came back")
    assert not any("exited" in n for n in runs[1].notes), runs[1].notes
    answered = [s for s in runs[1].outcomes.status if s in ("ok", "late")]
    assert "error" not in set(runs[1].outcomes.status) and len(answered) >= len(trace) / 2, \
        f"the next policy ran on the restarted server: {second}"
    for name in ("results.md", "results.csv", "clipper-ht.requests.csv", "clipper-ha.requests.csv"):
        assert (tmp_path / "out" / name).exists(), name
    assert "device health changed" in (tmp_path / "out" / "results.md").read_text()


def test_a_policy_that_fails_leaves_the_runs_before_it_written_and_is_named(tmp_path, monkeypatch, model_repo):
    catalog = Catalog.load(model_repo)
    cluster = cluster_for(model_repo, devices=1)
    trace = steady_trace(2.0, 3.0)

    def run_policy(policy, trace, runtime, *args, **kwargs):
        if policy == "clipper-ha":
            raise UserError("cpu0: repository index failed: Triton at 127.0.0.1:1 does not answer")
        rows = [{"arrival_s": t, "family": "resnet", "deadline_ms": DEADLINE_MS, "status": "ok", "latency_ms": 50.0,
                 "variant": "resnet18", "device": "cpu0", "accuracy": 69.76} for t in trace.time_s.tolist()]
        return Run(policy, Outcomes.from_rows(rows), [], 3.0, "live", ["a note"])

    monkeypatch.setattr(bench, "run_policy", run_policy)
    with pytest.raises(UserError) as e:
        run_bench(trace, cluster, catalog, synthetic_profiles(catalog), ["clipper-ht", "clipper-ha", "milp"],
                  {"resnet": DEADLINE_MS}, tmp_path / "out", BenchConfig(settle_s=0.0), runtime=object(),
                  progress=lambda line: None)
    assert str(e.value).startswith("live bench: policy clipper-ha failed: cpu0: repository index failed")
    assert f"the results of clipper-ht are in {tmp_path / 'out'}" in str(e.value)
    assert (tmp_path / "out" / "clipper-ht.requests.csv").exists()
    assert "clipper-ht" in (tmp_path / "out" / "results.md").read_text()
    assert not (tmp_path / "out" / "clipper-ha.requests.csv").exists()
