"""The client an application embeds: `infer(family, inputs)` through the plan's routes.

    from orchestrator.shim import Client
    with Client(plan, {"cpu0": "127.0.0.1:8001"}, catalog="model_repository") as client:
        result = client.infer("resnet", image, deadline_ms=100)   # image: float32 (3, 224, 224)
        result.status, result.variant, result.device_id, result.output.argmax()

    client = Client("http://control-plane:8080")   # plan, endpoints (and catalog) polled from there

Each request is checked against the catalog, routed over the plan's routes (route_set.py over
dataplane/routing.py), queued on its (device, variant) route where the batching policy
(dataplane/batching.py) forms batches (worker.py), and answered exactly once with a `Result`. A
new plan takes over without losing a request: new requests use the new routes, queued ones
finish on the old. A failed batch's requests are tried once more on another device where their
deadline allows. docs/shim.md has the whole picture.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import fields, replace
from os import PathLike

import numpy as np

from orchestrator.catalog import Catalog, Variant
from orchestrator.dataplane.config import ShimConfig
from orchestrator.dataplane.routes import RouteSpec, latency_model, plan_routes
from orchestrator.dataplane.transport import Transport
from orchestrator.plan import Plan
from orchestrator.profiles import ProfileSet
from orchestrator.shim.answers import Answers
from orchestrator.shim.inputs import check_inputs
from orchestrator.shim.metrics_http import MetricsServer, state_text
from orchestrator.shim.plan_source import Contact, Endpoint, PlanFollower, PublishedPlan, parse_endpoints
from orchestrator.shim.result import Result
from orchestrator.shim.route_set import RouteSet
from orchestrator.shim.transport import TritonTransport, describe_failure
from orchestrator.shim.worker import RouteKey, RouteStopped, RouteWorker, ShimRequest
from orchestrator.telemetry import Telemetry

log = logging.getLogger(__name__)

__all__ = ["Client", "Result", "ShimConfig"]


class Client:
    """Thread-safe inference client over a plan's routes.

    `plan_source`: a Plan (then `endpoints` {device_id: "host:port" (gRPC)} is required) or the
    control plane's URL. `catalog`: a Catalog or the model repository / variants.json path; with
    a URL source it may come with the plan instead. `profiles` + `device_classes` (or the
    endpoints' device_class) give each route its latency model; routes without profiles learn
    one from the latencies they observe. `transport` ((route key, variant) -> Transport) replaces
    Triton over gRPC, e.g. with dataplane/transport.py's FakeTransport. Settings: the fields of
    `ShimConfig`.
    """

    def __init__(self, plan_source: Plan | str, endpoints: Mapping[str, str | Mapping] | None = None, *,
                 catalog: Catalog | str | PathLike | None = None, profiles: ProfileSet | None = None,
                 device_classes: Mapping[str, str] | None = None, config: ShimConfig | None = None,
                 transport: Callable[[RouteKey, Variant], Transport] | None = None, **settings):
        unknown = set(settings) - {f.name for f in fields(ShimConfig)}
        if unknown:
            raise TypeError(f"unknown setting(s) {sorted(unknown)}; see ShimConfig")
        self.config = replace(config or ShimConfig(), **settings)
        self.client_id = self.config.client_id or f"{self.config.client_kind}-{uuid.uuid4().hex[:8]}"
        self.telemetry = Telemetry()
        self._answers = Answers(self.telemetry)
        self.counts = self._answers.counts  # submitted, answered, each Status's value, retries, ... (read-only)
        self._routes = RouteSet(self.config)  # guarded by _lock
        self.health = self._routes.health
        self._profiles = profiles
        self._transport = transport  # (route, variant) -> Transport; default Triton over gRPC
        self._device_classes = dict(device_classes or {})
        self._catalog = catalog if isinstance(catalog, Catalog) or catalog is None else Catalog.load(catalog)
        self._endpoints: dict[str, Endpoint] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._closed = False
        self._follower: PlanFollower | None = None
        self._metrics: MetricsServer | None = None

        if isinstance(plan_source, Plan):
            if endpoints is None:
                raise ValueError("a Plan source needs endpoints {device_id: 'host:port'}")
            self.set_plan(plan_source, endpoints)
        elif isinstance(plan_source, str):
            self._follower = PlanFollower(plan_source, self._install_published, self.telemetry, self.client_id,
                                          self._answers.count, self.config.poll_s, self.config.telemetry_s,
                                          client_kind=self.config.client_kind)
            self._follower.collect = self._collect_batches
            self._follower.start(self.config.plan_wait_s)  # raises ConnectionError / ValueError when no plan comes
        else:
            raise TypeError(f"plan_source must be a Plan or the control plane's URL, got {type(plan_source).__name__}")
        if self.config.metrics_port is not None:
            self._metrics = MetricsServer(self.prometheus_text, self.config.metrics_port)

    @property
    def metrics_port(self) -> int | None:
        """Where the Prometheus text is served (None: not served)."""
        return self._metrics.port if self._metrics is not None else None

    # --- the plan ---------------------------------------------------------------------------

    @property
    def plan(self) -> Plan | None:
        return self._routes.table.plan if self._routes.table else None

    @property
    def catalog(self) -> Catalog | None:
        return self._catalog

    def routes_of(self, family: str) -> list[str]:
        """The variants the plan in force sends `family`'s requests to, the planned ones first."""
        with self._lock:
            table = self._routes.table
            if table is None or family not in table.plan.families:
                return []
            names = [r.variant for r in table.planned_routes(family)] + [r.variant for r in table.routes(family)]
        return list(dict.fromkeys(names))

    def set_plan(self, plan: Plan, endpoints: Mapping[str, str | Mapping] | None = None,
                 catalog: Catalog | None = None) -> None:
        """Switch to `plan`. New requests use its routes at once; requests queued on routes it
        drops finish there (their workers drain, then stop)."""
        eps = parse_endpoints(endpoints) if endpoints is not None else self._endpoints
        cat = catalog or self._catalog
        if cat is None:
            raise ValueError("no catalog: pass catalog= (a Catalog or the model repository path)")
        specs = plan_routes(plan, cat, self.config.routing, eps)  # ValueError: no endpoint, not in the catalog
        with self._lock:
            if self._closed:
                raise RuntimeError("client is closed")
            self._routes.install(plan, specs, eps, cat,
                                 lambda key, spec: self._new_worker(key, spec, cat.variants[spec.variant],
                                                                    eps[spec.device_id]))
            self._endpoints = eps
            self._catalog = cat
        log.info("shim %s: plan version %d, %d routes", self.client_id, plan.version, len(specs))

    def _install_published(self, published: PublishedPlan) -> None:
        """The control plane's plan, unless it is the one in force on the same endpoints."""
        current = self.plan
        if current is None or published.plan.version != current.version or published.endpoints != self._endpoints:
            self.set_plan(published.plan, {d: vars(e) for d, e in published.endpoints.items()},
                          catalog=published.catalog)

    def _new_worker(self, key: RouteKey, spec: RouteSpec, variant: Variant, endpoint: Endpoint) -> RouteWorker:
        device_class = self._device_classes.get(key.device_id) or endpoint.device_class
        model = latency_model(spec, self._profiles, device_class, self.config.percentile)
        transport = (self._transport(key, variant) if self._transport is not None else
                     TritonTransport(key.url, key.variant, variant.inputs, variant.outputs, self.config.call_timeout_s))
        return RouteWorker(key, spec, variant.inputs, variant.outputs, model, self.config, self, transport)

    # --- requests ---------------------------------------------------------------------------

    def infer(self, family: str, inputs: Mapping[str, np.ndarray] | np.ndarray, deadline_ms: float | None = None,
              serve_late: bool = False, variant: str | None = None) -> Result:
        """Send one request and wait for its Result. See `infer_async`."""
        return self._enqueue(family, inputs, deadline_ms, serve_late, variant, blocking=True).result()

    async def ainfer(self, family: str, inputs: Mapping[str, np.ndarray] | np.ndarray,
                     deadline_ms: float | None = None, serve_late: bool = False) -> Result:
        """asyncio form of `infer`."""
        return await asyncio.wrap_future(self.infer_async(family, inputs, deadline_ms, serve_late))

    def infer_async(self, family: str, inputs: Mapping[str, np.ndarray] | np.ndarray,
                    deadline_ms: float | None = None, serve_late: bool = False,
                    variant: str | None = None) -> Future:
        """Queue one request (one sample); the Future resolves to its Result, exactly once.

        `deadline_ms` counts from now; None means the family's SLO from the plan (none if the plan
        has none). A request that cannot meet its deadline is answered at once with status
        dropped and no outputs, unless `serve_late`: then it is served and marked late.
        `variant` pins the request to that variant of the family (unserved where the plan does
        not route to it). Raises ValueError for an unknown family or inputs that do not match the
        catalog.
        """
        return self._enqueue(family, inputs, deadline_ms, serve_late, variant, blocking=False)

    def _enqueue(self, family: str, inputs: Mapping[str, np.ndarray] | np.ndarray, deadline_ms: float | None,
                 serve_late: bool, variant: str | None, *, blocking: bool) -> Future:
        if deadline_ms is not None and not deadline_ms > 0:
            raise ValueError(f"deadline_ms must be > 0, got {deadline_ms}")
        now = time.monotonic()
        with self._lock:
            if self._closed:
                raise RuntimeError("client is closed")
            table = self._routes.table
            assert table is not None and self._catalog is not None
            variants = self._catalog.variants
            routes = table.planned_routes(family)  # ValueError for an unknown family
            if variant is not None:
                routes = [r for r in table.routes(family) if r.variant == variant]
            if routes:  # check against the family's first variant before the pick uses a turn
                arrays, batched = check_inputs(routes[0].variant, variants[routes[0].variant].inputs, inputs)
            slo = table.plan.families[family].slo_ms
            budget_ms = deadline_ms if deadline_ms is not None else (slo if slo > 0 else None)
            deadline_s = now + budget_ms / 1000.0 if budget_ms is not None else None
            worker = self._routes.pick(family, now, deadline_s, variant=variant, shed=not serve_late)
            shed = worker is None and table.shed_last
            future: Future = Future()
            request_id = next(self._ids)
            self._answers.count("submitted")
            self.telemetry.record_arrival(family, time.time())
            version = table.plan.version
            if worker is not None:
                if variants[worker.key.variant].inputs != variants[routes[0].variant].inputs:
                    arrays, batched = check_inputs(worker.key.variant, variants[worker.key.variant].inputs, inputs)
                request = ShimRequest(request_id, family, arrays, batched, now, deadline_s,
                                      serve_late, future, table.plan.version, blocking=blocking, variant=variant)
        if shed:
            self._answers.shed(future, family, budget_ms or 0.0, request_id, version)
        elif worker is None:
            what = f"family {family!r}" + (f" has no route to {variant!r}" if variant else " has no route")
            self._answers.unserved(future, family, 0.0, f"{what} in plan version {version}", request_id, version)
        else:
            self._submit(worker, request)
        return future

    def _submit(self, worker: RouteWorker, request: ShimRequest) -> None:
        """Hand a request to a route worker, outside the client lock (the worker may start the
        send in this thread). A worker that drained and stopped meanwhile (a plan swap) gets it
        routed again on the current plan."""
        while True:
            try:
                worker.submit(request)
                return
            except RouteStopped:
                with self._lock:
                    table = self._routes.table
                    known = table is not None and request.family in table.plan.families
                    retry = (self._routes.pick(request.family, time.monotonic(), variant=request.variant)
                             if known else None)
                if retry is None:
                    self._answers.unserved(request.future, request.family,
                                           (time.monotonic() - request.arrival_s) * 1000.0,
                                           f"family {request.family!r} has no route any more", request.id,
                                           request.plan_version)
                    return
                worker = retry

    # --- answers (route workers call these three: worker.RouteOwner) -------------------------

    def answer_served(self, worker: RouteWorker, batch: list[ShimRequest], outputs: dict[str, np.ndarray],
                      now: float, service_s: float = 0.0) -> None:
        with self._lock:
            self.health.mark_ok(worker.key.device_id)
            self.health.mark_ok(f"{worker.key.device_id}/{worker.key.variant}")
        self._answers.served(worker.key, batch, outputs, now, service_s)

    def answer_dropped(self, worker: RouteWorker, request: ShimRequest, now: float) -> None:
        self._answers.dropped(worker.key, request, now)

    def batch_cut(self, worker: RouteWorker, batch: list[ShimRequest], now: float, waited_s: float) -> None:
        """The batch's call was cut at its deadline: each request missed it (dropped, with the
        reason); the device is not marked failed (a slow batch is not a dead device: the control
        plane's health probes see one that hangs)."""
        self._answers.count("cut_calls")
        for r in batch:
            self._answers.cut(worker.key, r, now, waited_s)

    def batch_failed(self, worker: RouteWorker, batch: list[ShimRequest], error: Exception) -> None:
        """Retry each request once on another device of its family if its deadline allows; answer
        the rest with an error naming the device."""
        now = time.monotonic()
        key = worker.key
        unreachable, message = describe_failure(key.device_id, key.url, key.variant, error)
        failed: list[ShimRequest] = []
        retries: list[tuple[RouteWorker, ShimRequest]] = []
        with self._lock:
            self.health.mark_failed(key.device_id if unreachable else f"{key.device_id}/{key.variant}", now)
            self._answers.count("failed_calls")
            for r in batch:
                r.tried.append(key.device_id)
                target = None if self._closed else self._routes.retry_target(r, now)
                if target is None:
                    failed.append(r)
                    continue
                self._answers.count("retries")
                self.telemetry.record_retry(r.family, time.time())
                retries.append((target, r))
        for target, r in retries:
            self._submit(target, r)
        log.warning("shim %s: %s (%d requests)", self.client_id, message, len(batch))
        for r in failed:
            self._answers.failed(key, r, now, message)

    def _collect_batches(self) -> None:
        """Move each route's batch counts and lone batch times into the telemetry (reported with it)."""
        with self._lock:
            workers = self._routes.everything()
        for w in workers:
            sent, alone = w.take_speed()
            placement = w.spec.placement
            self.telemetry.record_batches(w.key.device_id, w.key.variant, placement.instances, placement.threads,
                                          sent, alone)

    # --- state, shutdown --------------------------------------------------------------------

    def contact(self) -> Contact | None:
        """How the plan fetches from the control plane go (None: the plan is set in process)."""
        return self._follower.contact(time.time()) if self._follower is not None else None

    def prometheus_text(self) -> str:
        """The telemetry's running totals and gauges of the routes' queues, the plan and the
        control plane (what `metrics_port` serves)."""
        queued: dict[tuple[str, str], int] = {}
        with self._lock:
            for w in self._routes.everything():
                pair = (w.key.device_id, w.key.variant)
                queued[pair] = queued.get(pair, 0) + w.queued()
            version = self.plan.version if self.plan else None
        return self.telemetry.prometheus_text() + state_text(queued, version, self.contact())

    def stats(self) -> dict:
        """Request counters and the queue depth of every route (current and draining)."""
        with self._lock:
            routes = self._routes.stats()
        return {"counts": self._answers.snapshot(), **routes, "plan_version": self.plan.version if self.plan else None}

    def close(self, timeout_s: float | None = None) -> None:
        """Stop taking requests, answer every queued one, stop the threads. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers = self._routes.everything()
            for w in workers:
                w.drain()
        if self._follower is not None:
            self._follower.stop(timeout_s)
        for w in workers:
            w.join(timeout_s)
        if self._follower is not None:
            self._follower.post_telemetry(time.time() + 1.0)  # the last (partial) second too
        if self._metrics is not None:
            self._metrics.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
