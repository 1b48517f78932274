"""The simulator's model of the hardware: devices shared by their routes' models, and the time a
batch takes.

A batch of b takes the profiled p50 latency at b on the device alone, or, with noise, a lognormal
draw whose median is p50 and whose 99th percentile is p99 (both interpolated in b by
`LatencyModel`). Each route runs at most `lanes` batches at once (its Triton instances; more wait
in its own line, FIFO); the routes with a batch running share the device equally (processor
sharing, as concurrent models time-slice a CPU's cores or a GPU), so a small variant's batch is
slowed, not queued, by a large one beside it. One route alone runs at full speed, as profiled.

A `SimRoute` is the data plane's `RouteState` (queue, policy, batches in flight, calibration),
as the shim's `RouteWorker` keeps one, plus its place on the modelled device; driver.py drives it.
"""

from __future__ import annotations

from heapq import heappush
import math
import random
from collections import deque

from orchestrator.dataplane.batching import Policy
from orchestrator.dataplane.latency import LatencyModel
from orchestrator.dataplane.route_state import RouteState
from orchestrator.plan import Placement
from orchestrator.profiles import ProfileSet
from orchestrator.simulation.events import DONE, Events

Z99 = 2.3263478740408408  # standard normal 99th percentile


class ServiceTimes:
    """Per (variant, device class, instances, threads, batch cap): each batch size's median
    service time and lognormal sigma, from `service_profiles` where they have the pair (e.g. a
    live run's observed service times), else from `profiles`. Cached: a run asks at every route
    it builds."""

    def __init__(self, profiles: ProfileSet, service_profiles: ProfileSet | None, noise: bool):
        self.profiles = profiles
        self.service_profiles = service_profiles
        self.noise = noise
        self._cache: dict[tuple, tuple[list[float], list[float]]] = {}

    def curve(self, variant: str, device_class: str, instances: int, threads: int,
              cap: int) -> tuple[list[float], list[float]]:
        """(median seconds, lognormal sigma) per batch size 0..cap (index 0 unused)."""
        key = (variant, device_class, instances, threads, cap)
        hit = self._cache.get(key)
        if hit is None:
            records = self.service_profiles.for_pair(variant, device_class) if self.service_profiles else []
            records = records or self.profiles.for_pair(variant, device_class)
            p50 = LatencyModel.from_profiles(records, "p50", instances=instances, threads=threads)
            p99 = LatencyModel.from_profiles(records, "p99", instances=instances, threads=threads)
            med, sig = [0.0], [0.0]
            for b in range(1, cap + 1):
                m = p50.seconds(b)
                hi = p99.seconds(b)
                med.append(m)
                sig.append(math.log(hi / m) / Z99 if self.noise and m > 0 and hi > m else 0.0)
            hit = self._cache[key] = (med, sig)
        return hit


class Request:
    """One simulated request; what the batching policy reads (the `Queued` protocol)."""

    __slots__ = ("id", "arrival_s", "deadline_s", "serve_late")

    def __init__(self, rid: int, arrival_s: float, deadline_s: float):
        self.id = rid
        self.arrival_s = arrival_s
        self.deadline_s = deadline_s
        self.serve_late = False


class Job:
    """A batch running on a device: its work left (seconds of the device alone) and the version
    of its completion event (an older event for it is stale)."""

    __slots__ = ("route", "batch", "sent_at", "work_s", "version")

    def __init__(self, route: "SimRoute", batch: "list[Request]", sent_at: float, work_s: float):
        self.route = route
        self.batch = batch
        self.sent_at = sent_at
        self.work_s = work_s
        self.version = 0


class Device:
    """A device shared by its routes' models (see the module's docstring)."""

    __slots__ = ("id", "running", "sharing", "updated_at", "routes", "sends", "slowdown", "window_s")

    def __init__(self, device_id: str, slowdown: list[float] | None = None, window_s: float = 1.0):
        self.id = device_id
        # a batch takes this many times its modelled time, per window of window_s seconds from
        # the start (the last one's holds after it; empty: 1); a live run's `SpeedTimeline`
        self.slowdown: list[float] = slowdown or []
        self.window_s = window_s
        self.sends = 0  # batches sent to it so far (RouteState.sent: which ran alone)
        self.running: list[Job] = []
        self.sharing = 0  # routes with a batch running (the jobs' routes, counted once each)
        self.updated_at = 0.0  # when the running jobs' work was last brought up to date
        self.routes: list[SimRoute] = []  # routes with a model here, retired ones until they unload

    def routes_changed(self) -> None:
        """Tell each route its neighbours here (those with a batch in flight slow its answers)."""
        for r in self.routes:
            r.others = tuple(o for o in self.routes if o is not r)


class SimRoute(RouteState):
    """One (device, variant) route: the data plane's route state (dataplane/route_state.py, as
    the shim's workers keep it) and the simulator's side of it: its device, lanes in use, the
    batches waiting for a lane, and its service-time model."""

    __slots__ = ("key", "device", "variant_index", "device_index", "median_s", "sigma", "wake_at", "retired",
                 "placement", "running", "waiting", "others")

    def __init__(self, key: tuple[str, str], device: Device, variant_index: int, device_index: int,
                 placement: Placement, policy: Policy, model: LatencyModel, max_in_flight: int, lanes: int,
                 median_s: list[float], sigma: list[float]):
        super().__init__(policy, model, lanes, max_in_flight)
        self.key = key
        self.placement = placement
        self.median_s = median_s  # per batch size 0..cap: service time's median (seconds)
        self.sigma = sigma  # and lognormal sigma
        self.device = device
        self.variant_index = variant_index
        self.device_index = device_index
        self.wake_at: float | None = None
        self.retired = False
        self.running = 0  # batches of this route running on the device (at most `lanes`)
        self.waiting: deque[tuple[list[Request], float]] = deque()  # (batch, sent_at) sent while every lane was busy
        self.others: tuple[SimRoute, ...] = ()  # the device's other routes, in its order (`Device.routes_changed`)


def busy_others(route: SimRoute) -> int:
    """How many of the route's device's other routes have a batch in flight (as the shim sees it)."""
    n = 0
    for r in route.others:
        if r.flight.last is not None:
            n += 1
    return n


class Hardware:
    """The devices' time: batches start on a free lane or wait for one, run at the device's
    shared speed, and finish with a `DONE` event on `events` (payload: (job, version))."""

    def __init__(self, events: Events, seed: int):
        self.events = events
        self.rng = random.Random(seed)
        self.gauss_next: float | None = None  # `_gauss`'s second draw, kept for its next call

    def submit(self, route: SimRoute, batch: list[Request], now: float) -> None:
        if route.running < route.lanes:
            self._start(route, batch, now, now)
        else:
            route.waiting.append((batch, now))

    def finish(self, job: Job, now: float) -> None:
        """`job`'s completion event fired: free its lane for the route's next batch, if one waits."""
        route = job.route
        dev = route.device
        self._share(dev, now)
        dev.running.remove(job)
        if route.waiting:  # its lane goes to the route's next batch
            nbatch, nsent = route.waiting.popleft()
            dev.running.append(Job(route, nbatch, nsent, self.service_s(route, len(nbatch), now)))
        else:
            route.running -= 1
            if route.running == 0:
                dev.sharing -= 1
        self._reschedule(dev, now)

    def service_s(self, route: SimRoute, b: int, now: float) -> float:
        """A batch of b's time on the device alone, starting at `now`: the p50 at b, or a draw
        around it (noise), times the device's slowdown then."""
        if b >= len(route.median_s):  # beyond the modelled cap (should not happen): extend linearly
            service = route.median_s[-1] * b / (len(route.median_s) - 1)
        else:
            service = route.median_s[b]
            sigma = route.sigma[b]
            if sigma > 0:
                service *= math.exp(sigma * self._gauss())
        slowdown = route.device.slowdown
        if slowdown:
            i = int(now / route.device.window_s)
            service *= slowdown[i] if i < len(slowdown) else slowdown[-1]
        return service

    def _start(self, route: SimRoute, batch: list[Request], sent_at: float, now: float) -> None:
        dev = route.device
        self._share(dev, now)
        if route.running == 0:
            dev.sharing += 1
        route.running += 1
        dev.running.append(Job(route, batch, sent_at, self.service_s(route, len(batch), now)))
        self._reschedule(dev, now)

    def _share(self, dev: Device, now: float) -> None:
        """Bring the running jobs' work up to `now` at the old shares (call before a change)."""
        elapsed = now - dev.updated_at
        if elapsed > 0 and dev.running:
            rate = 1.0 / dev.sharing
            for j in dev.running:
                j.work_s -= elapsed * rate
        dev.updated_at = now

    def _reschedule(self, dev: Device, now: float) -> None:
        """Completion events for the running jobs at the new shares (older events go stale)."""
        if not dev.running:
            return
        share = dev.sharing
        events = self.events
        heap = events.heap
        for j in dev.running:
            j.version += 1
            events.seq += 1
            heappush(heap, (now + (j.work_s if j.work_s > 0.0 else 0.0) * share, events.seq, DONE, (j, j.version)))

    def _gauss(self) -> float:
        """A standard normal draw: `random.Random.gauss(0, 1)` (Box-Muller, two draws per pair of
        uniforms; the same numbers from the same seed), written out so that it is compiled too."""
        z = self.gauss_next
        self.gauss_next = None
        if z is None:
            x2pi = self.rng.random() * (2.0 * math.pi)
            g2rad = math.sqrt(-2.0 * math.log(1.0 - self.rng.random()))
            z = math.cos(x2pi) * g2rad
            self.gauss_next = math.sin(x2pi) * g2rad
        return z
