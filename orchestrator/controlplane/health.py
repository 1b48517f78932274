"""Device health, probed off the controller's thread.

One thread per device asks its Triton `ServerLive` and the repository index every `period_s`,
each call bounded by `timeout_s`. A device whose server refuses the connection is down at once; one
that stops answering (hung: SIGSTOP, a wedged process, a partitioned link) is down once it has not
answered for `down_after_s`, or for `busy_down_after_s` while `busy(device_id)` says its server is
working (an embedded one whose processes use the CPU and are not stopped: saturated by
inference on a shared core, it answers probes late but serves); either is up again at its
first answer. A server restarted between
two probes (no probe met the gap) is told by its index: a model that had a state (READY, LOADING,
UNAVAILABLE: the server had tried it) has none, as on a fresh server; that counts as a new run
(`ups`) as if it had been down in between. The controller, `/readyz`
and `/api/v1/cluster` read the latest `DeviceHealth` and never wait on a Triton; a change calls
`on_change(device_id, health)` (the control plane wakes its controller, which re-plans at once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from orchestrator.errors import UserError
from orchestrator.triton.control import Unreachable  # what ModelControl raises for a refused connection

log = logging.getLogger(__name__)

PERIOD_S = 0.2
TIMEOUT_S = 0.3
DOWN_AFTER_S = 0.7  # with the 0.2-s period and 0.3-s probes, silence is seen within ~0.7-1.0 s
BUSY_DOWN_AFTER_S = 3.0  # the silence a device whose server is busy working may keep before it is down


@dataclass(frozen=True)
class DeviceHealth:
    live: bool
    checked: bool = False  # at least one probe has finished
    error: str | None = None  # why it is down (the last failed probe)
    since: float = 0.0  # wall time of the last change between live and down
    last_ok: float | None = None  # wall time of the last probe that answered
    models: tuple[dict, ...] = field(default_factory=tuple)  # the index at the last answer: name, version, state, reason
    ups: int = 0  # how many times it has become live (a restart between two looks shows here)


LEFT = DeviceHealth(live=False, checked=True, error="left the cluster")  # a device no longer probed

Probe = Callable[[str, float], list[dict]]  # (device_id, timeout_s) -> repository index; raises UserError
Recover = Callable[[str, float], None]  # (device_id, seconds it has not answered), after each failed probe
Busy = Callable[[str], bool]  # device_id -> its server is working (asked after each unanswered probe)


class HealthMonitor:
    """Probes `device_ids` with `probe` until `stop()`."""

    def __init__(self, device_ids: list[str], probe: Probe,
                 on_change: Callable[[str, DeviceHealth], None] = lambda d, h: None,
                 recover: Recover = lambda d, silent_s: None, period_s: float = PERIOD_S,
                 timeout_s: float = TIMEOUT_S, down_after_s: float = DOWN_AFTER_S, clock: Callable[[], float] = time.time,
                 busy: Busy = lambda d: False, busy_down_after_s: float = BUSY_DOWN_AFTER_S):
        self.probe, self.on_change, self.recover, self.busy = probe, on_change, recover, busy
        self.period_s, self.timeout_s, self.down_after_s = period_s, timeout_s, down_after_s
        self.busy_down_after_s = busy_down_after_s
        self.clock = clock
        self._states = {d: DeviceHealth(live=False, error="not probed yet") for d in device_ids}
        self._first_failure: dict[str, float] = {}  # device -> when it began failing (while still live)
        self._lock = threading.Lock()
        self._stop = threading.Event()  # stops every device's loop
        self._left: dict[str, threading.Event] = {}  # device -> set when it leaves (remove)
        self._threads: dict[str, threading.Thread] = {}
        self._running = False  # start() has run: a device added from now on gets its own loop at once

    def start(self) -> "HealthMonitor":
        """Probe every device once (in parallel, so that the first readers see real states), then keep probing."""
        first = [threading.Thread(target=self.check, args=(d,), daemon=True) for d in self._states]
        for t in first:
            t.start()
        for t in first:
            t.join(self.timeout_s * 3 + 1.0)
        with self._lock:  # a device added meanwhile is either in this list or starts its own loop
            self._running = True
            device_ids = list(self._states)
        for d in device_ids:
            self._start_loop(d)
        return self

    def _start_loop(self, device_id: str) -> None:
        self._left[device_id] = threading.Event()
        t = threading.Thread(target=self._run, args=(device_id, self._left[device_id]), name=f"health-{device_id}",
                             daemon=True)
        self._threads[device_id] = t
        t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in list(self._threads.values()):
            t.join(self.timeout_s * 3 + 1.0)

    def add(self, device_id: str) -> None:
        """Probe a device that joined (node discovery): down ("not probed yet") until it answers,
        then up through the same change as a device that comes back."""
        with self._lock:
            if device_id in self._states:
                return
            self._states[device_id] = DeviceHealth(live=False, checked=True, error="joined, not probed yet")
            running = self._running
        if running and not self._stop.is_set():
            self._start_loop(device_id)

    def remove(self, device_id: str) -> None:
        """Stop probing a device that left; it has no state any more."""
        left = self._left.pop(device_id, None)
        if left is not None:
            left.set()
        thread = self._threads.pop(device_id, None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.timeout_s * 3 + 1.0)
        with self._lock:
            self._states.pop(device_id, None)
            self._first_failure.pop(device_id, None)

    @property
    def running(self) -> bool:
        """Probing in its own threads (started, not stopped)."""
        return self._running and not self._stop.is_set()

    def state(self, device_id: str) -> DeviceHealth:
        with self._lock:
            return self._states.get(device_id, LEFT)

    def current(self, device_id: str) -> DeviceHealth:
        """The latest state; probed now when the monitor is not running (a control plane used in
        process, without its threads)."""
        if not self._running:
            return self.check(device_id) or self.state(device_id)
        return self.state(device_id)

    def mark_down(self, device_id: str, error: str) -> None:
        """Down now, whatever the last probe said (its server was just restarted: nothing is
        loaded there any more); the next answer brings it back as a new run."""
        with self._lock:
            old = self._states.get(device_id)
            if old is None:
                return
            self._states[device_id] = replace(old, live=False, error=error, since=self.clock(), models=())
        if old.live:
            self.on_change(device_id, self._states[device_id])

    def _run(self, device_id: str, left: threading.Event) -> None:
        """Probe; after a failed probe let `recover` act (restart a dead or hung embedded server)."""
        while not self._stop.wait(self.period_s) and not left.is_set():
            try:
                health = self.check(device_id)
                if health is not None and health.error is not None and not self._stop.is_set():
                    silent_from = health.last_ok if health.last_ok is not None else self._first_failure.get(
                        device_id, self.clock())
                    self.recover(device_id, self.clock() - silent_from)
            except Exception:  # noqa: BLE001 - the probe loop must survive; the log has it
                log.exception("health probe of %s failed", device_id)

    def check(self, device_id: str) -> DeviceHealth | None:
        """One probe of one device; returns (and keeps) its new state (None: it left meanwhile)."""
        start = self.clock()
        try:
            models = tuple(self.probe(device_id, self.timeout_s))
            error, refused = None, False
        except Unreachable as e:
            models, error, refused = (), str(e), True
        except UserError as e:
            models, error, refused = (), str(e), False
        working = error is not None and not refused and self.busy(device_id)
        now = self.clock()
        with self._lock:
            old = self._states.get(device_id)
            if old is None:
                return None
            if error is None:
                self._first_failure.pop(device_id, None)
                restarted = old.live and new_run(old.models, models)
                new = DeviceHealth(live=True, checked=True, since=old.since if old.live else now,
                                   last_ok=now, models=models, ups=old.ups if old.live and not restarted else old.ups + 1)
            else:
                failing_since = self._first_failure.setdefault(device_id, start)
                silent_s = now - (old.last_ok if old.last_ok is not None else failing_since)
                down = refused or not old.live or silent_s >= (self.busy_down_after_s if working else self.down_after_s)
                if down:
                    new = DeviceHealth(live=False, checked=True, error=error, since=now if old.live else old.since,
                                       last_ok=old.last_ok, ups=old.ups)
                else:  # missed answers: still live, until it has been silent for down_after_s (busy: longer)
                    new = replace(old, checked=True, error=error + (" (its server is busy working: not down yet)"
                                                                    if working else ""))
            self._states[device_id] = new
        if new.live != old.live and old.checked:
            log.warning("device %s %s", device_id, "answers again" if new.live else f"is down: {error}")
            self.on_change(device_id, new)
        elif new.ups != old.ups and old.checked:
            log.warning("device %s restarted between two probes (its index lost the models' states)", device_id)
            self.on_change(device_id, new)
        return new


def new_run(before: tuple[dict, ...], now: tuple[dict, ...]) -> bool:
    """Whether index `now` comes from a new server run than index `before`: a model that had a
    state then has none now (Triton gives a model a state from its first load on, and an unload
    leaves UNAVAILABLE; only a fresh server lists a model without one)."""
    had = {m.get("name") for m in before if m.get("state")}
    return any(m.get("name") in had and not m.get("state") for m in now)
