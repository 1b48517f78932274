"""Faults on real embedded Tritons under a running control plane: a hung server (SIGSTOP) is seen
and planned around, and taken back when it answers again (the API never waits on it); a killed
one is reaped, restarted and given its models back; a control plane killed with SIGKILL leaves
its Tritons serving, and its restart takes them over without reloading anything."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from orchestrator.catalog import Catalog
from tests.triton_helpers import group_processes
from tests.controlplane_helpers import (DEVICE_CLASS, TOKEN, call, read_lines, running_control_plane,
                                        synthetic_profiles, wait_for_line)

pytestmark = pytest.mark.slow


def wait_for(what: str, condition, timeout_s: float, every_s: float = 0.1):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s")


def timed_call(url: str, bound_s: float = 3.0) -> tuple[int, dict]:
    """An API call that must answer within `bound_s` (a hung Triton must not hold it)."""
    start = time.monotonic()
    status, body = call(url, timeout=bound_s + 5)
    assert time.monotonic() - start < bound_s, f"{url} took {time.monotonic() - start:.1f} s"
    return status, body


def test_a_hung_triton_is_marked_down_planned_around_and_taken_back(model_repo):
    with running_control_plane(model_repo, controller=True, tick_s=0.5, dwell_s=1.0) as server:
        cp, url = server.cp, server.url
        cp.apply(cp.solve(demand={"resnet": 40.0}), reason="test: first plan")
        hung = cp.plan.placements[0].device_id
        pid = server.runtime.servers[hung].pid
        os.killpg(pid, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            def hung_is_down():
                status, body = timed_call(url + "/api/v1/cluster")
                device = next(d for d in body["devices"] if d["id"] == hung)
                return device if not device["live"] else None
            device = wait_for(f"{hung} marked down", hung_is_down, 20.0)
            detected_s = time.monotonic() - stopped
            assert device["error"] and "did not answer within" in device["error"], device
            status, ready = timed_call(url + "/readyz")
            assert status == 200 and ready["status"] == "degraded" and ready["down"] == [hung], ready
            wait_for("a plan without the hung device", lambda: cp.plan is not None
                     and not cp.plan.placements_on(hung), 30.0)
            replanned_s = time.monotonic() - stopped
        finally:
            os.killpg(pid, signal.SIGCONT)
        print(f"hung {hung}: marked down after {detected_s:.2f} s, planned around after {replanned_s:.2f} s")
        wait_for(f"{hung} live again", lambda: cp.device_live(hung), 20.0)
        decisions = wait_for("the controller's health decisions", lambda: [
            d["reason"] for d in cp.store.decisions(100) if d["kind"] == "health"
            and f"{hung} came back" in d["reason"]], 20.0)
        assert decisions

        def replan_reasons():  # the re-plan follows its health decision (after any apply that was running)
            reasons = [d["reason"] for d in cp.store.decisions(100) if d["kind"] in ("replan", "hold")]
            return reasons if any(f"{hung} came back" in r for r in reasons) else None
        reasons = wait_for("a re-plan for the device that came back", replan_reasons, 20.0)
        assert any(f"{hung} went down" in r for r in reasons), reasons


def group_pids(pgid: int) -> list[int]:
    return [pid for pid, _ in group_processes(pgid)]


def is_zombie_or_gone(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_killed_embedded_triton_is_reaped_restarted_and_given_its_models_back(model_repo):
    with running_control_plane(model_repo, controller=True, tick_s=0.5, dwell_s=1.0) as server:
        cp, url = server.cp, server.url
        cp.apply(cp.solve(demand={"resnet": 40.0}), reason="test: first plan")
        victim = cp.plan.placements[0].device_id
        planned = sorted(p.variant for p in cp.plan.placements_on(victim))
        old_pid = server.runtime.servers[victim].pid
        stubs = [p for p in group_pids(old_pid) if p != old_pid]
        assert stubs, "a loaded python-backend model runs in a stub process of the server's group"
        os.kill(old_pid, signal.SIGKILL)  # the server only: its stubs are orphaned, as after a crash
        killed = time.monotonic()
        wait_for("the old run's stubs killed and the server reaped",
                 lambda: not group_pids(old_pid) and not os.path.exists(f"/proc/{old_pid}"), 30.0)
        ups = cp.health.state(victim).ups
        wait_for(f"{victim} restarted and live", lambda: server.runtime.servers[victim].pid not in (None, old_pid)
                 and cp.health.state(victim).live and cp.health.state(victim).ups > ups, 60.0)
        restarted_s = time.monotonic() - killed

        def models_back():
            status, body = timed_call(url + "/api/v1/cluster")
            device = next(d for d in body["devices"] if d["id"] == victim)
            ready = sorted(m["name"] for m in device["models"] if m["state"] == "READY")
            plan_here = sorted(p.variant for p in cp.plan.placements_on(victim))
            return plan_here and ready == plan_here
        wait_for(f"{victim} serving what the plan places there again", models_back, 90.0)
        print(f"killed {victim} (pid {old_pid}, planned {planned}): restarted and live after {restarted_s:.2f} s, "
              f"models back after {time.monotonic() - killed:.2f} s")
        health = [d["reason"] for d in cp.store.decisions(100) if d["kind"] == "health"]
        assert any("exited with code" in r and "restarted" in r for r in health), health
        assert all(is_zombie_or_gone(p) for p in stubs)


def test_a_hung_embedded_triton_is_killed_and_restarted_with_backoff(model_repo, tmp_path):
    from orchestrator.triton.runtime import HANG_RESTART_S, RESTART_BACKOFF_S, ClusterRuntime
    from tests.triton_helpers import one_cpu_cluster
    with ClusterRuntime(one_cpu_cluster(model_repo, tmp_path)) as runtime:
        device = next(iter(runtime.servers))
        server = runtime.servers[device]
        old_pid = server.pid
        os.killpg(old_pid, signal.SIGSTOP)
        assert runtime.recover(device, silent_s=HANG_RESTART_S / 2, now=100.0) is None  # not hung long enough yet
        done = runtime.recover(device, silent_s=HANG_RESTART_S + 1, now=100.0)
        assert done and "hung" in done and "restarted" in done, done
        assert server.pid != old_pid and not group_pids(old_pid) and runtime.control(device).is_live()
        # a second restart waits out the backoff, then goes ahead
        os.killpg(server.pid, signal.SIGSTOP)
        assert runtime.recover(device, silent_s=HANG_RESTART_S + 1, now=100.0 + RESTART_BACKOFF_S[0] / 2) is None
        assert "restart 2" in runtime.recover(device, silent_s=HANG_RESTART_S + 1, now=100.0 + RESTART_BACKOFF_S[0] + 0.1)
        assert runtime.control(device).is_live()


def tritonserver_on_port(grpc_port: int) -> int | None:
    """The pid of the tritonserver listening on `grpc_port` (from its command line), if any."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"tritonserver") and f"--grpc-port={grpc_port}".encode() in cmd \
                    and not is_zombie_or_gone(int(entry)):
                return int(entry)
    return None


def start_serve(cluster, profiles, db) -> tuple[subprocess.Popen, list[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "serve", "--cluster", str(cluster),
                             "--profiles", str(profiles), "--db", str(db), "--port", "0", "--token", TOKEN,
                             "--no-gateway", "--tick", "0.5"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    threading.Thread(target=read_lines, args=(proc, lines), daemon=True).start()
    url = wait_for_line(lines, re.compile(r"^control plane: (http://\S+?)/? "), proc, 120).group(1)
    return proc, lines, url


def test_embedded_tritons_serve_through_a_control_plane_crash_and_are_taken_over_on_restart(model_repo, tmp_path):
    cluster = tmp_path / "cluster.toml"
    cluster.write_text(f'name = "crash"\nmodel_repository = "{model_repo}"\n\n[[device]]\nid = "cpu0"\n'
                       f'class = "{DEVICE_CLASS}"\nkind = "cpu"\nmemory_mb = 700\n\n[device.embedded]\nthreads = 1\n')
    synthetic_profiles(Catalog.load(model_repo)).save(tmp_path / "profiles.json")
    db = tmp_path / "state.sqlite"
    x = np.zeros((1, 3, 224, 224), np.float32)
    proc, lines, url = start_serve(cluster, tmp_path / "profiles.json", db)
    second = None
    try:
        # a fresh control plane makes its first plan itself (--initial-demand, default 1 rps)
        plan = wait_for("the first plan", lambda: (lambda r: r[1] if r[0] == 200 else None)(call(url + "/api/v1/plan")),
                        60.0)
        grpc_url = plan["endpoints"]["cpu0"]["grpc"]
        variant = plan["plan"]["placements"][0]["variant"]
        triton = tritonserver_on_port(int(grpc_url.rsplit(":", 1)[1]))
        assert triton is not None
        proc.kill()  # SIGKILL: no clean-up runs
        proc.wait(10)
        client = grpcclient.InferenceServerClient(grpc_url)
        served = 0
        for _ in range(5):  # the data plane does not depend on the control plane's process
            inp = grpcclient.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            served += client.infer(variant, [inp]).as_numpy("logits").shape == (1, 1000)
        client.close()
        assert served == 5 and not is_zombie_or_gone(triton)
        second, lines2, url2 = start_serve(cluster, tmp_path / "profiles.json", db)
        wait_for_line(lines2, re.compile(r"^\s*took over the Triton server\(s\) a previous run left running: cpu0"),
                      second, 30)
        assert tritonserver_on_port(int(grpc_url.rsplit(":", 1)[1])) == triton  # the same process, not a new one
        status, body = call(url2 + "/api/v1/plan")
        assert status == 200 and body["plan"]["version"] == plan["plan"]["version"]
        assert body["endpoints"]["cpu0"]["grpc"] == grpc_url
        _, decisions = call(url2 + "/api/v1/decisions?limit=20")
        reconcile = next(d["reason"] for d in decisions["decisions"] if d["kind"] == "reconcile")
        assert f"already loaded: {variant}@cpu0" in reconcile and "nothing to load" in reconcile, reconcile
    finally:
        for p in (proc, second):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
    wait_for("the Triton stopped with the clean stop", lambda: tritonserver_on_port(
        int(grpc_url.rsplit(":", 1)[1])) is None, 30.0)
