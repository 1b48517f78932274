"""The client an application embeds: `infer(family, inputs)` through the plan's routes.

    from orchestrator.shim import Client
    with Client(plan, {"cpu0": "127.0.0.1:8001"}, catalog="model_repository") as client:
        result = client.infer("resnet", image, deadline_ms=100)   # image: float32 (3, 224, 224)
        result.status, result.variant, result.device_id, result.output.argmax()

    client = Client("http://control-plane:8080")   # plan, endpoints (and catalog) polled from there

Each request is checked against the catalog, routed by the plan's weights (routing.py), queued
on its (device, variant) route where the batching policy (batching.py) forms batches
(worker.py), and answered exactly once with a `Result`. A new plan takes over without losing a
request: new requests use the new routes, queued ones finish on the old. docs/shim.md has the
whole picture.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, fields, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from os import PathLike
from collections.abc import Callable, Mapping

import numpy as np

from orchestrator.backlog import answer_by
from orchestrator.batching import EPS_S
from orchestrator.catalog import Catalog, Variant
from orchestrator.dataplane.config import ShimConfig
from orchestrator.dataplane.routes import RouteSpec, latency_model, plan_routes
from orchestrator.dataplane.status import Status
from orchestrator.dataplane.transport import Transport
from orchestrator.plan import Plan, Route
from orchestrator.profiles import ProfileSet
from orchestrator.routing import DeviceHealth, RoutingTable
from orchestrator.shim.inputs import check_inputs
from orchestrator.shim.plan_source import ControlPlane, Endpoint, parse_endpoints
from orchestrator.shim.transport import TritonTransport
from orchestrator.shim.worker import RouteKey, RouteStopped, RouteWorker, ShimRequest
from orchestrator.telemetry import Telemetry

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Result:
    """The answer to one request."""

    status: Status  # ok | late | dropped (outputs None) | error | unserved (no route)
    outputs: dict[str, np.ndarray] | None  # per output name, one sample (batch dim kept if the input had one)
    variant: str  # the variant that served it (or would have)
    device_id: str
    latency_ms: float  # from infer() to the answer
    error: str = ""
    request_id: int = 0
    plan_version: int = 0
    batch_size: int = 0  # the batch it was served in (0: not served)
    service_ms: float = 0.0  # that batch's time at Triton, sending to answer (what a profile measures)

    @property
    def deadline_met(self) -> bool:
        return self.status is Status.OK

    @property
    def output(self) -> np.ndarray:
        """The only output of a single-output model."""
        if not self.outputs:
            raise ValueError(f"request {self.request_id} has no outputs ({self.status}: {self.error})")
        if len(self.outputs) != 1:
            raise ValueError(f"the model has outputs {sorted(self.outputs)}: use .outputs[name]")
        return next(iter(self.outputs.values()))


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
        self.client_id = self.config.client_id or f"shim-{uuid.uuid4().hex[:8]}"
        self.telemetry = Telemetry()
        self.health = DeviceHealth(self.config.health_cooldown_s)
        self.counts: Counter[str] = Counter()  # submitted, answered, each Status's value, retries, ...
        self._profiles = profiles
        self._transport = transport  # (route, variant) -> Transport; default Triton over gRPC
        self._device_classes = dict(device_classes or {})
        self._catalog = catalog if isinstance(catalog, Catalog) or catalog is None else Catalog.load(catalog)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._closed = False
        self._table: RoutingTable | None = None
        self._endpoints: dict[str, Endpoint] = {}
        self._workers: dict[tuple[str, str], RouteWorker] = {}  # (device_id, variant) of the current plan
        self._draining: list[RouteWorker] = []
        self._control: ControlPlane | None = None
        self._stop = threading.Event()
        self._background: threading.Thread | None = None
        self._metrics_server: ThreadingHTTPServer | None = None
        self.metrics_port: int | None = None

        if isinstance(plan_source, Plan):
            if endpoints is None:
                raise ValueError("a Plan source needs endpoints {device_id: 'host:port'}")
            self.set_plan(plan_source, endpoints)
        elif isinstance(plan_source, str):
            self._control = ControlPlane(plan_source)
            self._refresh_plan()  # the first fetch must work: raises ConnectionError / ValueError
            self._background = threading.Thread(target=self._poll_control_plane, name="shim-control", daemon=True)
            self._background.start()
        else:
            raise TypeError(f"plan_source must be a Plan or the control plane's URL, got {type(plan_source).__name__}")
        if self.config.metrics_port is not None:
            self._serve_metrics(self.config.metrics_port)

    # --- the plan ---------------------------------------------------------------------------

    @property
    def plan(self) -> Plan | None:
        return self._table.plan if self._table else None

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
            workers: dict[tuple[str, str], RouteWorker] = {}
            for pair, spec in specs.items():
                key = RouteKey(spec.device_id, spec.variant, eps[spec.device_id].grpc)
                old = self._workers.get(pair)
                if old is not None and old.key == key and spec.keeps(old.spec.placement):
                    old.update(spec)
                    workers[pair] = old
                else:
                    workers[pair] = self._new_worker(key, spec, cat.variants[spec.variant], eps[spec.device_id])
            for pair, w in self._workers.items():
                if workers.get(pair) is not w:
                    w.drain()
                    self._draining.append(w)
            self._draining = [w for w in self._draining if not w.done]
            on_device: dict[str, list[RouteWorker]] = {}  # draining workers too: they still run batches
            for w in list(workers.values()) + self._draining:
                on_device.setdefault(w.key.device_id, []).append(w)
            for peers in on_device.values():
                for w in peers:
                    w.peers = [o for o in peers if o is not w]
            self._workers = workers
            self._endpoints = eps
            self._catalog = cat
            accuracy = ({name: v.accuracy for name, v in cat.variants.items()}
                        if self.config.routing == "accuracy-first" else None)
            self._table = RoutingTable(plan, previous=self._table, accuracy=accuracy)
        log.info("shim %s: plan version %d, %d routes", self.client_id, plan.version, len(workers))

    def _new_worker(self, key: RouteKey, spec: RouteSpec, variant: Variant, endpoint: Endpoint) -> RouteWorker:
        device_class = self._device_classes.get(key.device_id) or endpoint.device_class
        model = latency_model(spec, self._profiles, device_class, self.config.percentile)
        transport = (self._transport(key, variant) if self._transport is not None else
                     TritonTransport(key.url, key.variant, variant.inputs, variant.outputs, self.config.call_timeout_s))
        return RouteWorker(key, spec, variant.inputs, variant.outputs, model, self.config, self, transport)

    # --- requests ---------------------------------------------------------------------------

    def infer(self, family: str, inputs: Mapping[str, np.ndarray] | np.ndarray, deadline_ms: float | None = None,
              serve_late: bool = False) -> Result:
        """Send one request and wait for its Result. See `infer_async`."""
        return self._enqueue(family, inputs, deadline_ms, serve_late, blocking=True).result()

    async def ainfer(self, family: str, inputs: Mapping[str, np.ndarray] | np.ndarray,
                     deadline_ms: float | None = None, serve_late: bool = False) -> Result:
        """asyncio form of `infer`."""
        return await asyncio.wrap_future(self.infer_async(family, inputs, deadline_ms, serve_late))

    def infer_async(self, family: str, inputs: Mapping[str, np.ndarray] | np.ndarray,
                    deadline_ms: float | None = None, serve_late: bool = False) -> Future:
        """Queue one request (one sample); the Future resolves to its Result, exactly once.

        `deadline_ms` counts from now; None means the family's SLO from the plan (none if the plan
        has none). A request that cannot meet its deadline is answered at once with status
        dropped and no outputs, unless `serve_late`: then it is served and marked late.
        Raises ValueError for an unknown family or inputs that do not match the catalog.
        """
        return self._enqueue(family, inputs, deadline_ms, serve_late, blocking=False)

    def _enqueue(self, family: str, inputs: Mapping[str, np.ndarray] | np.ndarray, deadline_ms: float | None,
                 serve_late: bool, *, blocking: bool) -> Future:
        if deadline_ms is not None and not deadline_ms > 0:
            raise ValueError(f"deadline_ms must be > 0, got {deadline_ms}")
        now = time.monotonic()
        with self._lock:
            if self._closed:
                raise RuntimeError("client is closed")
            table = self._table
            assert table is not None
            routes = table.planned_routes(family)  # ValueError for an unknown family
            if routes:  # check against the family's first variant before the pick uses a turn
                arrays, batched = check_inputs(routes[0].variant, self._catalog.variants[routes[0].variant].inputs,
                                               inputs)
            slo = table.plan.families[family].slo_ms
            budget_ms = deadline_ms if deadline_ms is not None else (slo if slo > 0 else None)
            deadline_s = now + budget_ms / 1000.0 if budget_ms is not None else None
            budget_use = self._budget_use(now, deadline_s) if deadline_s is not None else None
            route = table.pick(family, self._healthy(now), now=now, budget_use=budget_use)
            future: Future = Future()
            request_id = next(self._ids)
            self._count("submitted")
            self.telemetry.record_arrival(family, time.time())
            if route is None:
                missing = Result(Status.UNSERVED, None, "", "", 0.0,
                                 f"family {family!r} has no route in plan version {table.plan.version}",
                                 request_id, table.plan.version)
            else:
                variant = self._catalog.variants[route.variant]
                if variant.inputs != self._catalog.variants[routes[0].variant].inputs:
                    arrays, batched = check_inputs(route.variant, variant.inputs, inputs)
                request = ShimRequest(request_id, family, arrays, batched, now, deadline_s,
                                      serve_late, future, table.plan.version, blocking=blocking)
                worker = self._workers[(route.device_id, route.variant)]
        if route is None:
            self._finish(future, family, missing)
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
                    route = None
                    if self._table is not None and request.family in self._table.plan.families:
                        t = time.monotonic()
                        route = self._table.pick(request.family, self._healthy(t), now=t)
                    worker = self._workers[(route.device_id, route.variant)] if route else None
                if worker is None:
                    self._finish(request.future, request.family,
                                 Result(Status.UNSERVED, None, "", "", (time.monotonic() - request.arrival_s) * 1000.0,
                                        f"family {request.family!r} has no route any more", request.id,
                                        request.plan_version))
                    return

    def _count(self, key: str) -> None:
        with self._count_lock:
            self.counts[key] += 1

    def _budget_use(self, now: float, deadline_s: float) -> Callable[[Route], float]:
        """The routing's `budget_use` for a request arriving at `now` (client lock held): the
        share of the request's time budget the route would use, from its worker's queue and
        batches in flight and how many other routes on its device are busy (draining routes
        included), scaled by the route's calibration (backlog.py)."""
        limit = deadline_s - self.config.slack_ms / 1000.0

        def budget_use(route: Route) -> float:
            w = self._workers.get((route.device_id, route.variant))
            if w is None:
                return math.inf
            queued, own = w.backlog(now)
            by = answer_by(now, queued, w.batch_cap, w.latency_s, own, w.busy_peers())
            return w.calibration.budget_use(now, by, limit)
        return budget_use

    def _healthy(self, now: float):
        return lambda r: (self.health.healthy(r.device_id, now)
                          and self.health.healthy(f"{r.device_id}/{r.variant}", now))

    # --- answers (called by route workers) --------------------------------------------------

    def _finish(self, future: Future, family: str, result: Result) -> None:
        self.telemetry.record_result(family, time.time(), result.status, latency_ms=result.latency_ms,
                                     variant=result.variant, device_id=result.device_id)
        with self._count_lock:
            self.counts["answered"] += 1
            self.counts[result.status.value] += 1
            if future.done():
                self.counts["duplicates" if not future.cancelled() else "cancelled"] += 1
                return
        try:
            future.set_result(result)
        except InvalidStateError:  # cancelled by the caller meanwhile
            with self._count_lock:
                self.counts["cancelled"] += 1

    def answer_served(self, worker: RouteWorker, batch: list[ShimRequest], outputs: dict[str, np.ndarray],
                      now: float, service_s: float = 0.0) -> None:
        with self._lock:
            self.health.mark_ok(worker.key.device_id)
            self.health.mark_ok(f"{worker.key.device_id}/{worker.key.variant}")
        for i, r in enumerate(batch):
            met = r.deadline_s is None or now <= r.deadline_s + EPS_S  # as the simulator and the policies
            outs = {name: (arr[i:i + 1] if r.batched else arr[i]) for name, arr in outputs.items()}
            self._finish(r.future, r.family, Result(Status.OK if met else Status.LATE, outs, worker.key.variant,
                                                    worker.key.device_id, (now - r.arrival_s) * 1000.0, "",
                                                    r.id, r.plan_version, len(batch), service_s * 1000.0))

    def answer_dropped(self, worker: RouteWorker, request: ShimRequest, now: float) -> None:
        left_ms = (request.deadline_s - now) * 1000.0 if request.deadline_s is not None else 0.0
        error = (f"dropped: {left_ms:.1f} ms left before the deadline, less than {worker.key.variant} on "
                 f"{worker.key.device_id} needs")
        self._finish(request.future, request.family,
                     Result(Status.DROPPED, None, worker.key.variant, worker.key.device_id,
                            (now - request.arrival_s) * 1000.0, error, request.id, request.plan_version))

    def batch_failed(self, worker: RouteWorker, batch: list[ShimRequest], error: Exception) -> None:
        """Retry each request once on another device of its family if its deadline allows; answer
        the rest with an error naming the device."""
        now = time.monotonic()
        unreachable, message = _describe_failure(worker.key, error)
        failed: list[ShimRequest] = []
        retries: list[tuple[RouteWorker, ShimRequest]] = []
        with self._lock:
            self.health.mark_failed(worker.key.device_id if unreachable else
                                    f"{worker.key.device_id}/{worker.key.variant}", now)
            self._count("failed_calls")
            for r in batch:
                r.tried.append(worker.key.device_id)
                target = self._retry_target(r, now)
                if target is None:
                    failed.append(r)
                    continue
                self._count("retries")
                self.telemetry.record_retry(r.family, time.time())
                retries.append((target, r))
        for target, r in retries:
            self._submit(target, r)
        log.warning("shim %s: %s (%d requests)", self.client_id, message, len(batch))
        for r in failed:
            tried = f" (devices tried: {', '.join(r.tried)})" if len(r.tried) > 1 else ""
            self._finish(r.future, r.family,
                         Result(Status.ERROR, None, worker.key.variant, worker.key.device_id,
                                (now - r.arrival_s) * 1000.0, message + tried, r.id, r.plan_version))

    def _retry_target(self, r: ShimRequest, now: float) -> RouteWorker | None:
        if len(r.tried) > 1 or self._closed or self._table is None or r.family not in self._table.plan.families:
            return None
        route: Route | None = self._table.pick(r.family, self._healthy(now), exclude_devices=r.tried, now=now)
        if route is None:
            return None
        target = self._workers[(route.device_id, route.variant)]
        if r.deadline_s is not None and now + target.latency_s(1) > r.deadline_s:
            return None
        return target

    # --- state, shutdown --------------------------------------------------------------------

    def stats(self) -> dict:
        """Request counters and the queue depth of every route (current and draining)."""
        with self._lock:
            routes = {str(w.key): {"queued": w.queued(), "batches": w.batches_sent, "requests": w.requests_sent}
                      for w in self._workers.values()}
            draining = {str(w.key): w.queued() for w in self._draining if not w.done}
        with self._count_lock:
            counts = dict(self.counts)
        return {"counts": counts, "routes": routes, "draining": draining,
                "plan_version": self.plan.version if self.plan else None}

    def close(self, timeout_s: float | None = None) -> None:
        """Stop taking requests, answer every queued one, stop the threads. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers = list(self._workers.values()) + self._draining
            for w in workers:
                w.drain()
        self._stop.set()
        if self._background is not None:
            self._background.join(timeout_s)
        for w in workers:
            w.join(timeout_s)
        if self._control is not None:
            self._post_telemetry(time.time() + 1.0)  # the last (partial) second too
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- control plane and metrics ----------------------------------------------------------

    def _refresh_plan(self) -> None:
        assert self._control is not None
        published = self._control.fetch_plan()
        current = self.plan
        if current is None or published.plan.version != current.version or published.endpoints != self._endpoints:
            self.set_plan(published.plan, {d: vars(e) for d, e in published.endpoints.items()},
                          catalog=published.catalog)

    def _post_telemetry(self, now: float) -> None:
        assert self._control is not None
        body = self.telemetry.report(now, self.client_id)
        if not body["seconds"]:
            return
        try:
            self._control.post_telemetry(body)
        except ConnectionError as e:
            self._count("telemetry_failures")
            log.warning("shim %s: telemetry not delivered: %s", self.client_id, e)

    def _poll_control_plane(self) -> None:
        next_poll = next_post = time.monotonic()
        while not self._stop.wait(max(0.0, min(next_poll, next_post) - time.monotonic())):
            now = time.monotonic()
            if now >= next_poll:
                next_poll = now + self.config.poll_s
                try:
                    self._refresh_plan()
                except (ConnectionError, ValueError) as e:
                    self._count("plan_fetch_failures")
                    log.warning("shim %s: keeping plan version %s: %s", self.client_id,
                                self.plan.version if self.plan else None, e)
            if now >= next_post:
                next_post = now + self.config.telemetry_s
                self._post_telemetry(time.time())

    def _serve_metrics(self, port: int) -> None:
        telemetry = self.telemetry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = telemetry.prometheus_text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._metrics_server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
        self.metrics_port = self._metrics_server.server_address[1]
        threading.Thread(target=self._metrics_server.serve_forever, name="shim-metrics", daemon=True).start()


def _describe_failure(key: RouteKey, error: Exception) -> tuple[bool, str]:
    """(whether the device looks unreachable, a one-line message naming it)."""
    status = ""
    if hasattr(error, "status") and callable(error.status):
        status = str(error.status() or "")
    text = error.message() if hasattr(error, "message") and callable(error.message) else str(error)
    unreachable = "UNAVAILABLE" in status or "failed to connect" in text.lower() or "connection refused" in text.lower()
    what = "unreachable" if unreachable else f"failed serving {key.variant}"
    return unreachable, f"device {key.device_id} at {key.url} {what}: {text.strip().splitlines()[0] if text else error!r}"
