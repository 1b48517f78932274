"""The variant profiler: latency percentiles and throughput per variant x device class x batch size.

Measured on live Triton servers through `tritonclient` (gRPC, the path the shim uses), after a
warm-up, with `instances` closed-loop clients so that every model instance is kept busy; Triton's
own statistics over the timed requests give the backend's time per batch and the queueing. Each
finished record is saved at once (atomically), so an interrupted run resumes where it stopped and
never corrupts the file. A batch size that runs out of (GPU) memory ends that variant's larger
batch sizes instead of the run. perf_analyzer CSV output can be imported instead of measuring.
"""

from __future__ import annotations

import csv
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from orchestrator.catalog import Catalog, Variant
from orchestrator.errors import UserError
from orchestrator.profiles import ProfileRecord, ProfileSet, checked_record
from orchestrator.triton.runtime import ClusterRuntime

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16)
MIN_SAMPLES_FOR_P99 = 100  # below this the p99 is little more than the maximum


@dataclass(frozen=True)
class ProfileSettings:
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    configs: tuple[tuple[int, int], ...] = ((1, 1),)  # (instances, threads) per device class
    warmup_requests: int = 3
    min_samples: int = MIN_SAMPLES_FOR_P99
    max_seconds: float = 20.0  # per record: stop sampling after this long, with what was gathered
    force: bool = False  # re-measure records that already exist
    all_devices: bool = False  # measure on every device of a class at once (under the cluster's own load)
    device_classes: tuple[str, ...] = ()  # only these classes (empty: every class of the cluster)


# onnxruntime's and CUDA's ways of saying a batch did not fit in memory
OUT_OF_MEMORY = ("out of memory", "cuda_error_out_of_memory", "cudaerrormemoryallocation",
                 "failed to allocate memory", "bfcarena", "std::bad_alloc")


def is_out_of_memory(message: str) -> bool:
    text = message.lower()
    return any(m in text for m in OUT_OF_MEMORY)


@dataclass(frozen=True)
class ServerTimes:
    """Triton's statistics over the timed requests of one record."""

    compute_ms: float | None  # the backend's mean execution time of a batch of the profiled size
    queue_ms: float | None  # the mean time a request waited in Triton's queue
    other_batch_sizes: tuple[int, ...] = ()  # sizes Triton formed besides the profiled one (merged requests)


def _counters(stats: dict) -> tuple[dict[int, tuple[int, int]], int, int]:
    """({batch size: (executions, compute_infer ns)}, requests, queue ns) of one model's statistics."""
    model = (stats.get("model_stats") or [{}])[0]
    batches = {}
    for b in model.get("batch_stats", []):
        infer = b.get("compute_infer", {})
        batches[int(b["batch_size"])] = (int(infer.get("count", 0)), int(infer.get("ns", 0)))
    queue = model.get("inference_stats", {}).get("queue", {})
    return batches, int(queue.get("count", 0)), int(queue.get("ns", 0))


def server_times(before: list[dict], after: list[dict], batch_size: int) -> ServerTimes:
    """Triton's times between two statistics snapshots of one model, pooled over devices."""
    executions = compute_ns = requests = queue_ns = 0
    others: set[int] = set()
    for b0, b1 in zip(before, after):
        (batches0, req0, q0), (batches1, req1, q1) = _counters(b0), _counters(b1)
        requests, queue_ns = requests + req1 - req0, queue_ns + q1 - q0
        for size, (count, ns) in batches1.items():
            count0, ns0 = batches0.get(size, (0, 0))
            if size == batch_size:
                executions, compute_ns = executions + count - count0, compute_ns + ns - ns0
            elif count > count0:
                others.add(size)
    return ServerTimes(compute_ns / executions / 1e6 if executions > 0 else None,
                       queue_ns / requests / 1e6 if requests > 0 else None, tuple(sorted(others)))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def make_batch(variant: Variant, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A random input batch matching the catalog's input spec."""
    rng = np.random.default_rng(seed)
    return {t.name: rng.standard_normal((batch_size, *t.shape)).astype(t.numpy_dtype) for t in variant.inputs}


def measure(grpc_url: str, variant: Variant, batch_size: int, concurrency: int,
            warmup: int, min_samples: int, max_seconds: float,
            on_start: Callable[[], None] | None = None) -> tuple[list[float], float]:
    """Per-request latencies (ms) and throughput (inferences/s) of closed-loop clients on one model;
    `on_start` is called once every client is warmed up, just before the timed requests."""
    import tritonclient.grpc as grpcclient

    batch = make_batch(variant, batch_size)
    outputs = [grpcclient.InferRequestedOutput(t.name) for t in variant.outputs]
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []
    stop_at = [0.0]

    def inputs():
        ins = []
        for name, arr in batch.items():
            spec = next(t for t in variant.inputs if t.name == name)
            inp = grpcclient.InferInput(name, list(arr.shape), spec.dtype)
            inp.set_data_from_numpy(arr)
            ins.append(inp)
        return ins

    def worker(n_warmup: int) -> None:
        client = grpcclient.InferenceServerClient(grpc_url)
        try:
            req = inputs()
            for _ in range(n_warmup):
                client.infer(variant.name, req, outputs=outputs)
            barrier.wait()
            go.wait()
            while True:
                with lock:
                    if len(latencies) >= min_samples or time.perf_counter() > stop_at[0]:
                        return
                t0 = time.perf_counter()
                client.infer(variant.name, req, outputs=outputs)
                dt = (time.perf_counter() - t0) * 1000
                with lock:
                    latencies.append(dt)
        except Exception as e:  # reported once below; the barrier must not hang the others
            errors.append(str(e))
            barrier.abort()
        finally:
            client.close()

    barrier = threading.Barrier(concurrency + 1)  # all warmed up ...
    go = threading.Event()  # ... then the clock starts for everyone at once
    threads = [threading.Thread(target=worker, args=(warmup,), daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    try:
        barrier.wait()
        if on_start is not None:
            on_start()
    except threading.BrokenBarrierError:
        pass
    t_start = time.perf_counter()
    stop_at[0] = t_start + max_seconds
    go.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t_start
    if errors or not latencies:
        why = errors[0] if errors else "no request completed"
        raise UserError(f"{variant.name} at batch {batch_size}: inference failed: {why}")
    throughput = len(latencies) * batch_size / elapsed if elapsed > 0 else 0.0
    return latencies, throughput


def measure_devices(grpc_urls: list[str], variant: Variant, batch_size: int, concurrency: int,
                    warmup: int, min_samples: int, max_seconds: float,
                    on_start: list[Callable[[], None]] | None = None) -> tuple[list[float], float]:
    """`measure` on several servers at the same time: the latencies pooled, the throughput per server
    (`on_start[i]`: server i's `on_start`)."""
    starts = on_start or [None] * len(grpc_urls)
    if len(grpc_urls) == 1:
        return measure(grpc_urls[0], variant, batch_size, concurrency, warmup, min_samples, max_seconds, starts[0])
    results: list[tuple[list[float], float] | Exception] = [ValueError("not run")] * len(grpc_urls)

    def run(i: int) -> None:
        try:
            results[i] = measure(grpc_urls[i], variant, batch_size, concurrency, warmup, min_samples, max_seconds,
                                 starts[i])
        except Exception as e:  # noqa: BLE001 - re-raised below, in the caller's thread
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(grpc_urls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        if isinstance(r, Exception):
            raise r
    latencies = [x for lat, _ in results for x in lat]  # type: ignore[misc]
    return latencies, sum(thr for _, thr in results) / len(results)  # type: ignore[misc]


def profile_cluster(runtime: ClusterRuntime, catalog: Catalog, variants: Iterable[str], out: str | os.PathLike,
                    settings: ProfileSettings = ProfileSettings(),
                    progress: Callable[[str], None] = print) -> ProfileSet:
    """Profile every variant on one device of each device class (every device of it at once with
    `settings.all_devices`); saves after every record."""
    out = Path(out)
    profiles = ProfileSet.load_or_empty(out)
    variants = [catalog.get(v) for v in variants]
    for v in variants:
        too_big = [b for b in settings.batch_sizes if b > v.max_batch_size]
        if too_big:
            raise UserError(f"batch size {too_big[0]} exceeds {v.name}'s max_batch_size {v.max_batch_size}")
    classes = runtime.cluster.device_classes()
    unknown = [c for c in settings.device_classes if c not in classes]
    if unknown:
        raise UserError(f"device class {unknown[0]!r} is not in the cluster (classes: {', '.join(sorted(classes))})")
    if settings.device_classes:
        classes = {c: devs for c, devs in classes.items() if c in settings.device_classes}
    jobs = [(cls, devs if settings.all_devices else devs[:1], v, cfg)
            for cls, devs in classes.items() for v in variants for cfg in settings.configs]
    total = len(jobs) * len(settings.batch_sizes)
    done = 0
    for device_class, devices, variant, (instances, threads) in jobs:
        keys = [(variant.name, device_class, b, instances, threads) for b in settings.batch_sizes]
        todo = [b for b, k in zip(settings.batch_sizes, keys) if settings.force or not profiles.has(k)]
        done += len(settings.batch_sizes) - len(todo)
        where = f"{device_class} ({instances}x{threads}" + (f", {len(devices)} devices at once)" if len(devices) > 1 else ")")
        if not todo:
            progress(f"[{done}/{total}] {variant.name} on {where}: already profiled")
            continue
        ids = [d.id for d in devices]
        runtime.start(ids)
        controls = [runtime.control(i) for i in ids]
        version = controls[0].server_version()
        loaded_before = [variant.name in ctl.loaded() for ctl in controls]
        for i in ids:
            runtime.load(i, variant.name, instances=instances, threads=threads)
        try:
            for k, b in enumerate(todo):
                before: list[dict] = [{} for _ in ids]

                def snapshot(i: int) -> Callable[[], None]:
                    def take() -> None:
                        before[i] = controls[i].statistics(variant.name)
                    return take

                try:
                    lat, thr = measure_devices([runtime.servers[i].grpc_url for i in ids], variant, b,
                                               concurrency=instances, warmup=settings.warmup_requests,
                                               min_samples=settings.min_samples, max_seconds=settings.max_seconds,
                                               on_start=[snapshot(i) for i in range(len(ids))])
                except UserError as e:
                    if not is_out_of_memory(str(e)):
                        raise
                    done += len(todo) - k
                    progress(f"[{done}/{total}] {variant.name} on {where} batch {b}: out of memory; batch sizes "
                             f"from {b} up not profiled ({e})")
                    break
                times = server_times(before, [ctl.statistics(variant.name) for ctl in controls], b)
                note = "" if len(lat) >= MIN_SAMPLES_FOR_P99 else (
                    f"only {len(lat)} samples: p99 is close to the maximum latency")
                if len(ids) > 1:
                    note = "; ".join(x for x in (f"measured on {len(ids)} devices at once", note) if x)
                if times.other_batch_sizes:
                    note = "; ".join(x for x in (note, "Triton merged requests into batches of "
                                                 + ", ".join(map(str, times.other_batch_sizes))) if x)
                rec = ProfileRecord(variant=variant.name, device_class=device_class, batch_size=b,
                                    instances=instances, threads=threads, p50_ms=percentile(lat, 50),
                                    p95_ms=percentile(lat, 95), p99_ms=percentile(lat, 99),
                                    throughput_rps=thr, samples=len(lat), triton_version=version,
                                    measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                    source="triton", note=note, triton_compute_ms=times.compute_ms,
                                    triton_queue_ms=times.queue_ms)
                profiles.add(rec)
                profiles.save(out)
                done += 1
                server = (f"  Triton: compute {times.compute_ms:.1f} ms/batch, queue {times.queue_ms or 0:.1f} ms"
                          if times.compute_ms is not None else "")
                progress(f"[{done}/{total}] {variant.name} on {where} batch {b}: "
                         f"p50 {rec.p50_ms:.1f} ms  p99 {rec.p99_ms:.1f} ms  {thr:.1f} inf/s  ({len(lat)} samples)"
                         + server + (f"  [{note}]" if note else ""))
        finally:
            for ctl, was_loaded in zip(controls, loaded_before):
                if not was_loaded:
                    ctl.unload(variant.name)
    return profiles


# perf_analyzer's CSV (`perf_analyzer -f out.csv`): latencies in microseconds, one row per concurrency.
_PA_COLUMNS = ("Concurrency", "Inferences/Second", "p50 latency", "p95 latency", "p99 latency")


def import_perf_analyzer_csv(path: str | os.PathLike, variant: str, device_class: str, batch_size: int,
                             instances: int = 1, threads: int = 1, concurrency: int | None = None) -> ProfileRecord:
    """One record from a perf_analyzer CSV: the row of `concurrency` (default: the first row)."""
    p = Path(path)
    try:
        rows = list(csv.DictReader(p.read_text().splitlines()))
    except FileNotFoundError:
        raise UserError(f"{p}: perf_analyzer CSV not found") from None
    if not rows:
        raise UserError(f"{p}: no data rows")
    missing = [c for c in _PA_COLUMNS if c not in rows[0]]
    if missing:
        raise UserError(f"{p}: missing column {missing[0]!r} (is this `perf_analyzer -f` output?)")
    if concurrency is None:
        row, line = rows[0], 2
    else:
        found = [(r, i + 2) for i, r in enumerate(rows) if r["Concurrency"].strip() == str(concurrency)]
        if not found:
            raise UserError(f"{p}: no row with Concurrency {concurrency}")
        row, line = found[0]
    us = {}
    for c in _PA_COLUMNS[1:]:
        try:
            us[c] = float(row[c])
        except (TypeError, ValueError):
            raise UserError(f"{p}: line {line}: column {c!r} is not a number: {row[c]!r}") from None
        if not (math.isfinite(us[c]) and us[c] >= 0):
            raise UserError(f"{p}: line {line}: column {c!r} must be a finite number >= 0, not {row[c]!r}")
    # the same checks as a profiles file's records (names, integers >= 1)
    server = {}  # the server-side columns, where the CSV has them
    for column, key in (("Server Compute Infer", "triton_compute_ms"), ("Server Queue", "triton_queue_ms")):
        try:
            server[key] = float(row[column]) / 1000
        except (KeyError, TypeError, ValueError):
            pass
    return checked_record(dict(variant=variant, device_class=device_class, batch_size=batch_size, instances=instances,
                               threads=threads, p50_ms=us["p50 latency"] / 1000, p95_ms=us["p95 latency"] / 1000,
                               p99_ms=us["p99 latency"] / 1000, throughput_rps=us["Inferences/Second"], samples=0,
                               **server,
                               measured_at=datetime.fromtimestamp(p.stat().st_mtime, timezone.utc).isoformat(timespec="seconds"),
                               source="perf_analyzer", note=f"imported from {p.name}, concurrency {row['Concurrency']}"),
                          f"{p}: line {line}")


def best_batch_under_slo(records: list[ProfileRecord], slo_ms: float, latency_fraction: float = 1.0,
                         percentile_field: str = "p99_ms") -> ProfileRecord | None:
    """The record with the largest throughput whose tail latency fits in slo_ms * latency_fraction."""
    fitting = [r for r in records if getattr(r, percentile_field) <= slo_ms * latency_fraction]
    return max(fitting, key=lambda r: r.throughput_rps, default=None)
