"""Telemetry intake: the shims' per-second reports (POST /api/v1/telemetry), summed over clients.

Body (orchestrator/telemetry.py `Telemetry.report`, documented in docs/shim.md):
    {"client_id": "...", "kind": "shim", "sent_at": 1732350000.1, "interval_s": 1, "latency_buckets_ms": [...],
     "seconds": [{"family": "resnet", "second": 1732349999, "arrivals": 40, "completions": 39,
                  "met": 38, "deadline_misses": 2, "drops": 1, "errors": 0, "retries": 0,
                  "latency_ms_hist": [...], "latency_ms_sum": 812.5, "served": {"resnet18": 39},
                  "served_met": {"resnet18": 38}}],
     "batches": [{"device_id": "cpu0", "variant": "resnet18", "instances": 1, "threads": 1, "sent": 20,
                  "alone": [[1, 12, 0.251], [2, 5, 0.183]]}]}
Seconds are kept until the controller flushes them (a little after they end, so reports that
arrive late from several shims still add up). `kind` says what reports: an embedded "shim" or a
"gateway" (orchestrator/gateway); the dashboard shows each client's kind and request rate.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
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


MAX_BATCH_SIZE = 4096
MAX_INSTANCES = 64
MAX_THREADS = 256


def parse_batches(body: dict, families: dict[str, set[str]] | None = None) -> list[dict]:
    """The report's optional `batches` (per route: batches sent, and the service times of those
    that ran alone, by batch size), checked; BadTelemetry naming the first bad field."""
    batches = body.get("batches", [])
    if not isinstance(batches, list) or len(batches) > MAX_ROWS:
        raise BadTelemetry(f"batches must be a list of at most {MAX_ROWS} routes")
    variants = set().union(*families.values()) if families is not None else None
    for i, row in enumerate(batches):
        where = f"batches[{i}]"
        if not isinstance(row, dict):
            raise BadTelemetry(f"{where} must be an object")
        device = row.get("device_id")
        if not isinstance(device, str) or not device or len(device) > MAX_CLIENT_ID:
            raise BadTelemetry(f"{where}.device_id must be a non-empty string of at most {MAX_CLIENT_ID} "
                               f"characters, not {_shown(device)}")
        variant = row.get("variant")
        if not isinstance(variant, str) or (variants is not None and variant not in variants):
            raise BadTelemetry(f"{where}.variant {_shown(variant)} is not a variant in the catalog")
        for key, high in (("instances", MAX_INSTANCES), ("threads", MAX_THREADS)):
            v = row.get(key, 1)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= high:
                raise BadTelemetry(f"{where}.{key} must be an integer in 1..{high}, not {_shown(v)}")
        if not _count(row.get("sent", 0)):
            raise BadTelemetry(f"{where}.sent must be an integer in 0..{MAX_COUNT}, not {_shown(row.get('sent'))}")
        alone = row.get("alone", [])
        if not isinstance(alone, list) or len(alone) > MAX_BATCH_SIZE:
            raise BadTelemetry(f"{where}.alone must be a list of [batch size, batches, seconds]")
        for j, entry in enumerate(alone):
            ok = (isinstance(entry, list) and len(entry) == 3 and not isinstance(entry[0], bool)
                  and isinstance(entry[0], int) and 1 <= entry[0] <= MAX_BATCH_SIZE and _count(entry[1])
                  and not isinstance(entry[2], bool) and isinstance(entry[2], (int, float))
                  and math.isfinite(entry[2]) and 0 <= entry[2] <= entry[1] * 3600)
            if not ok:
                raise BadTelemetry(f"{where}.alone[{j}] must be [batch size 1..{MAX_BATCH_SIZE}, batches, "
                                   f"seconds (at most an hour a batch)], not {_shown(entry)}")
    return batches


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
        # called with (client id, the report's checked `batches`, now) after each report (observed speed)
        self.on_batches: Callable[[str, list[dict], float], None] | None = None

    def add(self, body, now: float) -> int:
        """Add a report (all of it, or nothing: BadTelemetry); returns the number of rows."""
        rows = parse_report(body, now, self.families)
        batches = parse_batches(body, self.families)
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
        if batches and self.on_batches is not None:
            self.on_batches(body.get("client_id", "?"), batches, now)
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
