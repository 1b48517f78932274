"""The machine-activity record of a live run (orchestrator/activity.py): what it reads from /proc
and Triton's statistics, and how a row splits the machine's cores. The recorder against real
servers is exercised by the reduced live bench (tests/test_bench_live.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np

from orchestrator.activity import (cores_by_part, counters_between, cpu_times, process_cpu_seconds, read_activity,
                                   triton_counters)
from orchestrator.triton.embedded import cpu_seconds_between, group_processes


def test_cpu_time_this_process_spends_shows_in_its_own_and_the_machines_counters():
    cpus0, own0 = cpu_times(), process_cpu_seconds()
    end = time.process_time() + 0.3
    while time.process_time() < end:  # 0.3 s of CPU on whatever core runs us
        pass
    cpus1, own1 = cpu_times(), process_cpu_seconds()
    assert own1 - own0 >= 0.28  # os.times() counts 10-ms ticks
    busy = sum(cpus1[c][0] - cpus0[c][0] for c in cpus0)
    assert busy >= 0.25, busy  # the machine's busy time includes ours (tick accounting: +-1 tick per CPU)
    assert set(cpus0) == set(cpus1) and len(cpus0) == os.cpu_count()


def test_a_member_that_exits_between_two_looks_does_not_count_negative(tmp_path):
    """A real process group (a session, as a tritonserver with its stubs is one): a member spins
    0.3 s and exits between two looks; the group's CPU between them is what the others used (next
    to nothing), not minus the exited member's seconds, as the sum over live members would say (a
    model unloaded takes its stub's seconds with it)."""
    go = tmp_path / "go"
    spin = (f"import os, time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
            f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n")
    (tmp_path / "spin.py").write_text(spin)
    leader = subprocess.Popen(["sh", "-c", f"{sys.executable} {tmp_path / 'spin.py'}; exec sleep 30"],
                              start_new_session=True)
    try:
        def look_until(ok):
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                members = group_processes([leader.pid])[leader.pid]
                if ok(members):
                    return members
                time.sleep(0.02)
            raise AssertionError(f"the process group never got there: {members}")

        before = look_until(lambda m: len(m) == 2 and sum(m.values()) >= 0.28)  # the spinner is done spinning
        go.write_text("")
        after = look_until(lambda m: len(m) == 1)  # ... and has exited
        assert sum(after.values()) - sum(before.values()) < -0.25  # what a sum over live members says
        assert 0.0 <= cpu_seconds_between(before, after) < 0.05
        assert cpu_seconds_between({}, before) == sum(before.values())  # members new since the first look count whole
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()


def test_triton_counters_count_each_execution_once_and_each_request_s_queueing():
    """Triton's statistics as tritonclient.grpc gives them (as_json: int64 counters as strings,
    zero ones left out): a batch merged from two requests is one execution whose compute time is
    counted once (batch_stats), while queueing is per request (inference_stats)."""
    stats = {"model_stats": [
        {"name": "resnet18", "version": "1", "execution_count": "3", "inference_count": "4",
         "inference_stats": {"compute_infer": {"count": "4", "ns": "200000000"},
                             "queue": {"count": "4", "ns": "8000000"}},
         "batch_stats": [{"batch_size": "1", "compute_infer": {"count": "2", "ns": "100000000"}},
                         {"batch_size": "2", "compute_infer": {"count": "1", "ns": "60000000"}}]},
        {"name": "resnet50", "version": "1", "inference_stats": {}}]}
    counters = triton_counters(stats)
    assert counters == {"resnet18/1": (3, 160.0, 8.0), "resnet50/1": (0, 0.0, 0.0)}
    assert triton_counters({}) == {}


def test_counters_between_two_looks_skip_a_model_loaded_or_reloaded_in_between():
    before = {"a/1": (10, 1000.0, 50.0), "b/1": (5, 900.0, 0.0), "gone/1": (7, 700.0, 0.0)}
    after = {"a/1": (14, 1400.0, 60.0), "b/1": (1, 150.0, 0.0), "new/1": (2, 300.0, 1.0)}
    # a: +4 executions; b went back (unloaded and loaded again): skipped, not negative;
    # new was not there before and gone is not there now: neither counts
    assert counters_between(before, after) == (4, 400.0, 10.0)


def test_a_row_splits_the_busy_cores_into_servers_this_process_others_and_stolen():
    text = ("t_s,bench_cores,cpu0_busy,cpu0_steal,cpu1_busy,cpu1_steal,d0_server_cores,d0_executions,"
            "d0_compute_ms,d0_queue_ms,d1_server_cores,d1_executions,d1_compute_ms,d1_queue_ms\n"
            "1.0,0.10,0.90,0.05,0.80,0.00,0.70,4,650,10,0.60,3,500,0\n"
            "2.0,0.20,0.50,0.00,0.40,0.10,,,,,0.65,3,600,5\n")  # d0's server restarted: blank
    columns = read_activity(text)
    parts = cores_by_part(columns)
    assert list(parts) == ["server d0", "server d1", "this process", "other processes", "stolen"]
    np.testing.assert_allclose(parts["server d0"], [0.70, 0.0])
    np.testing.assert_allclose(parts["other processes"], [1.70 - 1.30 - 0.10, 0.90 - 0.65 - 0.20])
    np.testing.assert_allclose(parts["stolen"], [0.05, 0.10])
    raw = cores_by_part(columns, blank_as_zero=False)  # the restart's second stays unknown
    assert np.isnan(raw["server d0"][1]) and np.isnan(raw["other processes"][1])
    assert read_activity("t_s,bench_cores\n") == {}


def test_a_remote_device_without_server_figures_is_no_part_of_the_machine():
    text = ("t_s,bench_cores,cpu0_busy,cpu0_steal,d0_server_cores,d0_executions,d0_compute_ms,d0_queue_ms,"
            "r1_server_cores,r1_executions,r1_compute_ms,r1_queue_ms\n"
            "1.0,0.10,0.90,0.00,0.70,4,650,10,,3,500,0\n")
    parts = cores_by_part(read_activity(text))
    assert "server r1" not in parts and "server d0" in parts
    np.testing.assert_allclose(parts["other processes"], [0.10])
