"""Faults on real embedded Tritons under a running control plane: a hung server (SIGSTOP) is seen
and planned around, and taken back when it answers again; the API never waits on it."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.controlplane_helpers import call, running_control_plane

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
        reasons = [d["reason"] for d in cp.store.decisions(100) if d["kind"] in ("replan", "hold")]
        assert any(f"{hung} went down" in r for r in reasons) and any(f"{hung} came back" in r for r in reasons), reasons
