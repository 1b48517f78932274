"""Telemetry intake: the shims' per-second reports (POST /api/v1/telemetry), summed over clients.

Body (orchestrator/telemetry.py `Telemetry.report`, documented in docs/shim.md):
    {"client_id": "...", "kind": "shim", "sent_at": 1732350000.1, "interval_s": 1, "latency_buckets_ms": [...],
     "seconds": [{"family": "resnet", "second": 1732349999, "arrivals": 40, "completions": 39,
                  "met": 38, "deadline_misses": 2, "drops": 1, "errors": 0, "retries": 0,
                  "latency_ms_hist": [...], "latency_ms_sum": 812.5, "served": {"resnet18": 39},
                  "served_met": {"resnet18": 38}}]}
Seconds are kept until the controller flushes them (a little after they end, so reports that
arrive late from several shims still add up). `kind` says what reports: an embedded "shim" or a
"gateway" (orchestrator/gateway); the dashboard shows each client's kind and request rate.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

COUNTERS = ("arrivals", "completions", "met", "deadline_misses", "drops", "errors", "retries")

# Bounds on a report, so that no client can make the intake grow without end, poison the
# estimates or overflow the store (SQLite integers are 64-bit).
MAX_ROWS = 1000  # rows per report (a shim reports every second: a few rows per family)
MAX_COUNT = 10**7  # any counter of one family in one second
MAX_AGE_S = 3600  # a row's second may be this far in the past ...
MAX_AHEAD_S = 60  # ... or this far in the future (clock skew between shim and control plane)
CLIENT_KEEP_S = 60.0  # a client that has not reported for this long is forgotten
MAX_CLIENT_ID = 200  # characters
CLIENT_KINDS = ("shim", "gateway")
RATE_WINDOW_S = 10  # a client's request rate: its arrivals over the last this many seconds


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


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_report(body, now: float, families: dict[str, set[str]] | None = None) -> list[dict]:
    """The report's seconds, checked; raises BadTelemetry naming the first bad field.

    `families`: the catalog's families and their variants (None: any name is taken). Each row's
    `second` must lie in now - MAX_AGE_S .. now + MAX_AHEAD_S; counters are integers in
    0..MAX_COUNT with met <= completions, and the per-variant counts add up to no more than
    completions (`served`) and met (`served_met`), as the shims count them (orchestrator/telemetry.py)."""
    if not isinstance(body, dict):
        raise BadTelemetry("telemetry body must be a JSON object with a 'seconds' list")
    client = body.get("client_id", "?")
    if not isinstance(client, str) or len(client) > MAX_CLIENT_ID:
        raise BadTelemetry(f"client_id must be a string of at most {MAX_CLIENT_ID} characters, not {_shown(client)}")
    kind = body.get("kind", "shim")
    if kind not in CLIENT_KINDS:
        raise BadTelemetry(f"kind must be one of {', '.join(CLIENT_KINDS)}, not {_shown(kind)}")
    seconds = body.get("seconds")
    if not isinstance(seconds, list):
        raise BadTelemetry("telemetry body needs a 'seconds' list (one entry per family per second)")
    if len(seconds) > MAX_ROWS:
        raise BadTelemetry(f"a report may carry at most {MAX_ROWS} rows in 'seconds', not {len(seconds)}")
    for i, row in enumerate(seconds):
        where = f"seconds[{i}]"
        if not isinstance(row, dict):
            raise BadTelemetry(f"{where} must be an object")
        family = row.get("family")
        if not isinstance(family, str) or not family:
            raise BadTelemetry(f"{where}.family must be a non-empty string")
        if families is not None and family not in families:
            raise BadTelemetry(f"{where}.family {_shown(family)} is not in the catalog (families: "
                               f"{', '.join(sorted(families))})")
        second = row.get("second")
        if isinstance(second, bool) or not isinstance(second, (int, float)) or (
                isinstance(second, float) and not math.isfinite(second)):
            raise BadTelemetry(f"{where}.second must be a Unix time in seconds, not {_shown(second)}")
        if not now - MAX_AGE_S <= second <= now + MAX_AHEAD_S:
            raise BadTelemetry(f"{where}.second {_shown(second)} is not within {MAX_AGE_S} s before and "
                               f"{MAX_AHEAD_S} s after the control plane's clock ({now:.0f})")
        for k in COUNTERS:
            if not _count(row.get(k, 0)):
                raise BadTelemetry(f"{where}.{k} must be an integer in 0..{MAX_COUNT}, not {_shown(row.get(k))}")
        if row.get("met", 0) > row.get("completions", 0):
            raise BadTelemetry(f"{where}.met ({row['met']}) exceeds completions ({row.get('completions', 0)})")
        for key, total in (("served", "completions"), ("served_met", "met")):
            served = row.get(key, {})
            if not isinstance(served, dict) or not all(_count(n) for n in served.values()):
                raise BadTelemetry(f"{where}.{key} must map variant names to integers in 0..{MAX_COUNT}")
            if families is not None:
                unknown = sorted(set(served) - families[family])
                if unknown:
                    raise BadTelemetry(f"{where}.{key} names {_shown(unknown[0])}, not a variant of {family!r} "
                                       f"({', '.join(sorted(families[family]))})")
            if sum(served.values()) > row.get(total, 0):
                raise BadTelemetry(f"{where}.{key} counts {sum(served.values())} answers, more than {total} "
                                   f"({row.get(total, 0)})")
    return seconds


@dataclass
class ClientSeen:
    """One reporting client: its kind, when it last reported, its arrivals per second (recent)."""

    kind: str
    last_report: float
    arrivals: dict[int, int] = field(default_factory=dict)  # second -> requests, over all families

    def requests_per_s(self, now: float) -> float:
        start = int(now) - RATE_WINDOW_S
        return sum(n for s, n in self.arrivals.items() if start <= s < int(now)) / RATE_WINDOW_S


class TelemetryIntake:
    """Sums reports per (family, second) until flushed. Thread-safe.

    `families`: the catalog's families and their variants; reports naming anything else are refused.
    What it holds stays bounded: rows lie within MAX_AGE_S..MAX_AHEAD_S of the clock, rows older
    than MAX_AGE_S that nobody flushed are dropped, and so are clients quiet for CLIENT_KEEP_S."""

    def __init__(self, families: dict[str, set[str]] | None = None):
        self.families = families
        self._lock = threading.Lock()
        self._open: dict[tuple[str, int], FamilySecond] = {}
        self.reports = 0
        self.clients: dict[str, ClientSeen] = {}  # client id -> what it reported

    def add(self, body, now: float) -> int:
        """Add a report (all of it, or nothing: BadTelemetry); returns the number of rows."""
        rows = parse_report(body, now, self.families)
        with self._lock:
            self.reports += 1
            client_id = body.get("client_id", "?")
            seen = self.clients.get(client_id)
            if seen is None:
                seen = self.clients[client_id] = ClientSeen(body.get("kind", "shim"), now)
            seen.last_report = now
            for row in rows:
                second = int(row["second"])
                seen.arrivals[second] = seen.arrivals.get(second, 0) + int(row.get("arrivals", 0))
            for second in [s for s in seen.arrivals if s < now - 2 * RATE_WINDOW_S]:
                del seen.arrivals[second]
            for client in [c for c, t in self.clients.items() if now - t.last_report > CLIENT_KEEP_S]:
                del self.clients[client]
            for key in [k for k in self._open if k[1] < now - MAX_AGE_S]:
                del self._open[key]
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

    def pending(self) -> int:
        """How many (family, second) sums it holds, waiting for the controller."""
        with self._lock:
            return len(self._open)

    def flush(self, before_second: int) -> list[FamilySecond]:
        """Remove and return the seconds before `before_second`, oldest first."""
        with self._lock:
            keys = sorted((k for k in self._open if k[1] < before_second), key=lambda k: (k[1], k[0]))
            return [self._open.pop(k) for k in keys]

    def active_clients(self, now: float, within_s: float = 10.0) -> int:
        with self._lock:
            return sum(1 for c in self.clients.values() if now - c.last_report <= within_s)

    def client_list(self, now: float, within_s: float = 10.0) -> list[dict]:
        """The clients that reported within `within_s`: id, kind, request rate, seconds since."""
        with self._lock:
            return [{"id": cid, "kind": c.kind, "requests_per_s": round(c.requests_per_s(now), 2),
                     "reported_s_ago": round(now - c.last_report, 1)}
                    for cid, c in sorted(self.clients.items()) if now - c.last_report <= within_s]
