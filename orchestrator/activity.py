"""What the machine did in each second of a live run, so that a slow second can be attributed.

A live bench shares its machine: the devices' tritonservers, the bench process itself (sender,
shim, control plane and planner) and whatever else runs there. `ActivityRecorder` reads, once a
second, on its own thread:

- per CPU (/proc/stat): the time it was busy and the time the hypervisor stole from it;
- per embedded device: the CPU time of its server's process group (tritonserver and its
  python-backend stubs, `embedded.group_cpu_seconds`);
- this process's CPU time, all threads;
- per device, Triton's statistics summed over its models: executions, their compute time
  (`compute_infer`) and the time requests waited in Triton's queue.

Each row covers the time since the row before; CPU figures are in cores (CPU seconds per second),
Triton's in executions and milliseconds. A batch the shim saw slow (batches.csv) can then be told
apart: its device's server lacked its core (something else ran there), the core itself ran slow
(stolen time, or the server used its core and computed slower), or it queued in Triton.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable

from orchestrator.triton.embedded import EmbeddedServer, group_cpu_seconds
from orchestrator.triton.runtime import ClusterRuntime

INTERVAL_S = 1.0
STATS_TIMEOUT_S = 0.5  # a server too busy to answer its statistics call leaves that second blank


def cpu_times() -> dict[str, tuple[float, float]]:
    """{"cpu0": (busy s, stolen s), ...} since boot, from /proc/stat (busy: user, nice, system,
    irq, softirq; guest time is inside user)."""
    hz = os.sysconf("SC_CLK_TCK")
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
            out[name] = ((user + nice + system + irq + softirq) / hz, steal / hz)
    return out


def process_cpu_seconds() -> float:
    """CPU seconds this process has used, all threads."""
    t = os.times()
    return t.user + t.system


def triton_counters(stats: dict) -> tuple[int, float, float]:
    """(executions, compute ms, queue ms) of a server's statistics, summed over its models: the
    compute time of each execution once (`batch_stats`; a batch Triton merged from several
    requests counts once), the queueing of each request."""
    executions, compute_ns, queue_ns = 0, 0, 0
    for model in stats.get("model_stats", []):
        executions += int(model.get("execution_count", 0))
        for batch in model.get("batch_stats", []):
            compute_ns += int(batch.get("compute_infer", {}).get("ns", 0))
        queue_ns += int(model.get("inference_stats", {}).get("queue", {}).get("ns", 0))
    return executions, compute_ns / 1e6, queue_ns / 1e6


class ActivityRecorder:
    """Samples the machine once a second on a thread, between `start()` and `stop()`."""

    def __init__(self, runtime: ClusterRuntime, clock: Callable[[], float], interval_s: float = INTERVAL_S):
        self.runtime = runtime
        self.clock = clock  # the trace clock: rows are stamped with it
        self.interval_s = interval_s
        self.devices = [d.id for d in runtime.cluster.devices]
        self.cpus = sorted(cpu_times(), key=lambda c: int(c[3:]))
        self.rows: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def columns(self) -> list[str]:
        cols = ["t_s", "bench_cores"]
        for c in self.cpus:
            cols += [f"{c}_busy", f"{c}_steal"]
        for d in self.devices:
            cols += [f"{d}_server_cores", f"{d}_executions", f"{d}_compute_ms", f"{d}_queue_ms"]
        return cols

    def _read(self) -> dict:
        pids = {}
        for d in self.devices:
            server = self.runtime.servers.get(d)
            if isinstance(server, EmbeddedServer) and server.pid is not None:
                pids[d] = server.pid
        groups = group_cpu_seconds(pids.values())
        triton = {}
        for d in self.devices:
            try:
                triton[d] = triton_counters(self.runtime.control(d).statistics(timeout_s=STATS_TIMEOUT_S))
            except Exception:  # noqa: BLE001 - a server that does not answer: blank this second
                triton[d] = None
        return {"mono": time.monotonic(), "t": self.clock(), "bench": process_cpu_seconds(), "cpus": cpu_times(),
                "servers": {d: groups[p] for d, p in pids.items()}, "triton": triton}

    def _row(self, a: dict, b: dict) -> dict[str, float]:
        dt = b["mono"] - a["mono"]
        row = {"t_s": b["t"], "bench_cores": (b["bench"] - a["bench"]) / dt}
        for c in self.cpus:
            (busy0, steal0), (busy1, steal1) = a["cpus"].get(c, (0, 0)), b["cpus"].get(c, (0, 0))
            row[f"{c}_busy"], row[f"{c}_steal"] = (busy1 - busy0) / dt, (steal1 - steal0) / dt
        for d in self.devices:
            s0, s1 = a["servers"].get(d), b["servers"].get(d)
            # a restarted server is a new group: its seconds do not continue the old one's
            row[f"{d}_server_cores"] = (s1 - s0) / dt if s0 is not None and s1 is not None and s1 >= s0 else math.nan
            t0, t1 = a["triton"].get(d), b["triton"].get(d)
            ok = t0 is not None and t1 is not None and t1[0] >= t0[0]
            for i, name in enumerate(("executions", "compute_ms", "queue_ms")):
                row[f"{d}_{name}"] = t1[i] - t0[i] if ok else math.nan
        return row

    def _loop(self) -> None:
        last = self._read()
        while not self._stop.wait(max(0.0, last["mono"] + self.interval_s - time.monotonic())):
            now = self._read()
            if now["mono"] > last["mono"]:
                self.rows.append(self._row(last, now))
            last = now

    def start(self) -> "ActivityRecorder":
        self._thread = threading.Thread(target=self._loop, name="activity", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5 * self.interval_s + STATS_TIMEOUT_S * len(self.devices))

    def to_csv(self) -> str:
        cols = self.columns()
        lines = [",".join(cols)]
        for r in list(self.rows):
            lines.append(",".join("" if math.isnan(r[c]) else f"{r[c]:.4f}" for c in cols))
        return "\n".join(lines) + "\n"

    def summary(self) -> str | None:
        """One line for the run's notes: mean and busiest second of each part of the machine."""
        if not self.rows:
            return None

        def mean_max(values: list[float]) -> str:
            values = [v for v in values if not math.isnan(v)]
            return f"{sum(values) / len(values):.2f} / {max(values):.2f}" if values else "-"

        busy = [sum(r[f"{c}_busy"] for c in self.cpus) for r in self.rows]
        servers = [sum(r[f"{d}_server_cores"] for d in self.devices if not math.isnan(r[f"{d}_server_cores"]))
                   for r in self.rows]
        others = [b - s - r["bench_cores"] for b, s, r in zip(busy, servers, self.rows)]
        parts = [f"this process {mean_max([r['bench_cores'] for r in self.rows])}"]
        parts += [f"server {d} {mean_max([r[f'{d}_server_cores'] for r in self.rows])}" for d in self.devices
                  if any(not math.isnan(r[f"{d}_server_cores"]) for r in self.rows)]
        parts += [f"other processes {mean_max(others)}",
                  f"stolen {mean_max([sum(r[f'{c}_steal'] for c in self.cpus) for r in self.rows])}"]
        return (f"machine ({len(self.cpus)} CPUs), cores used, mean / busiest second: " + ", ".join(parts)
                + " (per second in <policy>.activity.csv)")
