"""Telemetry intake: the shims' per-second reports (POST /api/v1/telemetry), summed over clients.

Body (orchestrator/telemetry.py `Telemetry.report`, documented in docs/shim.md):
    {"client_id": "...", "sent_at": 1732350000.1, "interval_s": 1, "latency_buckets_ms": [...],
     "seconds": [{"family": "resnet", "second": 1732349999, "arrivals": 40, "completions": 39,
                  "met": 38, "deadline_misses": 2, "drops": 1, "errors": 0, "retries": 0,
                  "latency_ms_hist": [...], "latency_ms_sum": 812.5, "served": {"resnet18": 39},
                  "served_met": {"resnet18": 38}}]}
Seconds are kept until the controller flushes them (a little after they end, so reports that
arrive late from several shims still add up).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

COUNTERS = ("arrivals", "completions", "met", "deadline_misses", "drops", "errors", "retries")


class BadTelemetry(ValueError):
    """The body is not a telemetry report; the message says what is wrong."""


@dataclass
class FamilySecond:
    family: str
    second: int
    arrivals: int = 0
    completions: int = 0
    met: int = 0
    deadline_misses: int = 0
    drops: int = 0
    errors: int = 0
    retries: int = 0
    served: dict[str, int] = field(default_factory=dict)  # variant -> completions
    served_met: dict[str, int] | None = None  # variant -> in-time completions (None: no shim reported it)


def parse_report(body) -> list[dict]:
    """The report's seconds, checked; raises BadTelemetry naming the first bad field."""
    if not isinstance(body, dict):
        raise BadTelemetry("telemetry body must be a JSON object with a 'seconds' list")
    seconds = body.get("seconds")
    if not isinstance(seconds, list):
        raise BadTelemetry("telemetry body needs a 'seconds' list (one entry per family per second)")
    for i, row in enumerate(seconds):
        where = f"seconds[{i}]"
        if not isinstance(row, dict):
            raise BadTelemetry(f"{where} must be an object")
        if not isinstance(row.get("family"), str) or not row["family"]:
            raise BadTelemetry(f"{where}.family must be a non-empty string")
        if not isinstance(row.get("second"), (int, float)) or isinstance(row.get("second"), bool):
            raise BadTelemetry(f"{where}.second must be a Unix time in seconds")
        for k in COUNTERS:
            v = row.get(k, 0)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise BadTelemetry(f"{where}.{k} must be a non-negative integer, not {v!r}")
        for key in ("served", "served_met"):
            served = row.get(key, {})
            if not isinstance(served, dict) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                       for n in served.values()):
                raise BadTelemetry(f"{where}.{key} must map variant names to counts")
    return seconds


class TelemetryIntake:
    """Sums reports per (family, second) until flushed. Thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._open: dict[tuple[str, int], FamilySecond] = {}
        self.reports = 0
        self.clients: dict[str, float] = {}  # client id -> last report time

    def add(self, body, now: float) -> int:
        rows = parse_report(body)
        with self._lock:
            self.reports += 1
            self.clients[str(body.get("client_id", "?"))] = now
            for row in rows:
                key = (row["family"], int(row["second"]))
                fs = self._open.get(key) or self._open.setdefault(key, FamilySecond(*key))
                for k in COUNTERS:
                    setattr(fs, k, getattr(fs, k) + int(row.get(k, 0)))
                for var, n in row.get("served", {}).items():
                    fs.served[var] = fs.served.get(var, 0) + n
                if "served_met" in row:
                    fs.served_met = fs.served_met or {}
                    for var, n in row["served_met"].items():
                        fs.served_met[var] = fs.served_met.get(var, 0) + n
        return len(rows)

    def flush(self, before_second: int) -> list[FamilySecond]:
        """Remove and return the seconds before `before_second`, oldest first."""
        with self._lock:
            keys = sorted((k for k in self._open if k[1] < before_second), key=lambda k: (k[1], k[0]))
            return [self._open.pop(k) for k in keys]

    def active_clients(self, now: float, within_s: float = 10.0) -> int:
        with self._lock:
            return sum(1 for t in self.clients.values() if now - t <= within_s)
