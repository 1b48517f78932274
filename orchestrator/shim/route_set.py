"""The client's routes: one `RouteWorker` per (device, variant) route of the plan in force, the
workers of earlier plans still draining, and the picks over them (routing, device health,
on-time prediction, the retry target).

Not thread-safe by itself: the client calls it under its lock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from orchestrator.catalog import Catalog
from orchestrator.dataplane.backlog import answer_by
from orchestrator.dataplane.config import Routing, ShimConfig
from orchestrator.dataplane.routes import RouteSpec
from orchestrator.dataplane.routing import DeviceHealth, RoutingTable
from orchestrator.plan import Plan, Route
from orchestrator.shim.plan_source import Endpoint
from orchestrator.shim.worker import RouteKey, RouteWorker, ShimRequest

Pair = tuple[str, str]  # (device_id, variant)


class RouteSet:
    def __init__(self, config: ShimConfig):
        self.config = config
        self.health = DeviceHealth(config.health_cooldown_s)
        self.workers: dict[Pair, RouteWorker] = {}  # the plan in force
        self.draining: list[RouteWorker] = []  # routes the plan dropped, answering what they queued
        self.table: RoutingTable | None = None
        self._device_sends: dict[str, list[int]] = {}  # device -> batches its workers sent there (one counter each)

    def install(self, plan: Plan, specs: Mapping[Pair, RouteSpec], endpoints: Mapping[str, Endpoint],
                catalog: Catalog, new_worker: Callable[[RouteKey, RouteSpec], RouteWorker]) -> None:
        """Switch to `plan`'s routes: a route whose device, address and placement are unchanged
        keeps its worker (queue, policy state, calibration); the others drain and stop."""
        workers: dict[Pair, RouteWorker] = {}
        for pair, spec in specs.items():
            key = RouteKey(spec.device_id, spec.variant, endpoints[spec.device_id].grpc)
            old = self.workers.get(pair)
            if old is not None and old.key == key and spec.keeps(old.spec.placement):
                old.update(spec)
                workers[pair] = old
            else:
                workers[pair] = new_worker(key, spec)
        for pair, w in self.workers.items():
            if workers.get(pair) is not w:
                w.drain()
                self.draining.append(w)
        self.draining = [w for w in self.draining if not w.done]
        on_device: dict[str, list[RouteWorker]] = {}  # draining workers too: they still run batches
        for w in list(workers.values()) + self.draining:
            on_device.setdefault(w.key.device_id, []).append(w)
        for device_id, peers in on_device.items():
            sends = self._device_sends.setdefault(device_id, [0])
            for w in peers:
                w.peers = [o for o in peers if o is not w]
                w.device_sends = sends
        self.workers = workers
        accuracy = ({name: v.accuracy for name, v in catalog.variants.items()}
                    if self.config.routing == Routing.ACCURACY_FIRST else None)
        self.table = RoutingTable(plan, previous=self.table, accuracy=accuracy)

    def everything(self) -> list[RouteWorker]:
        return list(self.workers.values()) + self.draining

    def pick(self, family: str, now: float, deadline_s: float | None = None,
             exclude_devices: list[str] | None = None, variant: str | None = None,
             shed: bool = True) -> RouteWorker | None:
        """The worker of the route a request of `family` arriving at `now` goes to (None: the
        plan has no route for it, or, with `shed`, the request would be late on every route:
        `table.shed_last` tells which). With a deadline, routing weighs each route's predicted
        answer time against it (accuracy-first); `variant` pins the request to that variant's
        routes."""
        assert self.table is not None
        budget_use = self._budget_use(now, deadline_s) if deadline_s is not None else None
        route = self.table.pick(family, self._healthy(now), exclude_devices=exclude_devices or (), now=now,
                                budget_use=budget_use, variant=variant, idle=self._idle, shed=shed)
        return self.workers[(route.device_id, route.variant)] if route is not None else None

    def retry_target(self, r: ShimRequest, now: float) -> RouteWorker | None:
        """Where a request whose batch failed is sent once more: another healthy device of its
        family that can still answer it alone by its deadline (None: answer it with the error)."""
        if len(r.tried) > 1 or self.table is None or r.family not in self.table.plan.families:
            return None
        target = self.pick(r.family, now, deadline_s=r.deadline_s, exclude_devices=r.tried, variant=r.variant)
        if target is None:  # only spill routes (weight 0) are left elsewhere: a warm spare takes it
            healthy = self._healthy(now)
            spare = next((route for route in self.table.routes(r.family) if route.device_id not in r.tried
                          and (r.variant is None or route.variant == r.variant) and healthy(route)), None)
            target = self.workers.get((spare.device_id, spare.variant)) if spare is not None else None
        if target is None or (r.deadline_s is not None and now + target.latency_s(1) > r.deadline_s):
            return None
        return target

    def _healthy(self, now: float) -> Callable[[Route], bool]:
        health = self.health
        return lambda r: health.healthy(r.device_id, now) and health.healthy(f"{r.device_id}/{r.variant}", now)

    def _budget_use(self, now: float, deadline_s: float) -> Callable[[Route], float]:
        """The routing's `budget_use` for a request arriving at `now`: the share of its time
        budget the route would use, from its worker's queue and batches in flight and how many
        other routes on its device are busy (draining routes included), scaled by the route's
        calibration (dataplane/backlog.py)."""
        limit = deadline_s - self.config.slack_ms / 1000.0

        def budget_use(route: Route) -> float:
            w = self.workers.get((route.device_id, route.variant))
            if w is None:
                return math.inf
            queued, own = w.backlog(now)
            by = answer_by(now, queued, w.batch_cap, w.model, own, w.busy_peers())
            return w.calibration.budget_use(now, by, limit)
        return budget_use

    def _idle(self, route: Route) -> bool:
        """Whether the route's device has nothing to do: no batch in flight, nothing queued, on
        any of its routes (read without the workers' locks: an int and a length each)."""
        w = self.workers.get((route.device_id, route.variant))
        return w is not None and all(v.state.idle() for v in (w, *w.peers))

    def stats(self) -> dict:
        return {"routes": {str(w.key): {"queued": w.queued(), "batches": w.batches_sent, "requests": w.requests_sent}
                           for w in self.workers.values()},
                "draining": {str(w.key): w.queued() for w in self.draining if not w.done}}
