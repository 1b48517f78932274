"""Per-request outcomes of a run and the metrics over them, shared by the live bench and the simulator.

Both the live bench (orchestrator/bench.py) and the simulator (orchestrator/simulator.py)
produce a `Run`: one `Outcomes` row per request of the trace, plus the plan changes the
run made (`PlanEvent`). `summarise` computes the same metrics from either, so a live number
and a simulated number mean the same thing. docs/evaluation.md defines each metric.

A request's status is one of:
  ok       answered within its deadline
  late     answered after its deadline
  dropped  answered at once with a deadline miss (the batching policy saw it could not make it)
  error    the call failed (after the shim's retry), or its model was unloaded under it
  unserved no route: the plan serves none of its family's traffic
Only "ok" counts as deadline met.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from orchestrator.dataplane.status import ANSWERED, STATUS_NAMES, Status
from orchestrator.errors import UserError
from orchestrator.files import write_atomic
from orchestrator.profiles import ProfileRecord, ProfileSet, scaled_record

WORST_WINDOW_S = 10.0
OUTCOME_COLUMNS = ("arrival_s", "family", "deadline_ms", "status", "latency_ms", "variant", "device", "accuracy")


@dataclass
class Outcomes:
    """One row per request, columns as arrays. Times are seconds from the start of the trace."""

    arrival_s: np.ndarray  # float64
    family: np.ndarray  # object (str)
    deadline_ms: np.ndarray  # float64
    status: np.ndarray  # object, one of STATUS_NAMES (dataplane/status.py)
    latency_ms: np.ndarray  # float64: arrival to answer (NaN when the request got no answer at all)
    variant: np.ndarray  # object: the variant that served it ("" when none)
    device: np.ndarray  # object ("" when none)
    accuracy: np.ndarray  # float64: the serving variant's top-1 accuracy, percent (0 when not served)

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        for name in OUTCOME_COLUMNS:
            if len(getattr(self, name)) != n:
                raise ValueError(f"outcome column {name} has {len(getattr(self, name))} rows, expected {n}")
        order = np.argsort(self.arrival_s, kind="stable")
        if np.any(order != np.arange(n)):
            for name in OUTCOME_COLUMNS:
                setattr(self, name, np.asarray(getattr(self, name))[order])

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def met(self) -> np.ndarray:
        """Deadline met: answered, and within the deadline."""
        return self.status == "ok"

    @property
    def answered(self) -> np.ndarray:
        return np.isin(self.status, ANSWERED)

    @property
    def effective(self) -> np.ndarray:
        """Per request: variant accuracy if the deadline was met, else 0 (percent)."""
        return np.where(self.met, self.accuracy, 0.0)

    @classmethod
    def from_rows(cls, rows: list[dict]) -> "Outcomes":
        cols = {c: [r[c] for r in rows] for c in OUTCOME_COLUMNS}
        return cls(arrival_s=np.array(cols["arrival_s"], dtype=np.float64),
                   family=np.array(cols["family"], dtype=object),
                   deadline_ms=np.array(cols["deadline_ms"], dtype=np.float64),
                   status=np.array([Status(s).value for s in cols["status"]], dtype=object),
                   latency_ms=np.array([math.nan if v is None else v for v in cols["latency_ms"]], dtype=np.float64),
                   variant=np.array(cols["variant"], dtype=object), device=np.array(cols["device"], dtype=object),
                   accuracy=np.array(cols["accuracy"], dtype=np.float64))

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(OUTCOME_COLUMNS)
        for a, f, d, s, lat, v, dev, acc in zip(self.arrival_s.tolist(), self.family.tolist(),
                                                 self.deadline_ms.tolist(), self.status.tolist(),
                                                 self.latency_ms.tolist(), self.variant.tolist(),
                                                 self.device.tolist(), self.accuracy.tolist()):
            w.writerow((f"{a:.6f}", f, f"{d:g}", s, "" if math.isnan(lat) else f"{lat:.3f}", v, dev, f"{acc:g}"))
        return buf.getvalue()

    @classmethod
    def read_csv(cls, path: str | os.PathLike) -> "Outcomes":
        p = Path(path)
        try:
            rows = list(csv.DictReader(io.StringIO(p.read_text())))
        except FileNotFoundError:
            raise UserError(f"{p}: outcomes file not found") from None
        for i, r in enumerate(rows):
            if r.get("status") not in STATUS_NAMES:
                raise UserError(f"{p}: line {i + 2}: status must be one of {', '.join(STATUS_NAMES)}, "
                                f"not {r.get('status')!r}")
        try:
            return cls(arrival_s=np.array([float(r["arrival_s"]) for r in rows]),
                       family=np.array([r["family"] for r in rows], dtype=object),
                       deadline_ms=np.array([float(r["deadline_ms"]) for r in rows]),
                       status=np.array([r["status"] for r in rows], dtype=object),
                       latency_ms=np.array([float(r["latency_ms"]) if r["latency_ms"] else math.nan for r in rows]),
                       variant=np.array([r["variant"] for r in rows], dtype=object),
                       device=np.array([r["device"] for r in rows], dtype=object),
                       accuracy=np.array([float(r["accuracy"]) for r in rows]))
        except (KeyError, ValueError) as e:
            raise UserError(f"{p}: malformed outcomes file ({e})") from None


@dataclass(frozen=True)
class PlanEvent:
    """A plan taking effect during a run (routes switched to it)."""

    time_s: float  # seconds from the start of the trace (0 for the initial plan)
    version: int
    loads: int  # (device, variant) models loaded (or reloaded) for it
    unloads: int
    demand_rps: dict[str, float]  # the demand it was planned for
    routes: dict[str, list[tuple[str, str, float]]]  # family -> (device, variant, weight)
    decided_s: float | None = None  # when the re-plan was decided (loads happen in between)
    reason: str = ""


@dataclass(frozen=True)
class ServedBatch:
    """One batch a live run sent: where, how big, its time at Triton (send to answer), and when
    it was sent (seconds from the trace's start: its answer's time less its time at Triton; NaN
    in files written before the column existed)."""

    device: str
    variant: str
    batch_size: int
    service_ms: float
    sent_s: float = math.nan


BATCH_COLUMNS = ("device", "variant", "batch_size", "service_ms", "sent_s")
SPEED_WINDOW_S = 1.0  # `Run.speed_timeline`'s window: contention that comes and goes for seconds
NOTE_WINDOW_S = 10.0  # `Run.speed_note`'s windows (as the worst 10-s effective accuracy's)
NOTE_MIN_BATCHES = 5  # a window's speed in the note needs this many lone batches behind it


@dataclass(frozen=True)
class SpeedTimeline:
    """Per device, how many times its profiled time a batch took, window by window from the
    trace's start (the last window's factor holds after it): the run's conditions where they came
    and went. `Simulator(speed=...)` serves each batch at the factor of the window it starts in."""

    window_s: float
    factors: dict[str, list[float]]  # device id -> factor per window


@dataclass
class Run:
    """What one policy did on one trace: every request's outcome and the plans it went through
    (and, live, every batch it sent)."""

    policy: str
    outcomes: Outcomes
    plans: list[PlanEvent] = field(default_factory=list)
    duration_s: float = 0.0  # length of the trace (the window metrics are computed over)
    mode: str = "live"  # live | simulated
    notes: list[str] = field(default_factory=list)
    batches: list[ServedBatch] = field(default_factory=list)  # live runs: the batches sent, in answer order
    activity_csv: str = ""  # live runs: the machine's activity per second (activity.ActivityRecorder)

    def observed_profiles(self, device_classes: dict[str, str]) -> ProfileSet:
        """The run's own service times as profile records, one per (variant, device class, batch
        size): the p50/p95/p99 of the batches' time at Triton. A simulator given these serves
        with the latencies the live system really had (CPU contention included)."""
        groups: dict[tuple[str, str, int], list[float]] = {}
        for b in self.batches:
            groups.setdefault((b.variant, device_classes[b.device], b.batch_size), []).append(b.service_ms)
        records = []
        for (variant, cls, size), ms in sorted(groups.items()):
            q50, q95, q99 = (float(x) for x in np.percentile(ms, [50, 95, 99], method="inverted_cdf"))
            records.append(ProfileRecord(variant=variant, device_class=cls, batch_size=size, instances=1, threads=1,
                                         p50_ms=q50, p95_ms=q95, p99_ms=q99, throughput_rps=size * 1000.0 / q50,
                                         samples=len(ms), source="observed",
                                         note=f"service times of the {self.mode} {self.policy} run"))
        return ProfileSet(records)

    def slowdown(self, profiles: ProfileSet, device_classes: dict[str, str]) -> dict[str, float]:
        """Per device class, how much slower the run's batches were than `profiles` said: the
        median over its batches of observed time / profiled p50 at the same variant and batch
        size (1.0 where nothing can be compared). The run's conditions (other jobs on the cores)
        in one number per class, robust to the few batches the shim itself held up."""
        ratios: dict[str, list[float]] = {}
        for b, ratio in profiled_ratios(self.batches, profiles, device_classes):
            ratios.setdefault(device_classes[b.device], []).append(ratio)
        return {cls: float(np.median(ratios[cls])) if ratios.get(cls) else 1.0 for cls in set(device_classes.values())}

    def speed_timeline(self, profiles: ProfileSet, device_classes: dict[str, str],
                       window_s: float = SPEED_WINDOW_S) -> SpeedTimeline:
        """`slowdown` per device and window of `window_s` seconds (by when each batch was sent):
        the median of time / profiled p50 of the batches that ran alone on their device (one
        that overlapped another was slowed by it, which a simulator models itself). A window
        without one keeps the window before's factor (the first ones: the device's median over
        its batches that ran alone, or over all of them if none did)."""
        windows = max(1, math.ceil(self.duration_s / window_s))
        ratios: dict[str, list[list[float]]] = {d: [[] for _ in range(windows)] for d in device_classes}
        for b, ratio in profiled_ratios(alone_batches(self.batches), profiles, device_classes):
            ratios[b.device][min(max(int(b.sent_s / window_s), 0), windows - 1)].append(ratio)
        every: dict[str, list[float]] = {d: [] for d in device_classes}
        for b, ratio in profiled_ratios(self.batches, profiles, device_classes):
            every[b.device].append(ratio)
        factors = {}
        for device, per_window in ratios.items():
            alone = [r for w in per_window for r in w] or every[device]
            last = float(np.median(alone)) if alone else 1.0
            factors[device] = out = []
            for w in per_window:
                if w:
                    last = float(np.median(w))
                out.append(last)
        return SpeedTimeline(window_s, factors)

    def speed_note(self, profiles: ProfileSet, device_classes: dict[str, str],
                   window_s: float = NOTE_WINDOW_S) -> str | None:
        """How fast the batches that ran alone on their device ran, against `profiles`: per
        variant the median of time / profiled p50 (variants differ: profiled with all devices
        busy at once, a variant may run a little faster or slower alone), and the slowest window
        of `window_s` on any device (one with at least `NOTE_MIN_BATCHES` such batches). Policies
        benched one after the other on a machine other jobs share meet different conditions; this
        says which. None without batches to compare."""
        by_variant: dict[str, list[float]] = {}
        per_window: dict[tuple[str, int], list[float]] = {}
        for b, ratio in profiled_ratios(alone_batches(self.batches), profiles, device_classes):
            by_variant.setdefault(b.variant, []).append(ratio)
            per_window.setdefault((b.device, int(b.sent_s // window_s)), []).append(ratio)
        if not by_variant:
            return None
        text = ("batches that ran alone took " + ", ".join(f"{v} {float(np.median(r)):.2f}x"
                                                             for v, r in sorted(by_variant.items()))
                + " their profiled time (median)")
        slowest = max(((float(np.median(r)), d, w) for (d, w), r in per_window.items() if len(r) >= NOTE_MIN_BATCHES),
                      default=None)
        if slowest is not None:
            f, d, w = slowest
            text += f"; slowest {window_s:g}-s window: {d} {f:.2f}x at {w * window_s:g}-{(w + 1) * window_s:g} s"
        return text

    def save(self, directory: str | os.PathLike) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        write_atomic(d / f"{self.policy}.requests.csv", self.outcomes.to_csv())
        if self.batches:
            rows = [",".join(BATCH_COLUMNS)] + [f"{b.device},{b.variant},{b.batch_size},{b.service_ms:.3f},"
                                                f"{'' if math.isnan(b.sent_s) else f'{b.sent_s:.4f}'}"
                                                for b in self.batches]
            write_atomic(d / f"{self.policy}.batches.csv", "\n".join(rows) + "\n")
        if self.activity_csv:
            write_atomic(d / f"{self.policy}.activity.csv", self.activity_csv)
        meta = {"policy": self.policy, "duration_s": self.duration_s, "mode": self.mode, "notes": self.notes,
                "plans": [asdict(p) for p in self.plans]}
        write_atomic(d / f"{self.policy}.plans.json", json.dumps(meta, indent=1) + "\n")
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike, policy: str) -> "Run":
        d = Path(directory)
        outcomes = Outcomes.read_csv(d / f"{policy}.requests.csv")
        try:
            meta = json.loads((d / f"{policy}.plans.json").read_text())
        except FileNotFoundError:
            raise UserError(f"{d / f'{policy}.plans.json'}: not found") from None
        plans = [PlanEvent(**{**p, "routes": {f: [tuple(r) for r in rs] for f, rs in p["routes"].items()}})
                 for p in meta["plans"]]
        batches = []
        batch_file = d / f"{policy}.batches.csv"
        if batch_file.exists():
            for row in csv.DictReader(batch_file.read_text().splitlines()):
                batches.append(ServedBatch(row["device"], row["variant"], int(row["batch_size"]),
                                           float(row["service_ms"]), float(row.get("sent_s") or math.nan)))
        activity = d / f"{policy}.activity.csv"
        return cls(policy, outcomes, plans, float(meta["duration_s"]), meta.get("mode", "live"), meta.get("notes", []),
                   batches, activity.read_text() if activity.exists() else "")


# --- metrics --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """The results-table row of one run."""

    policy: str
    requests: int
    duration_s: float
    offered_rps: float  # arrivals per second
    served_rps: float  # answered (ok or late) per second
    goodput_rps: float  # answered within the deadline per second
    effective_accuracy: float  # mean over ALL requests of accuracy x deadline met, percent
    worst_window_accuracy: float  # the lowest effective accuracy of any 10-s window, percent
    served_accuracy: float  # mean accuracy of the answered requests, percent
    miss_ratio: float  # share of requests whose deadline was not met (late, dropped, error, unserved)
    drop_ratio: float  # share dropped by the batching policy
    error_ratio: float  # share failed or unserved
    p50_ms: float  # latency percentiles of answered requests
    p99_ms: float
    switches: int  # model loads after the initial plan
    plan_changes: int  # plans that took effect after the initial one

    def row(self) -> dict:
        return asdict(self)


def summarise(run: Run, window_s: float = WORST_WINDOW_S) -> Summary:
    o = run.outcomes
    n = len(o)
    duration = run.duration_s or (float(o.arrival_s[-1]) if n else 0.0)
    duration = max(duration, 1e-9)
    met = o.met
    answered = o.answered
    lat = o.latency_ms[answered]
    p50, p99 = (float(np.percentile(lat, 50)), float(np.percentile(lat, 99))) if len(lat) else (math.nan, math.nan)
    later = run.plans[1:]
    return Summary(
        policy=run.policy, requests=n, duration_s=round(duration, 3), offered_rps=n / duration,
        served_rps=float(answered.sum()) / duration, goodput_rps=float(met.sum()) / duration,
        effective_accuracy=float(o.effective.mean()) if n else 0.0,
        worst_window_accuracy=worst_window_accuracy(o, window_s, duration),
        served_accuracy=float(o.accuracy[answered].mean()) if answered.any() else 0.0,
        miss_ratio=float(1.0 - met.mean()) if n else 0.0,
        drop_ratio=float((o.status == "dropped").mean()) if n else 0.0,
        error_ratio=float(((o.status == "error") | (o.status == "unserved")).mean()) if n else 0.0,
        p50_ms=p50, p99_ms=p99, switches=sum(p.loads for p in later), plan_changes=len(later))


def per_second(o: Outcomes, duration_s: float, bin_s: float = 1.0) -> dict[str, np.ndarray]:
    """Per bin of arrival time: arrivals, answered, met, and the sum of effective accuracy."""
    nbins = max(1, math.ceil(duration_s / bin_s))
    idx = np.minimum((o.arrival_s // bin_s).astype(np.int64), nbins - 1)
    return {"arrivals": np.bincount(idx, minlength=nbins).astype(np.float64),
            "answered": np.bincount(idx, weights=o.answered.astype(np.float64), minlength=nbins),
            "met": np.bincount(idx, weights=o.met.astype(np.float64), minlength=nbins),
            "effective_sum": np.bincount(idx, weights=o.effective, minlength=nbins)}


def worst_window_accuracy(o: Outcomes, window_s: float = WORST_WINDOW_S, duration_s: float | None = None) -> float:
    """The lowest effective accuracy over any window of `window_s` seconds (sliding in 1-s steps,
    by arrival time) that holds requests; the whole run's when it is shorter than one window."""
    if not len(o):
        return 0.0
    duration = duration_s if duration_s is not None else float(o.arrival_s[-1])
    bins = per_second(o, duration, 1.0)
    w = max(1, int(round(window_s)))
    if len(bins["arrivals"]) <= w:
        return float(o.effective.mean())
    kernel = np.ones(w)
    arrivals = np.convolve(bins["arrivals"], kernel, mode="valid")
    eff = np.convolve(bins["effective_sum"], kernel, mode="valid")
    ok = arrivals > 0
    return float(np.min(eff[ok] / arrivals[ok])) if ok.any() else 0.0


def variant_mix(o: Outcomes, duration_s: float, bin_s: float = 1.0) -> dict[str, np.ndarray]:
    """Answered requests per bin, per serving variant."""
    nbins = max(1, math.ceil(duration_s / bin_s))
    out = {}
    for v in sorted(set(o.variant[o.answered].tolist())):
        keep = o.answered & (o.variant == v)
        idx = np.minimum((o.arrival_s[keep] // bin_s).astype(np.int64), nbins - 1)
        out[v] = np.bincount(idx, minlength=nbins).astype(np.float64)
    return out


# --- the results table ----------------------------------------------------------------------

TABLE_COLUMNS = [  # (field, header, format)
    ("policy", "policy", "{}"),
    ("offered_rps", "offered rps", "{:.1f}"),
    ("served_rps", "served rps", "{:.1f}"),
    ("goodput_rps", "in-deadline rps", "{:.1f}"),
    ("effective_accuracy", "eff. accuracy %", "{:.2f}"),
    ("worst_window_accuracy", "worst 10-s eff. acc. %", "{:.2f}"),
    ("served_accuracy", "served accuracy %", "{:.2f}"),
    ("miss_ratio", "miss ratio", "{:.3f}"),
    ("p50_ms", "p50 ms", "{:.1f}"),
    ("p99_ms", "p99 ms", "{:.1f}"),
    ("switches", "switches", "{}"),
]


def markdown_table(summaries: list[Summary]) -> str:
    head = "| " + " | ".join(h for _, h, _ in TABLE_COLUMNS) + " |"
    rule = "|" + "|".join("---" if f == "policy" else "---:" for f, _, _ in TABLE_COLUMNS) + "|"
    rows = ["| " + " | ".join(fmt.format(getattr(s, f)) for f, _, fmt in TABLE_COLUMNS) + " |" for s in summaries]
    return "\n".join([head, rule, *rows]) + "\n"


def csv_table(summaries: list[Summary]) -> str:
    buf = io.StringIO()
    fields = list(Summary.__dataclass_fields__)
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for s in summaries:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in s.row().items()})
    return buf.getvalue()


def profiled_ratios(batches: list[ServedBatch], profiles: ProfileSet,
                    device_classes: dict[str, str]) -> list[tuple[ServedBatch, float]]:
    """(batch, its time / the profiled p50 at its variant, device class and size), for the
    batches that `profiles` has a one-instance record for."""
    p50 = {(r.variant, r.device_class, r.batch_size): r.p50_ms for r in profiles.records
           if r.instances == 1 and r.p50_ms > 0}
    out = []
    for b in batches:
        ref = p50.get((b.variant, device_classes[b.device], b.batch_size))
        if ref is not None:
            out.append((b, b.service_ms / ref))
    return out


def alone_batches(batches: list[ServedBatch]) -> list[ServedBatch]:
    """The batches (with a known send time) that were the only one at their device from send
    to answer."""
    out = []
    by_device: dict[str, list[ServedBatch]] = {}
    for b in batches:
        if not math.isnan(b.sent_s):
            by_device.setdefault(b.device, []).append(b)
    for timed in by_device.values():
        timed.sort(key=lambda b: b.sent_s)
        overlapped = [False] * len(timed)
        reach_end, reach = -math.inf, -1  # the latest end so far, and whose
        for i, b in enumerate(timed):
            end = b.sent_s + b.service_ms / 1000.0
            if b.sent_s < reach_end:
                overlapped[i] = overlapped[reach] = True
            if end > reach_end:
                reach_end, reach = end, i
        out += [b for b, o in zip(timed, overlapped) if not o]
    return out


def scaled_profiles(profiles: ProfileSet, factor_by_class: dict[str, float]) -> ProfileSet:
    """`profiles` with every latency of a device class multiplied by its factor (and the
    throughput divided by it): the profiles as they would have read under the conditions a run
    measured (`Run.slowdown`)."""
    return ProfileSet([scaled_record(r, factor_by_class.get(r.device_class, 1.0)) for r in profiles.records])
