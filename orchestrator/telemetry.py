"""What a client shim saw, per family per second, for the control plane and for Prometheus.

No clock of its own (times are passed in, Unix seconds) and no I/O: the shim posts `report()`
to the control plane (POST /api/v1/telemetry, shape in docs/shim.md) and serves
`prometheus_text()`; the simulator can feed the same counters. Thread-safe.

Counting rules, per request:
  arrivals         accepted by the client (inputs valid)
  completions      answered with outputs, in time or late
  met              completions within the deadline (or with no deadline)
  deadline_misses  answered past the deadline or dropped because it could not be met
  drops            answered without being served (subset of deadline_misses)
  errors           answered with an error (device failed, retry impossible or failed too) or unserved (no route)
  retries          calls re-sent to another route after a device failed
Per route (device, variant, instance config), the report also carries the batches sent and the
service times of those that ran alone on the device, by batch size: the control plane learns
the devices' real speed from them (controlplane/speed.py).
Latency histogram and served-variant counts cover completions (`served_met`: those in time,
per variant, so effective accuracy = sum(accuracy[v] * served_met[v]) / arrivals). Latency is end to end: from
`infer` to the answer.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field

from orchestrator.dataplane.status import Status
from orchestrator.prometheus import histogram_lines, metric_lines

# Upper bounds of the latency histogram buckets (ms); one more bucket catches the rest.
LATENCY_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
METRIC_PREFIX = "orchestrator_shim"


@dataclass
class Counts:
    """Counters of one family over one interval (a second, or since start)."""

    arrivals: int = 0
    completions: int = 0
    met: int = 0
    deadline_misses: int = 0
    drops: int = 0
    errors: int = 0
    retries: int = 0
    latency_ms_hist: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
    latency_ms_sum: float = 0.0
    served: dict[str, int] = field(default_factory=dict)  # variant -> completions
    served_met: dict[str, int] = field(default_factory=dict)  # variant -> completions within the deadline

    def to_dict(self) -> dict:
        return {"arrivals": self.arrivals, "completions": self.completions, "met": self.met,
                "deadline_misses": self.deadline_misses, "drops": self.drops, "errors": self.errors,
                "retries": self.retries, "latency_ms_hist": list(self.latency_ms_hist),
                "latency_ms_sum": round(self.latency_ms_sum, 3), "served": dict(sorted(self.served.items())),
                "served_met": dict(sorted(self.served_met.items()))}


class Telemetry:
    """Per (family, second) counters, plus running totals for Prometheus.

    Seconds older than `keep_s` are discarded when new ones open, so a client nobody drains
    holds a bounded window.
    """

    def __init__(self, keep_s: int = 300):
        self.keep_s = keep_s
        self._lock = threading.Lock()
        self._seconds: dict[tuple[str, int], Counts] = {}
        self._totals: dict[str, Counts] = {}
        self._served_routes: dict[tuple[str, str, str], int] = {}  # (family, device, variant) -> completions
        # (device, variant, instances, threads) -> [batches sent, {batch size: [batches, seconds]} of
        # those that ran alone on the device]: its observed speed (controlplane/speed.py)
        self._batches: dict[tuple[str, str, int, int], list] = {}

    # --- recording ------------------------------------------------------------------------

    def _at(self, family: str, now: float) -> tuple[Counts, Counts]:
        sec = int(now)
        key = (family, sec)
        c = self._seconds.get(key)
        if c is None:
            c = self._seconds[key] = Counts()
            cutoff = sec - self.keep_s
            for k in [k for k in self._seconds if k[1] < cutoff]:
                del self._seconds[k]
        total = self._totals.get(family)
        if total is None:
            total = self._totals[family] = Counts()
        return c, total

    def record_arrival(self, family: str, now: float) -> None:
        with self._lock:
            for c in self._at(family, now):
                c.arrivals += 1

    def record_retry(self, family: str, now: float) -> None:
        with self._lock:
            for c in self._at(family, now):
                c.retries += 1

    def record_result(self, family: str, now: float, status: Status, *, latency_ms: float, variant: str = "",
                      device_id: str = "") -> None:
        """One answered request: errors and unserved requests count as errors; late and dropped
        ones as deadline misses; ok and late ones as completions (they came with outputs)."""
        status = Status(status)  # ValueError for anything else
        served, deadline_met = status.answered, status is Status.OK
        with self._lock:
            for c in self._at(family, now):
                if not (served or status.missed_deadline):
                    c.errors += 1
                    continue
                if not deadline_met:
                    c.deadline_misses += 1
                if served:
                    c.completions += 1
                    c.met += deadline_met
                    c.latency_ms_hist[bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)] += 1
                    c.latency_ms_sum += latency_ms
                    c.served[variant] = c.served.get(variant, 0) + 1
                    if deadline_met:
                        c.served_met[variant] = c.served_met.get(variant, 0) + 1
                else:
                    c.drops += 1
            if served:
                key = (family, device_id, variant)
                self._served_routes[key] = self._served_routes.get(key, 0) + 1

    def record_batches(self, device_id: str, variant: str, instances: int, threads: int, sent: int,
                       alone: dict[int, list[float]]) -> None:
        """A route's batches since its last report (RouteState.take_speed)."""
        if not sent and not alone:
            return
        with self._lock:
            entry = self._batches.setdefault((device_id, variant, instances, threads), [0, {}])
            entry[0] += sent
            for size, (n, seconds) in alone.items():
                seen = entry[1].setdefault(size, [0, 0.0])
                seen[0] += int(n)
                seen[1] += seconds

    # --- reading --------------------------------------------------------------------------

    def snapshot(self) -> list[dict]:
        """Every retained (family, second), oldest first; nothing is removed."""
        with self._lock:
            return [self._row(k, c) for k, c in sorted(self._seconds.items(), key=lambda kv: (kv[0][1], kv[0][0]))]

    def drain(self, now: float) -> list[dict]:
        """Remove and return the finished seconds (those before the current one), oldest first."""
        current = int(now)
        with self._lock:
            done = sorted((k for k in self._seconds if k[1] < current), key=lambda k: (k[1], k[0]))
            return [self._row(k, self._seconds.pop(k)) for k in done]

    def totals(self) -> dict[str, dict]:
        """Counters per family since the client started."""
        with self._lock:
            return {f: c.to_dict() for f, c in sorted(self._totals.items())}

    def report(self, now: float, client_id: str, kind: str = "shim") -> dict:
        """The POST body for the control plane: the finished seconds, drained. `kind`: "shim" or
        "gateway" (what the dashboard calls the client)."""
        with self._lock:
            batches, self._batches = self._batches, {}
        return {"client_id": client_id, "kind": kind, "sent_at": round(now, 3), "interval_s": 1,
                "latency_buckets_ms": list(LATENCY_BUCKETS_MS), "seconds": self.drain(now),
                "batches": [{"device_id": d, "variant": v, "instances": i, "threads": t, "sent": sent,
                             "alone": [[size, n, round(secs, 6)] for size, (n, secs) in sorted(alone.items())]}
                            for (d, v, i, t), (sent, alone) in sorted(batches.items())]}

    @staticmethod
    def _row(key: tuple[str, int], c: Counts) -> dict:
        return {"family": key[0], "second": key[1], **c.to_dict()}

    def prometheus_text(self) -> str:
        """Running totals in the Prometheus text exposition format."""
        p = METRIC_PREFIX
        with self._lock:
            totals = sorted(self._totals.items())
            routes = sorted(self._served_routes.items())
            lines: list[str] = []
            for name, help_text, attr in (
                    ("requests_total", "Requests accepted by the client.", "arrivals"),
                    ("met_total", "Requests answered with outputs within their deadline.", "met"),
                    ("deadline_misses_total", "Requests answered late or dropped as unable to meet the deadline.",
                     "deadline_misses"),
                    ("drops_total", "Requests dropped before sending because the deadline could not be met.", "drops"),
                    ("errors_total", "Requests answered with an error.", "errors"),
                    ("retries_total", "Calls re-sent to another route after a device failed.", "retries")):
                lines += metric_lines(f"{p}_{name}", "counter", help_text,
                                      [({"family": fam}, getattr(c, attr)) for fam, c in totals])
            lines += metric_lines(f"{p}_completions_total", "counter", "Requests answered with outputs, by serving route.",
                                  [({"family": fam, "device": dev, "variant": var}, n) for (fam, dev, var), n in routes])
            lines += histogram_lines(f"{p}_latency_seconds", "End-to-end latency of completed requests.",
                                     [b / 1000 for b in LATENCY_BUCKETS_MS],
                                     [({"family": fam}, c.latency_ms_hist, c.latency_ms_sum / 1000) for fam, c in totals])
        return "\n".join(lines) + "\n"
