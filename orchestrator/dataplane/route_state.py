"""One route's data-plane state: its queue, batching policy, batches in flight, calibration and
the service times of the batches that ran alone on the device (its observed speed), with the
three things a driver does to it (`decide`, `sent`, `answered`).

Written once for the shim's route workers (shim/worker.py: threads, under the worker's lock)
and the simulator's routes (simulation/devices.py); no clock, no I/O, not thread-safe.
Time is whatever clock the driver keeps.
"""

from __future__ import annotations

import math

from orchestrator.dataplane.backlog import Calibration, InFlight
from orchestrator.dataplane.batching import Decision, Policy
from orchestrator.dataplane.latency import LatencyModel
from orchestrator.dataplane.queue import RouteQueue


class RouteState:
    """`lanes`: batches the device runs at once for this route (its Triton instances);
    `max_in_flight`: batches sent and not answered, at most (lanes plus those queued at Triton)."""

    __slots__ = ("policy", "model", "batch_cap", "lanes", "max_in_flight", "queue", "in_flight",
                 "flight", "start_s", "last_done", "calibration", "predicted", "alone", "speed", "sent_batches")

    def __init__(self, policy: Policy, model: LatencyModel, lanes: int, max_in_flight: int):
        self.policy = policy
        self.model = model  # predicted batch latencies
        self.batch_cap: int = getattr(policy, "batch_cap", 1)  # the policy's (kept equal at each plan)
        self.lanes = lanes
        self.max_in_flight = max_in_flight
        self.queue = RouteQueue()  # arrival order, and by deadline for the policy
        self.in_flight = 0
        self.flight = InFlight()  # batch id -> predicted finish (backlog.py)
        self.start_s: float | None = None  # when a batch sent now would start (`InFlight.start_s`)
        self.last_done = -math.inf  # when the latest batch came back
        self.calibration = Calibration()  # actual / predicted time of its batches lately (backlog.py)
        self.predicted: dict[int, tuple[float, float]] = {}  # batch id -> (decided at, predicted time then)
        # batch id -> the device's send count when it was sent alone (nothing else running there)
        self.alone: dict[int, int] = {}
        # batch size -> [batches, their service seconds]: the batches that ran alone, since the last
        # `take_speed` (what the control plane compares with the profile: the device's real speed)
        self.speed: dict[int, list[float]] = {}
        self.sent_batches = 0  # batches sent since the last `take_speed`

    def idle(self) -> bool:
        """Nothing in flight and nothing queued (a device is idle when all its routes are)."""
        return self.in_flight == 0 and not len(self.queue)

    def decide(self, now: float) -> Decision:
        """The policy's decision at `now` over the queue (the caller pops what it drops and sends)."""
        return self.policy.decide(self.queue, now, self.in_flight < self.max_in_flight, self.start_s)

    def sent(self, batch_id: int, size: int, now: float, busy_others: int, device_sends: int = -1) -> None:
        """A batch of `size` decided at `now` is on its way. Its predicted finish counts from when
        a lane frees; its predicted time is stretched by the device's `busy_others` routes with a
        batch in flight (processor sharing, as backlog.py predicts), for calibration.
        `device_sends`: how many batches the driver has sent to the device so far, this one
        included (-1: not counted); a batch sent with nothing else in flight there that finds the
        count unchanged when it is answered ran alone, and its time is the device's speed."""
        start = self.start_s
        finish = (start if start is not None and start > now else now) + self.model.seconds(size)
        if busy_others == 0 and self.in_flight == 0 and device_sends >= 0:
            self.alone[batch_id] = device_sends
        self.sent_batches += 1
        self.in_flight += 1
        self.flight.add(batch_id, finish)
        self.predicted[batch_id] = (now, (finish - now) * (1 + busy_others))
        self.start_s = self.flight.start_s(self.lanes)

    def answered(self, batch_id: int, size: int, sent_at: float, now: float, ok: bool = True,
                 device_sends: int = -1) -> float:
        """The batch came back at `now` (`ok` False: the call failed). Returns its service time:
        from `sent_at`, or from the previous answer where it waited behind that batch (pipelined
        at Triton); the policy and the calibration learn from an answered batch only.
        `device_sends`: the device's send count now (see `sent`)."""
        self.in_flight -= 1
        self.flight.remove(batch_id)
        predicted = self.predicted.get(batch_id)  # get and del, not pop: compiled, pop is a call by name
        if predicted is not None:
            del self.predicted[batch_id]
        self.start_s = self.flight.start_s(self.lanes)
        service_s = now - max(sent_at, self.last_done)
        self.last_done = now
        sends_then = self.alone.get(batch_id)
        if sends_then is not None:
            del self.alone[batch_id]
        alone = sends_then is not None and sends_then == device_sends
        if ok:
            self.policy.observe(size, service_s)
            if predicted is not None:
                self.calibration.answered(predicted[0], predicted[1], now)
            if alone:
                seen = self.speed.get(size)
                if seen is None:
                    self.speed[size] = [1.0, service_s]
                else:
                    seen[0] += 1.0
                    seen[1] += service_s
        return service_s

    def take_speed(self) -> tuple[int, dict[int, list[float]]]:
        """Since the last call: the batches sent, and of those that ran alone on the device,
        batch size -> [batches, service seconds]; the route starts counting afresh."""
        sent, speed = self.sent_batches, self.speed
        self.sent_batches, self.speed = 0, {}
        return sent, speed
