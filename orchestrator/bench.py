"""The live bench: each policy on the same trace against the same Triton cluster, the whole system real.

For every policy, in turn, on one set of Triton servers (embedded or remote, from cluster.toml):
  1. unload every catalog model, so each policy starts from a clean cluster;
  2. a control plane (controlplane/service.py) with the policy, its executor and its controller
     loop (controller.py: demand estimators, hysteresis band, dwell time) behind the REST API;
     the first plan is solved for the trace's first seconds' rate and applied (models loaded)
     before the clock starts;
  3. a shim `Client` pointed at the control plane's URL (it polls the plan and posts telemetry,
     as an application would) receives the trace open-loop: each request is sent at its arrival
     time whatever happened to earlier ones. With `via="gateway"` the client is a gateway's data
     plane (gateway/, in this process) and the trace goes to the gateway's gRPC port with stock
     tritonclient (gateway/remote.py), as a Triton user's application would send it;
  4. every request's `Result` becomes an outcome row (evaluation.Outcomes); every plan the
     executor publishes becomes a `PlanEvent`.
The runs, a results table (markdown + CSV) and the plots are written to the output folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from orchestrator.activity import ActivityRecorder
from orchestrator.catalog import Catalog
from orchestrator.cluster import Cluster
from orchestrator.controlplane.app import HttpServer, create_app
from orchestrator.controlplane.controller import Controller
from orchestrator.controlplane.planning import floored, initial_demand
from orchestrator.controlplane.service import ControlPlane, ControlPlaneConfig
from orchestrator.controlplane.store import Store
from orchestrator.errors import UserError
from orchestrator.evaluation import Outcomes, PlanEvent, Run, ServedBatch, csv_table, markdown_table, summarise
from orchestrator.files import write_atomic
from orchestrator.plan import Plan
from orchestrator.planner import POLICIES
from orchestrator.profiles import ProfileSet
from orchestrator.gateway.core import Gateway
from orchestrator.gateway.grpc_server import GrpcEndpoint
from orchestrator.gateway.remote import RemoteGateway
from orchestrator.shim.client import Client, Result, ShimConfig
from orchestrator.trace import Trace
from orchestrator.triton.runtime import ClusterRuntime



@dataclass(frozen=True)
class BenchConfig:
    """Settings of a live bench; the control plane's and the shim's own defaults otherwise."""

    control: ControlPlaneConfig = field(default_factory=ControlPlaneConfig)
    shim: ShimConfig = ShimConfig()
    settle_s: float = 1.0  # pause between policies
    via: str = "shim"  # "shim": the trace goes to an in-process shim; "gateway": to a gateway, with tritonclient
    answer_timeout_s: float = 120.0  # a request still unanswered this long after the trace ended is an error


def outcome_row(result: Result | None, arrival_s: float, family: str, deadline_ms: float, catalog: Catalog,
                error: str = "") -> dict:
    """One live request's result in the outcome shape (see evaluation.py for the statuses)."""
    if result is None:
        return {"arrival_s": arrival_s, "family": family, "deadline_ms": deadline_ms, "status": "error",
                "latency_ms": None, "variant": "", "device": "", "accuracy": 0.0}
    status = result.status.value
    answered = result.status.answered
    v = catalog.variants.get(result.variant)
    return {"arrival_s": arrival_s, "family": family, "deadline_ms": deadline_ms, "status": status,
            "latency_ms": result.latency_ms, "variant": result.variant, "device": result.device_id,
            "accuracy": v.accuracy if (answered and v is not None) else 0.0}


class _PlanRecorder:
    """Wraps the executor's publish: notes when each plan took effect and what it loaded."""

    def __init__(self, publish: Callable[[Plan], None], clock: Callable[[], float]):
        self._publish = publish
        self.clock = clock
        self.events: list[PlanEvent] = []
        self._last: Plan | None = None

    def __call__(self, plan: Plan) -> None:
        self._publish(plan)
        before = self._last.loaded_models() if self._last else set()
        after = plan.loaded_models()
        self.events.append(PlanEvent(
            time_s=round(max(0.0, self.clock()), 6), version=plan.version, loads=len(after - before),
            unloads=len({k[:2] for k in before} - {k[:2] for k in after}),
            demand_rps={f: round(fp.demand_rps, 3) for f, fp in plan.families.items()},
            routes={f: [(r.device_id, r.variant, round(r.weight, 4)) for r in fp.routes]
                    for f, fp in plan.families.items()}))
        self._last = plan


def run_policy(policy: str, trace: Trace, runtime: ClusterRuntime, catalog: Catalog, profiles: ProfileSet,
               slo_ms: dict[str, float], config: BenchConfig = BenchConfig(),
               progress: Callable[[str], None] = print) -> Run:
    """One policy on the trace, on running servers; returns its Run."""
    cluster = runtime.cluster
    # 1. a clean cluster: an embedded server that died during the last policy's run restarted
    #    (the run it died in is over, and so was its supervision), then every catalog model unloaded
    for dev in cluster.devices:
        done = runtime.recover(dev.id, 0.0)
        if done is not None:
            progress(f"{policy}: before the run, {done}")
    for dev in cluster.devices:
        ctl = runtime.control(dev.id)
        for name in ctl.loaded():
            if name in catalog.variants:
                ctl.unload(name)
    # 2. the control plane with this policy, and its first plan
    control = replace(config.control, policy=policy, slo_ms={**config.control.slo_ms, **slo_ms}, db_path=":memory:")
    store = Store(":memory:")
    cp = ControlPlane(cluster, catalog, profiles, runtime, store, control)
    t0 = [time.monotonic() + 1e9]  # the trace clock starts after the first plan is in place
    recorder = _PlanRecorder(cp.executor.publish, lambda: time.monotonic() - t0[0])
    cp.executor.publish = recorder
    demand0 = floored(initial_demand(trace), control.demand_floor)
    started = time.monotonic()
    cp.apply(cp.solve(demand=demand0), reason=f"bench: initial plan for {demand0}")
    progress(f"{policy}: initial plan v{cp.plan.version} loaded in {time.monotonic() - started:.1f} s: "
             + ", ".join(f"{p.variant}@{p.device_id}" for p in cp.plan.placements))
    http = HttpServer(create_app(cp), port=0).start()
    controller = Controller(cp, wake=cp.wake)
    device_classes = {d.id: d.device_class for d in cluster.devices}
    client = Client(http.url, catalog=catalog, profiles=profiles, device_classes=device_classes,
                    config=replace(config.shim, client_id=f"bench-{policy}",
                                   client_kind="gateway" if config.via == "gateway" else "shim"))
    sender, gateway = client, None
    if config.via == "gateway":  # a gateway on the client's data plane, reached over gRPC
        gateway = GrpcEndpoint(Gateway(client), port=0)
        sender = RemoteGateway(gateway.url, call_timeout_s=config.answer_timeout_s)
    image = np.random.default_rng(0).standard_normal((3, 224, 224)).astype(np.float32)
    futures: list = [None] * len(trace)
    lag_max = 0.0
    activity = ActivityRecorder(runtime, clock=lambda: time.monotonic() - t0[0])
    try:
        cp.start_health()  # probed and supervised as `orchestrator serve` does: a dead server is restarted
        controller.start()
        times = trace.time_s.tolist()
        families = trace.family.tolist()
        deadlines = trace.deadline_ms.tolist()
        t0[0] = time.monotonic()
        activity.start()
        next_report = 10.0
        for i, t in enumerate(times):  # open loop: send at the arrival time, never wait for answers
            delay = t0[0] + t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                lag_max = max(lag_max, -delay)
            futures[i] = sender.infer_async(families[i], image, deadline_ms=deadlines[i])
            if t >= next_report:
                progress(f"{policy}: t={t:.0f}/{trace.duration_s:.0f} s, {i + 1} requests sent, "
                         f"plan v{cp.plan.version}")
                next_report += 10.0
        deadline = time.monotonic() + config.answer_timeout_s
        rows = []
        batches: dict[tuple[str, str, int, float], ServedBatch] = {}
        for i, fut in enumerate(futures):
            try:
                res = fut.result(timeout=max(0.1, deadline - time.monotonic()))
                rows.append(outcome_row(res, times[i], families[i], deadlines[i], catalog))
                if res.batch_size:  # its batch, once: the requests of one batch share the key
                    key = (res.device_id, res.variant, res.batch_size, res.service_ms)
                    sent_s = times[i] + (res.latency_ms - res.service_ms) / 1000.0
                    batches.setdefault(key, ServedBatch(*key, sent_s=sent_s))
            except Exception as e:  # noqa: BLE001 - an unanswered request is an error outcome
                rows.append(outcome_row(None, times[i], families[i], deadlines[i], catalog, str(e)))
    finally:
        activity.stop()
        controller.stop()
        if gateway is not None:
            sender.close()
            gateway.close()
        client.close(timeout_s=30)
        http.stop()
        cp.close()
        health = [d["reason"] for d in store.decisions(limit=1000) if d["kind"] == "health"]
        store.close()
    decisions = [e for e in recorder.events]
    notes = [f"open-loop sender fell behind the trace by at most {lag_max * 1000:.1f} ms, sending "
             + ("to a gateway with tritonclient.grpc" if config.via == "gateway" else "to an in-process shim"),
             f"controller: estimator {control.estimator}, tick {control.tick_s} s, dwell {control.dwell_s} s, "
             f"hysteresis {control.hysteresis}; shim: {config.shim.policy} batching, {config.shim.percentile}, "
             f"slack {config.shim.slack_ms} ms"]
    if health:  # first: the reader should see it before any figure
        notes.insert(0, "device health changed during the run (it does not compare with runs on healthy devices): "
                        + "; ".join(reversed(health)))
    duration = float(np.ceil(trace.duration_s))
    run = Run(policy, Outcomes.from_rows(rows), decisions, duration, "live", notes, list(batches.values()),
              activity.to_csv())
    for note in (run.speed_note(profiles, device_classes), activity.summary()):
        if note is not None:
            notes.append(note)
    return run


def run_bench(trace: Trace, cluster: Cluster, catalog: Catalog, profiles: ProfileSet, policies: list[str],
              slo_ms: dict[str, float], out_dir: str | Path | None = None, config: BenchConfig = BenchConfig(),
              runtime: ClusterRuntime | None = None, progress: Callable[[str], None] = print) -> list[Run]:
    """Every policy on the trace, one after the other, on the same servers; writes results to `out_dir`."""
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise UserError(f"unknown policy {unknown[0]!r}; choose from {', '.join(POLICIES)}")
    missing = [f for f in trace.families() if f not in catalog.families()]
    if missing:
        raise UserError(f"the trace names family {missing[0]!r}, which the catalog lacks "
                        f"(families: {sorted(catalog.families())})")
    own = runtime is None
    if own:
        runtime = ClusterRuntime(cluster).start()
    runs: list[Run] = []
    try:
        for policy in policies:
            try:
                runs.append(run_policy(policy, trace, runtime, catalog, profiles, slo_ms, config, progress))
            except UserError as e:  # the runs before it are kept: written, and named in the error
                kept = f"; the results of {', '.join(r.policy for r in runs)} are in {out_dir}" \
                    if runs and out_dir is not None else ""
                raise UserError(f"live bench: policy {policy} failed: {e}{kept}") from e
            finally:
                if runs and out_dir is not None:
                    write_results(runs, out_dir, title="Live bench")
            s = summarise(runs[-1])
            progress(f"{policy}: effective accuracy {s.effective_accuracy:.2f} %, miss ratio {s.miss_ratio:.3f}, "
                     f"p99 {s.p99_ms:.0f} ms, {s.switches} switches")
            time.sleep(config.settle_s)
    finally:
        if own:
            runtime.stop()
    return runs


def write_results(runs: list[Run], out_dir: str | Path, title: str) -> Path:
    """Each run's outcomes and plans, the results table (results.md, results.csv) and the plots."""
    from orchestrator.plots import plot_runs

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for run in runs:
        run.save(out)
    summaries = [summarise(r) for r in runs]
    table = markdown_table(summaries)
    notes = "".join(f"- {r.policy}: {n}\n" for r in runs for n in r.notes)
    write_atomic(out / "results.md", f"# {title}\n\n{table}\n{notes}")
    write_atomic(out / "results.csv", csv_table(summaries))
    plot_runs(runs, out)
    return out
