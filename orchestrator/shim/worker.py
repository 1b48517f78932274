"""One route's worker: a queue, the batching policy, and a transport to one model on one device
(Triton over gRPC, shim/transport.py; in-process in tests).

The batching policy (dataplane/batching.py) runs on the queue whenever something changes (a
request arrives, a batch returns, a timer the policy asked for fires). A batch still out when its
last deadline (plus a margin) has passed is *cut*: its requests are answered then, as deadline
misses, while the batch itself stays in flight until Triton answers it (Triton goes on working on
it; counting it as done would send the device more than it can see through). At most `instances`
batches run at Triton plus `pipeline` waiting there, so the device does not idle between
batches; the policy is told when a batch sent now would start (`start_s`). Deciding (and
dropping hopeless requests) goes on while batches are in flight. Answers go back through the `RouteOwner`
callbacks (the Client), which also handles failures (retry on another route).
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol, cast

import numpy as np

from orchestrator.catalog import TensorSpec
from orchestrator.dataplane.backlog import Calibration
from orchestrator.dataplane.batching import Policy
from orchestrator.dataplane.config import ShimConfig
from orchestrator.dataplane.latency import LatencyModel
from orchestrator.dataplane.route_state import RouteState
from orchestrator.dataplane.routes import RouteSpec, route_policy, set_hold
from orchestrator.dataplane.transport import Transport


class RouteStopped(RuntimeError):
    """The route's worker has drained and stopped: route the request again."""


@dataclass(frozen=True)
class RouteKey:
    """A (device, variant) route at one endpoint; a changed endpoint is a new route."""

    device_id: str
    variant: str
    url: str  # gRPC host:port

    def __str__(self) -> str:
        return f"{self.device_id}/{self.variant}@{self.url}"


@dataclass(eq=False)
class ShimRequest:
    """One caller's request, from `infer` to its answer. Times are time.monotonic() seconds."""

    id: int
    family: str
    inputs: dict[str, np.ndarray]  # one sample each, no batch dimension
    batched: bool  # the caller gave a leading batch dimension of 1: answer with one too
    arrival_s: float
    deadline_s: float | None
    serve_late: bool
    future: Future
    plan_version: int
    blocking: bool = False  # the caller waits for the answer in `infer` (its thread may send the batch)
    tried: list[str] = field(default_factory=list)  # device ids that failed it
    variant: str | None = None  # pinned to this variant's routes (None: the plan's choice)


class RouteOwner(Protocol):
    def answer_served(self, worker: "RouteWorker", batch: list[ShimRequest], outputs: dict[str, np.ndarray],
                      now: float, service_s: float = 0.0) -> None: ...

    def answer_dropped(self, worker: "RouteWorker", request: ShimRequest, now: float) -> None: ...

    def batch_failed(self, worker: "RouteWorker", batch: list[ShimRequest], error: Exception) -> None: ...

    def batch_cut(self, worker: "RouteWorker", batch: list[ShimRequest], now: float, waited_s: float) -> None: ...


class RouteWorker:
    """Queue + policy + one transport for one (device, variant) route."""

    def __init__(self, key: RouteKey, spec: RouteSpec, inputs: tuple[TensorSpec, ...],
                 outputs: tuple[TensorSpec, ...], model: LatencyModel, config: ShimConfig, owner: RouteOwner,
                 transport: Transport):
        self.key = key
        self.spec = spec
        self.input_specs = inputs
        self.output_specs = outputs
        self.config = config
        self.owner = owner
        self.instances = max(1, spec.placement.instances)  # batches Triton runs at once on this route
        # queue, policy, batches in flight, calibration (dataplane/route_state.py, as the simulator's routes)
        self.state = RouteState(route_policy(spec, model, config), model, lanes=self.instances,
                                max_in_flight=self.instances + max(0, config.pipeline))  # plus batches waiting at Triton
        self.batches_sent = 0
        self.requests_sent = 0
        self.peers: list[RouteWorker] = []  # the other workers on its device (the client sets them)
        self.device_sends = [0]  # batches sent to its device by this client's workers (shared with its peers)
        self._draining = False
        self._stopped = False
        self._wake_target = math.inf  # when the worker thread will wake next (-inf: it is awake)
        self._cuts: dict[int, tuple[float, float, list[ShimRequest]]] = {}  # batch id -> (cut at, sent at, batch)
        self._cut_done: set[int] = set()  # batches whose requests were answered at their cut
        self._cond = threading.Condition()
        self._transport = transport
        self._thread = threading.Thread(target=self._run, name=f"shim-route-{key}", daemon=True)
        self._thread.start()

    # --- called by the client -------------------------------------------------------------

    def submit(self, request: ShimRequest) -> None:
        """Queue a request. When the route has a free slot the policy runs right here, in the
        caller's thread, so an immediate send costs no thread hop: call it holding no lock that
        the answer callbacks take."""
        with self._cond:
            if self._stopped:
                raise RouteStopped(f"route {self.key} has stopped")
            self.state.queue.add(request)
            now = time.monotonic()
            dropped, batch, _ = self._step(now)
        if request.blocking and any(r is request for r in batch):
            for r in dropped:
                self.owner.answer_dropped(self, r, now)
            self._send(batch, wait=True)
        else:
            self._act(dropped, batch, now)

    def update(self, spec: RouteSpec) -> None:
        """Take a new plan's spec of this route (`spec.keeps` its placement): batch cap, spill
        or not (how long it may hold a queue)."""
        with self._cond:
            self.spec = spec
            set_hold(self.state.policy, spec, self.state.model, self.config)
            self.state.batch_cap = getattr(self.state.policy, "batch_cap", 1)
            self._cond.notify()

    def latency_s(self, batch_size: int) -> float:
        """The predicted latency of a batch of `batch_size`."""
        return self.state.model.seconds(batch_size)

    @property
    def policy(self) -> Policy:
        return self.state.policy

    @property
    def model(self) -> LatencyModel:
        return self.state.model

    @property
    def calibration(self) -> Calibration:
        return self.state.calibration

    @property
    def max_in_flight(self) -> int:
        return self.state.max_in_flight

    def drain(self) -> None:
        """Take no more requests from routing; finish the queue, then stop."""
        with self._cond:
            self._draining = True
            self._cond.notify()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def queued(self) -> int:
        with self._cond:
            return len(self.state.queue) + self.state.in_flight

    @property
    def batch_cap(self) -> int:
        return self.state.batch_cap

    def take_speed(self) -> tuple[int, dict[int, list[float]]]:
        """The route's batches since the last call (RouteState.take_speed), under its lock."""
        with self._cond:
            return self.state.take_speed()

    def busy_peers(self) -> int:
        """How many of the device's other routes have a batch in flight. Read without their
        locks (an int each): a count one batch stale moves one prediction, not a decision rule."""
        return sum(1 for w in self.peers if w.state.in_flight > 0)

    def backlog(self, now: float) -> tuple[int, float]:
        """What `backlog.answer_by` needs at `now` (time.monotonic): requests queued here, and the
        time left on the batches in flight (`InFlight.seconds`)."""
        with self._cond:
            return len(self.state.queue), self.state.flight.seconds(now)

    # --- deciding and acting ---------------------------------------------------------------
    # The policy runs under the lock wherever something changed: in `submit` (caller thread), in
    # `_done` (gRPC callback thread) and in the worker thread, which exists for the timers the
    # policy asks for (hold until, drop at). Sending and answering happen outside the lock.

    def _step(self, now: float) -> tuple[list[ShimRequest], list[ShimRequest], float | None]:
        """One policy decision (lock held): pop what it drops and the batch it sends; make sure
        the worker thread wakes by the time the policy asked for (also returned)."""
        state = self.state
        d = state.decide(now)
        dropped = cast("list[ShimRequest]", state.queue.take(d.drop))  # the worker queues only ShimRequests
        batch = cast("list[ShimRequest]", state.queue.take(d.send))
        if batch:
            self.device_sends[0] += 1
            state.sent(id(batch), len(batch), now, self.busy_peers(), self.device_sends[0])
        if d.wake_at is not None and d.wake_at < self._wake_target:
            self._cond.notify()
        return dropped, batch, d.wake_at

    def _act(self, dropped: list[ShimRequest], batch: list[ShimRequest], now: float) -> None:
        for r in dropped:
            self.owner.answer_dropped(self, r, now)
        if batch:
            self._send(batch)

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while True:
                        if self._draining and not self.state.queue and self.state.in_flight == 0:
                            self._stopped = True
                            return
                        now = time.monotonic()
                        self._wake_target = -math.inf  # awake: nobody needs to wake us
                        cuts = self._due_cuts(now)
                        dropped, batch, wake = self._step(now)
                        if dropped or batch or cuts:
                            break
                        target = min(math.inf if wake is None else wake,
                                     min((c[0] for c in self._cuts.values()), default=math.inf))
                        self._wake_target = target
                        self._cond.wait(None if target == math.inf else max(0.0, target - now))
                for sent_at, cut in cuts:
                    self.owner.batch_cut(self, cut, now, now - sent_at)
                self._act(dropped, batch, now)
        finally:
            self._transport.close()

    def _send(self, batch: list[ShimRequest], wait: bool = False) -> None:
        """Send a batch: asynchronously, or (`wait`) in this thread, for a caller that blocks
        on a request of this batch anyway (one thread hop fewer on its way back)."""
        started = time.monotonic()
        try:
            inputs = {spec.name: (batch[0].inputs[spec.name][None] if len(batch) == 1
                                  else np.stack([r.inputs[spec.name] for r in batch]))
                      for spec in self.input_specs}
            self.batches_sent += 1
            self.requests_sent += len(batch)
            cut_s = self._cut_s(batch, started)
            if cut_s < self.config.call_timeout_s:
                with self._cond:
                    self._cuts[id(batch)] = (started + cut_s, started, batch)
                    if started + cut_s < self._wake_target:
                        self._cond.notify()
                wait = False  # the caller is answered at the cut, if it comes first: not from this call
            timeout_s = self.config.call_timeout_s
            if wait:
                outputs = self._transport.infer(inputs, timeout_s)
            else:
                self._transport.infer_async(inputs, lambda outputs, error: self._done(batch, started, outputs, error),
                                            timeout_s)
                return
        except Exception as e:  # the call failed, or could not even start
            self._done(batch, started, None, e)
            return
        self._done(batch, started, outputs, None)

    def _due_cuts(self, now: float) -> list[tuple[float, list[ShimRequest]]]:
        """(sent at, batch) of the batches in flight whose cut time has come (lock held)."""
        due = [(bid, sent_at, batch) for bid, (cut_at, sent_at, batch) in self._cuts.items() if cut_at <= now]
        for bid, _, _ in due:
            del self._cuts[bid]
            self._cut_done.add(bid)
        return [(sent_at, batch) for _, sent_at, batch in due]

    def _cut_s(self, batch: list[ShimRequest], now: float) -> float:
        """When, from `now`, the batch's requests are answered if it has not come back: the last
        deadline in it plus `deadline_margin_ms` or the batch's predicted time, whichever is
        longer (a batch that runs a little late still answers); the call timeout where a request
        has no deadline or is to be served late."""
        limit = self.config.call_timeout_s
        if any(r.deadline_s is None or r.serve_late for r in batch):
            return limit
        last = max(cast(float, r.deadline_s) for r in batch)
        margin = max(self.config.deadline_margin_ms / 1000.0, self.state.model.seconds(len(batch)))
        return min(limit, max(0.0, last - now) + margin)

    def _done(self, batch: list[ShimRequest], started: float, outputs: dict[str, np.ndarray] | None,
              error: Exception | None) -> None:
        now = time.monotonic()
        if error is None:
            assert outputs is not None
            for spec in self.output_specs:
                arr = outputs.get(spec.name)
                if arr is None or arr.shape[0] != len(batch):
                    error = RuntimeError(f"output {spec.name!r} missing or not batch {len(batch)} "
                                         f"(got {None if arr is None else arr.shape})")
                    break
        dropped: list[ShimRequest] = []
        follow: list[ShimRequest] = []
        with self._cond:
            service_s = self.state.answered(id(batch), len(batch), started, now, error is None, self.device_sends[0])
            self._cuts.pop(id(batch), None)
            was_cut = id(batch) in self._cut_done  # its requests were answered at the cut
            self._cut_done.discard(id(batch))
            if error is None:
                dropped, follow, _ = self._step(now)  # the next batch goes out before answering this one
                if self._draining:
                    self._cond.notify()  # the worker thread stops once the queue and the flight are empty
            else:
                self._cond.notify()  # the worker thread carries on (no recursion through failing sends)
        self._act(dropped, follow, now)
        if was_cut:
            return
        if error is None:
            self.owner.answer_served(self, batch, outputs, now, service_s)
        else:
            self.owner.batch_failed(self, batch, error)
