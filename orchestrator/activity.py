"""What the machine did in each second of a live run, so that a slow second can be attributed.

A live bench shares its machine: the devices' tritonservers, the bench process itself (sender,
shim, control plane and planner) and whatever else runs there. `ActivityRecorder` reads, once a
second, on its own thread:

- per CPU (/proc/stat): the time it was busy and the time the hypervisor stole from it;
- per embedded device: the CPU time of its server's process group (tritonserver and its
  python-backend stubs, each member's own since the last look, `embedded.group_processes`);
- this process's CPU time, all threads;
- per device (gRPC), Triton's statistics summed over the models loaded at both looks:
  executions, their compute time (`compute_infer`, once per execution) and the time requests
  waited in Triton's queue. A look the server does not answer within STATS_TIMEOUT_S is made up
  at its next answer, the work in between spread evenly over the rows it spans.

Each row covers the time since the row before (looks on a fixed 1-s grid); CPU figures are in
cores (CPU seconds per second), Triton's in executions and milliseconds. A batch the shim saw
slow (batches.csv) can then be told apart: its server did not get a full core while the machine
was busy otherwise (the bench process, other processes), its core was stolen, its server had its
core and computed slower, or it queued in Triton.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from orchestrator.triton.embedded import EmbeddedServer, cpu_seconds_between, group_processes

if TYPE_CHECKING:
    from orchestrator.triton.runtime import ClusterRuntime

INTERVAL_S = 1.0
STATS_TIMEOUT_S = 0.5  # a server too busy to answer its statistics call: its work is counted at its next answer


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


def triton_counters(stats: dict) -> dict[str, tuple[int, float, float]]:
    """{model: (executions, compute ms, queue ms)} of a server's statistics, cumulative: the
    compute time of each execution once (`batch_stats`; a batch Triton merged from several
    requests counts once), the queueing of each request. Triton lists the models loaded now; as
    JSON over gRPC its counters are strings and zero ones are left out."""
    out = {}
    for model in stats.get("model_stats", []):
        compute_ns = sum(int(b.get("compute_infer", {}).get("ns", 0)) for b in model.get("batch_stats", []))
        queue_ns = int(model.get("inference_stats", {}).get("queue", {}).get("ns", 0))
        out[f"{model.get('name', '')}/{model.get('version', '')}"] = (
            int(model.get("execution_count", 0)), compute_ns / 1e6, queue_ns / 1e6)
    return out


def counters_between(before: dict[str, tuple[int, float, float]],
                     after: dict[str, tuple[int, float, float]]) -> tuple[int, float, float]:
    """(executions, compute ms, queue ms) between two `triton_counters`, over the models in both
    whose counters did not go back (a model unloaded and loaded again in between starts at zero:
    its work in between is lost, not counted negative)."""
    executions, compute, queue = 0, 0.0, 0.0
    for model, (e1, c1, q1) in after.items():
        e0, c0, q0 = before.get(model, (None, 0.0, 0.0))
        if e0 is None or e1 < e0 or c1 < c0 or q1 < q0:
            continue
        executions, compute, queue = executions + e1 - e0, compute + c1 - c0, queue + q1 - q0
    return executions, compute, queue


def read_activity(text: str) -> dict[str, np.ndarray]:
    """The columns of an activity CSV (`ActivityRecorder.to_csv`), blanks as NaN."""
    lines = text.strip().splitlines()
    if len(lines) < 2:
        return {}
    header = lines[0].split(",")
    values = np.array([[float(v) if v else np.nan for v in line.split(",")] for line in lines[1:]])
    return {name: values[:, i] for i, name in enumerate(header)}


def cores_by_part(columns: dict[str, np.ndarray], blank_as_zero: bool = True) -> dict[str, np.ndarray]:
    """Per row, the cores each part of the machine used: each device's server (embedded ones:
    a remote server has no figures here), this process, the other processes (busy time not
    accounted to those) and the time stolen. A server's blank second (it restarted) counts as
    zero, or with `blank_as_zero=False` stays NaN, and so do the other processes then."""
    cpus = [c[:-len("_busy")] for c in columns if c.endswith("_busy")]
    busy = sum(columns[f"{c}_busy"] for c in cpus)
    servers = {c[:-len("_server_cores")]: columns[c] for c in columns
               if c.endswith("_server_cores") and not np.all(np.isnan(columns[c]))}
    blank = np.zeros(len(columns["t_s"]), dtype=bool)
    for v in servers.values():
        blank |= np.isnan(v)
    parts = {f"server {d}": np.nan_to_num(v) if blank_as_zero else v for d, v in servers.items()}
    parts["this process"] = columns["bench_cores"]
    others = np.maximum(0.0, busy - sum(np.nan_to_num(v) for v in servers.values()) - columns["bench_cores"])
    parts["other processes"] = others if blank_as_zero else np.where(blank, np.nan, others)
    parts["stolen"] = sum(columns[f"{c}_steal"] for c in cpus)
    return parts


class ActivityRecorder:
    """Samples the machine once a second on a thread, between `start()` and `stop()`."""

    def __init__(self, runtime: ClusterRuntime, clock: Callable[[], float], interval_s: float = INTERVAL_S):
        self.runtime = runtime
        self.clock = clock  # the trace clock: rows are stamped with it
        self.interval_s = interval_s
        self.devices = [d.id for d in runtime.cluster.devices]
        self.cpus = sorted(cpu_times(), key=lambda c: int(c[3:]))
        self.rows: list[dict[str, float]] = []
        self._rows_lock = threading.Lock()  # rows are final once stop() has taken it
        self._final = False
        self.errors = 0  # samples that failed outright (the thread goes on)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._triton: dict[str, dict] = {}  # per device: the last statistics it answered, and when

    def columns(self) -> list[str]:
        cols = ["t_s", "bench_cores"]
        for c in self.cpus:
            cols += [f"{c}_busy", f"{c}_steal"]
        for d in self.devices:
            cols += [f"{d}_server_cores", f"{d}_executions", f"{d}_compute_ms", f"{d}_queue_ms"]
        return cols

    def _read(self) -> dict:
        """One sample. The CPU counters first, back to back (they share one interval), then
        Triton's statistics, which may take up to STATS_TIMEOUT_S a device."""
        pids = {}
        for d in self.devices:
            server = self.runtime.servers.get(d)
            pid = server.pid if isinstance(server, EmbeddedServer) else None
            if pid is not None:
                pids[d] = pid
        sample = {"mono": time.monotonic(), "t": self.clock(), "bench": process_cpu_seconds(), "cpus": cpu_times()}
        groups = group_processes(pids.values())
        sample["servers"] = {d: (p, groups[p]) for d, p in pids.items()}
        sample["triton"] = {}
        for d in self.devices:
            try:
                ctl = self.runtime.control(d)
                if ctl.protocol != "grpc":  # tritonclient's HTTP client takes no per-call timeout
                    continue
                sample["triton"][d] = triton_counters(ctl.statistics(timeout_s=STATS_TIMEOUT_S))
            except Exception:  # noqa: BLE001 - a server that does not answer: no figures this time
                pass
        return sample

    def _row(self, a: dict, b: dict) -> dict[str, float]:
        dt = b["mono"] - a["mono"]
        row = {"t_s": b["t"], "bench_cores": (b["bench"] - a["bench"]) / dt}
        for c in self.cpus:
            (busy0, steal0), (busy1, steal1) = a["cpus"].get(c, (0, 0)), b["cpus"].get(c, (0, 0))
            row[f"{c}_busy"], row[f"{c}_steal"] = (busy1 - busy0) / dt, (steal1 - steal0) / dt
        for d in self.devices:
            (p0, s0), (p1, s1) = a["servers"].get(d, (None, {})), b["servers"].get(d, (None, {}))
            # a restarted server is a new process group: its seconds do not continue the old one's
            row[f"{d}_server_cores"] = cpu_seconds_between(s0, s1) / dt if p0 is not None and p0 == p1 else math.nan
            for name in ("executions", "compute_ms", "queue_ms"):
                row[f"{d}_{name}"] = math.nan
            now = b["triton"].get(d)
            if now is None:
                continue
            last = self._triton.get(d)  # the last answer, maybe older than `a` (a call timed out)
            if last is not None:
                span = b["mono"] - last["mono"]
                executions, compute, queue = counters_between(last["counters"], now)
                # Triton's work since the last answer, spread evenly over the rows it spans
                share = dt / span if span > 0 else 1.0
                row[f"{d}_executions"] = executions * share
                row[f"{d}_compute_ms"] = compute * share
                row[f"{d}_queue_ms"] = queue * share
        return row

    def _loop(self) -> None:
        start = time.monotonic()
        last = None
        k = 0
        while True:
            try:
                now = self._read()
                if last is not None and now["mono"] > last["mono"]:
                    row = self._row(last, now)
                    with self._rows_lock:
                        if self._final:
                            return
                        self.rows.append(row)
                for d, counters in now["triton"].items():
                    self._triton[d] = {"mono": now["mono"], "counters": counters}
                last = now
            except Exception:  # noqa: BLE001 - a failed look costs that sample, not the record
                self.errors += 1
            # the next point of a fixed grid (no drift) at least half an interval away: a look
            # that overran (a slow statistics call) must not be followed by one a moment later,
            # whose CPU figures would be a tick or two over a few milliseconds
            k = max(k + 1, math.ceil((time.monotonic() + self.interval_s / 2 - start) / self.interval_s))
            if self._stop.wait(max(0.0, start + k * self.interval_s - time.monotonic())):
                return

    def start(self) -> "ActivityRecorder":
        self._thread = threading.Thread(target=self._loop, name="activity", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling; the rows are final from here on (a late sample is not added)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 2 * STATS_TIMEOUT_S * len(self.devices))
        with self._rows_lock:
            self._final = True  # a sampler still in a slow statistics call adds nothing after this

    def to_csv(self) -> str:
        cols = self.columns()
        lines = [",".join(cols)]
        for r in self.rows:
            lines.append(",".join("" if math.isnan(r[c]) else f"{r[c]:.4f}" for c in cols))
        return "\n".join(lines) + "\n"

    def summary(self) -> str | None:
        """One line for the run's notes: mean and busiest second of each part of the machine
        (a server's seconds without a figure, a restart's, left out)."""
        if not self.rows:
            return None
        parts = []
        columns = {c: np.array([r[c] for r in self.rows]) for c in self.columns()}
        for name, values in cores_by_part(columns, blank_as_zero=False).items():
            values = values[~np.isnan(values)]
            if len(values):
                parts.append(f"{name} {float(values.mean()):.2f} / {float(values.max()):.2f}")
        return (f"machine ({len(self.cpus)} CPUs), cores used, mean / busiest second: " + ", ".join(parts)
                + (f"; {self.errors} samples failed" if self.errors else "")
                + " (per second: <policy>.activity.csv, machine.png)")
