"""The health monitor's rule (orchestrator/controlplane/health.py), probe by probe on a clock the
test keeps: a device silent to its probes is down after `down_after_s`, unless clients reported its
inference answers within `busy_window_s` (busy, not hung); a refused connection is down at once.
Against real servers (SIGSTOP, kill -9, a saturated device's clients reporting): tests/test_faults.py."""

from __future__ import annotations

import time

from orchestrator.controlplane.health import BUSY_WINDOW_S, DOWN_AFTER_S, HealthMonitor
from orchestrator.errors import UserError
from orchestrator.triton.control import ModelControl, TimedOut, Unreachable


class Device:
    """What the monitor is given: a probe that answers, times out or is refused, and the time of
    the latest reported inference answer."""

    def __init__(self):
        self.now = 0.0
        self.probe_fails: Exception | None = None
        self.answered: float | None = None

    def probe(self, device_id: str, timeout_s: float) -> list[dict]:
        if self.probe_fails is not None:
            raise self.probe_fails
        return [{"name": "resnet18", "state": "READY"}]

    def monitor(self) -> HealthMonitor:
        return HealthMonitor(["cpu0"], self.probe, clock=lambda: self.now, answered_at=lambda d: self.answered)

    def at(self, monitor: HealthMonitor, t: float):
        self.now = t
        return monitor.check("cpu0")


TIMEOUT = TimedOut("Triton at localhost:1 did not answer within 0.3 s")


def test_a_silent_device_nobody_sees_answering_is_down_after_down_after_s():
    dev = Device()
    m = dev.monitor()
    assert dev.at(m, 0.0).live
    dev.probe_fails = TIMEOUT
    h = dev.at(m, DOWN_AFTER_S - 0.1)
    assert h.live and not h.busy and h.error  # one missed answer
    h = dev.at(m, DOWN_AFTER_S + 0.1)
    assert not h.live and "did not answer" in h.error


def test_a_device_whose_answers_clients_report_is_busy_not_down_until_the_reports_stop():
    dev = Device()
    m = dev.monitor()
    assert dev.at(m, 0.0).live
    dev.probe_fails = TIMEOUT
    for t in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0):  # reports of answers keep coming, once a second
        dev.answered = float(int(t))
        h = dev.at(m, t)
        assert h.live, t
        assert h.busy == (t >= DOWN_AFTER_S), t
    h = dev.at(m, 3.0 + BUSY_WINDOW_S - 0.1)  # the last report is still recent
    assert h.live and h.busy
    h = dev.at(m, 3.0 + BUSY_WINDOW_S + 0.1)  # the reports stopped: hung (or its clients left)
    assert not h.live and not h.busy
    dev.probe_fails = None
    h = dev.at(m, 10.0)
    assert h.live and not h.busy and h.error is None and h.ups == 2


def test_only_a_timed_out_probe_is_forgiven_for_reported_answers():
    """A server that answers that it is not live, or whose index fails, is not slow: it is down
    after down_after_s whatever the reports say."""
    dev = Device()
    m = dev.monitor()
    assert dev.at(m, 0.0).live
    dev.answered = 0.9
    dev.probe_fails = UserError("cpu0: Triton at localhost:1 says it is not live")
    assert dev.at(m, DOWN_AFTER_S - 0.1).live
    assert not dev.at(m, 1.0).live


def test_an_http_server_that_does_not_answer_times_out_and_a_closed_port_is_refused():
    """What the monitor tells apart, over HTTP as over gRPC: a socket that accepts and never
    answers (a hung server) is `TimedOut`, a port nobody listens on `Unreachable`."""
    import socket
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    try:
        for port, kind in ((silent.getsockname()[1], TimedOut), (closed_port, Unreachable)):
            control = ModelControl(f"127.0.0.1:{port}", protocol="http", name="cpu0")
            try:
                control.probe(0.3)
            except UserError as e:
                assert type(e) is kind, (port, e)
            else:
                raise AssertionError("the probe answered")
            finally:
                control.close()
    finally:
        silent.close()


def test_a_refused_connection_is_down_at_once_whatever_the_reports_say():
    dev = Device()
    m = dev.monitor()
    assert dev.at(m, 0.0).live
    dev.answered = 0.1
    dev.probe_fails = Unreachable("Triton at localhost:1 refused the connection")
    h = dev.at(m, 0.2)
    assert not h.live and "refused" in h.error


def test_a_down_device_stays_down_until_a_probe_answers_even_while_answers_are_reported():
    dev = Device()
    m = dev.monitor()
    assert dev.at(m, 0.0).live
    dev.probe_fails = TIMEOUT
    assert not dev.at(m, 1.0).live
    dev.answered = 1.1  # answers to batches sent before it was planned around
    assert not dev.at(m, 1.2).live


def test_supervision_counts_silence_from_the_latest_sign_of_life():
    """The loop hands `recover` (which restarts a server silent for 10 s) the seconds since the last
    answered probe or reported inference answer, whichever is later."""
    for reported in (True, False):
        seen: list[float] = []
        start = time.time()
        m = HealthMonitor(["cpu0"], lambda d, t: (_ for _ in ()).throw(TIMEOUT),
                          recover=lambda d, silent_s: seen.append(silent_s), period_s=0.01,
                          answered_at=(lambda d: time.time() - 0.05) if reported else (lambda d: None))
        m.start()
        deadline = time.monotonic() + 5.0  # a loaded machine may starve the probe thread for a while
        while time.monotonic() < deadline and (len(seen) < 5 or time.time() - start < 0.6
                                               or (not reported and max(seen) < 0.5)):
            time.sleep(0.02)
        m.stop()
        assert len(seen) >= 5
        if reported:  # a device that serves is never silent long enough to be restarted
            assert max(seen) < 0.3, seen
        else:  # nobody sees it answer: silence grows from its first failed probe
            assert max(seen) >= 0.5, seen
