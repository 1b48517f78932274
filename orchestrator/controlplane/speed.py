"""Observed speed: how fast each (device class, variant) really runs, against its profile.

The data plane keeps, per route, the service times of the batches that ran alone on their
device (no other batch of that client's in flight there: dataplane/route_state.py); shims and
gateways report them with their telemetry, per device, variant and batch size, and the simulator
hands them over directly. `ObservedSpeed` turns them into a **factor** per (device class,
variant, profiled batch size): observed mean service time / profiled p50, with every sum
decayed exponentially (half-life `HALF_LIFE_S`), used only once `MIN_BATCHES` batches back it
(else the variant's factor over all batch sizes; else, for a variant never measured alone
there, the device class's over all its variants; else 1), bounded to `BOUNDS`, and 1 within a
dead band of ±`BAND` (a profile gives p50s, the observation a mean: a few percent is no news).
So one noisy second cannot move a plan, and a device that really runs 30 % slower is planned
at its speed within a minute or two.

The planner plans with the profiles scaled by those factors (`corrected`: latencies x factor,
throughput / factor); the controller re-plans when a factor the plan in force relied on has
moved by more than `REPLAN_CHANGE` since it was made (`change`).

A device that more than one client sent batches to within the last `SHARED_WINDOW_S` is not
measured: a client sees only its own batches, so another client's batch running beside one of
its own would pass for slowness.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.dataplane.latency import LatencyModel
from orchestrator.plan import Plan
from orchestrator.profiles import ProfileSet, scaled_record

HALF_LIFE_S = 60.0
MIN_BATCHES = 20.0
BOUNDS = (0.5, 3.0)
BAND = 0.10
REPLAN_CHANGE = 0.15
SHARED_WINDOW_S = 30.0

Pair = tuple[str, str]  # (device class, variant)


@dataclass
class _Sums:
    """Decayed sums of one (device class, variant, batch bucket): batches, their observed
    seconds, and what the profile predicted for them (p50 seconds)."""

    batches: float = 0.0
    observed_s: float = 0.0
    profiled_s: float = 0.0
    at: float = 0.0  # when the sums were last decayed

    def decay(self, now: float) -> None:
        if now > self.at:
            k = 0.5 ** ((now - self.at) / HALF_LIFE_S)
            self.batches, self.observed_s, self.profiled_s, self.at = (self.batches * k, self.observed_s * k,
                                                                       self.profiled_s * k, now)


class ObservedSpeed:
    """Speed factors learned from observed batches, over `profiles` (the profiled figures).
    `class_of(device_id)` names a device's class (None: not in the cluster). Thread-safe."""

    def __init__(self, profiles: ProfileSet, class_of: Callable[[str], str | None]):
        self.profiles = profiles
        self.class_of = class_of
        self._lock = threading.Lock()
        self._sums: dict[tuple[str, str, int], _Sums] = {}  # (class, variant, bucket) -> sums
        self._senders: dict[str, dict[str, float]] = {}  # device -> client -> when it last sent a batch there
        self._p50: dict[tuple[str, str, int, int], LatencyModel] = {}  # (class, variant, instances, threads)
        self._buckets: dict[Pair, list[int]] = {}  # the pair's profiled batch sizes
        self.shared_skipped = 0  # batches not counted: their device had several clients
        self.used: dict[Pair, float] = {}  # the factors the plan in force was made with (`corrected` records them)
        self._totals: dict[tuple, list[float]] | None = None  # the sums added up per level; None: stale
        self._pair_list: list[Pair] | None = None

    # --- what the data plane saw -------------------------------------------------------------
    def observe(self, client_id: str, device_id: str, variant: str, instances: int, threads: int, sent: int,
                alone: dict[int, tuple[float, float]], now: float) -> None:
        """One client's report for one route: `sent` batches in all, and of those that ran alone,
        per batch size (batches, service seconds); `instances`/`threads` are the placement's."""
        cls = self.class_of(device_id)
        if cls is None:
            return
        with self._lock:
            senders = self._senders.setdefault(device_id, {})
            if sent > 0:
                senders[client_id] = now
            for c in [c for c, t in senders.items() if now - t > SHARED_WINDOW_S]:
                del senders[c]
            if len(senders) > 1:
                self.shared_skipped += int(sum(n for n, _ in alone.values()))
                return
            self._totals = self._pair_list = None
            p50 = self._p50_model(cls, variant, instances, threads)
            if p50 is None:
                return
            buckets = self._buckets[(cls, variant)]
            for size, (n, seconds) in alone.items():
                if n <= 0 or not math.isfinite(seconds) or seconds < 0:
                    continue
                bucket = buckets[min(bisect.bisect_left(buckets, size), len(buckets) - 1)]
                sums = self._sums.get((cls, variant, bucket))
                if sums is None:
                    sums = self._sums[(cls, variant, bucket)] = _Sums(at=now)
                sums.decay(now)
                sums.batches += n
                sums.observed_s += seconds
                sums.profiled_s += n * p50.seconds(size)

    def observe_report(self, client_id: str, batches: list[dict], now: float) -> None:
        """A client's telemetry `batches` (checked by the intake: controlplane/intake.py)."""
        for row in batches:
            self.observe(client_id, row["device_id"], row["variant"], row.get("instances", 1), row.get("threads", 1),
                         row.get("sent", 0), {size: (n, seconds) for size, n, seconds in row.get("alone", [])}, now)

    def _p50_model(self, cls: str, variant: str, instances: int, threads: int) -> LatencyModel | None:
        key = (cls, variant, instances, threads)
        model = self._p50.get(key)
        if model is None:
            records = [r for r in self.profiles.for_pair(variant, cls)
                       if r.instances == instances and r.threads == threads]
            if not records:
                return None
            model = self._p50[key] = LatencyModel({r.batch_size: r.p50_ms for r in records})
            self._buckets[(cls, variant)] = sorted({r.batch_size for r in self.profiles.for_pair(variant, cls)})
        return model

    # --- what the planner and the controller use ---------------------------------------------
    def factor(self, cls: str, variant: str, batch_size: int | None = None) -> float:
        """Observed / profiled time of (class, variant) at a profiled batch size (None: over all
        sizes): bounded, 1 where too few batches back it or it is within the dead band."""
        with self._lock:
            return self._factor(cls, variant, batch_size)

    def _factor(self, cls: str, variant: str, batch_size: int | None) -> float:
        totals = self._level_totals()
        levels = [(cls, variant, None), (cls, None, None)]  # the variant, any size; the class (a variant never measured alone)
        if batch_size is not None:
            levels.insert(0, (cls, variant, batch_size))
        for level in levels:
            batches, observed, profiled = totals.get(level, (0.0, 0.0, 0.0))
            if batches >= MIN_BATCHES and profiled > 0:
                ratio = min(BOUNDS[1], max(BOUNDS[0], observed / profiled))
                return 1.0 if abs(ratio - 1.0) <= BAND else ratio
        return 1.0

    def _level_totals(self) -> dict[tuple, list[float]]:
        """(batches, observed s, profiled s) summed per (class, variant, bucket), per (class,
        variant, None) and per (class, None, None); kept until the next observation."""
        if self._totals is None:
            totals: dict[tuple, list[float]] = {}
            for (c, v, b), sums in self._sums.items():
                for key in ((c, v, b), (c, v, None), (c, None, None)):
                    t = totals.setdefault(key, [0.0, 0.0, 0.0])
                    t[0] += sums.batches
                    t[1] += sums.observed_s
                    t[2] += sums.profiled_s
            self._totals = totals
        return self._totals

    def _pairs(self) -> list[Pair]:
        """Every profiled (class, variant) of a class with observations."""
        if self._pair_list is None:
            classes = {c for c, _, _ in self._sums}
            self._pair_list = sorted({(r.device_class, r.variant) for r in self.profiles.records
                                      if r.device_class in classes})
        return self._pair_list

    def corrected(self) -> ProfileSet:
        """The profiles with each measured (class, variant) scaled by its factors; records the
        factors as those of the next plan (`used`)."""
        with self._lock:
            factors = {p: self._factor(*p, None) for p in self._pairs()}
            self.used = {p: f for p, f in factors.items() if f != 1.0}
            if not self.used:
                return self.profiles
            return ProfileSet([scaled_record(r, self._factor(r.device_class, r.variant, r.batch_size),
                                             "the speed observed in service")
                               if (r.device_class, r.variant) in self.used else r for r in self.profiles.records])

    def change(self) -> str | None:
        """Why the plan in force no longer matches the speeds observed (None: it does): a factor
        that moved by more than REPLAN_CHANGE since the plan was made."""
        with self._lock:
            moved = []
            by_class: dict[str, list[str]] = {}  # variants that move with their class's factor
            for c, v in self._pairs():
                now, then = self._factor(c, v, None), self.used.get((c, v), 1.0)
                if abs(now / then - 1.0) <= REPLAN_CHANGE:
                    continue
                if self._measured(c, v):
                    moved.append(f"{v} on {c} runs at {now:.2f}x its profiled time (the plan used {then:.2f}x)")
                else:
                    by_class.setdefault(c, []).append(v)
            for c, variants in sorted(by_class.items()):
                moved.append(f"{len(variants)} variant(s) not measured alone on {c} are planned at its "
                             f"{self._factor(c, variants[0], None):.2f}x")
            return "; ".join(moved) or None

    def _measured(self, cls: str, variant: str) -> bool:
        return self._level_totals().get((cls, variant, None), (0.0,))[0] >= MIN_BATCHES

    def replan_reason(self) -> tuple[str, bool] | None:
        """`change()` and whether a device got slower (re-plan at once: capacity fell)."""
        reason = self.change()
        return (reason, self.slower()) if reason else None

    def slower(self) -> bool:
        """Whether some measured pair runs slower than the plan in force assumed (capacity fell:
        re-plan at once, as for rising demand)."""
        with self._lock:
            return any(self._factor(c, v, None) > self.used.get((c, v), 1.0) * (1 + REPLAN_CHANGE)
                       for c, v in self._pairs())

    def plan_rows(self, plan: Plan | None) -> list[dict]:
        """`rows` with the capacity of `plan`'s placements of each pair."""
        capacity: dict[Pair, tuple[int, float]] = {}
        for p in plan.placements if plan is not None else ():
            cls = self.class_of(p.device_id)
            if cls is not None and p.capacity_rps > 0:
                capacity.setdefault((cls, p.variant), (p.batch_cap, p.capacity_rps))
        return self.rows(capacity)

    def rows(self, capacity: dict[Pair, tuple[int, float]] | None = None) -> list[dict]:
        """Per measured (class, variant): batches behind it, its factor, the factor the plan in
        force used, and (from `capacity`: pair -> (batch cap, profiled capacity rps) of the plan's
        placements) the profiled and observed capacity, for the API and the dashboard."""
        with self._lock:
            out = []
            for c, v in sorted({(c, v) for c, v, _ in self._sums}):
                f = self._factor(c, v, None)
                row = {"device_class": c, "variant": v, "factor": round(f, 3),
                       "planned_factor": round(self.used.get((c, v), 1.0), 3),
                       "batches": round(sum(s.batches for (cc, vv, _), s in self._sums.items()
                                            if (cc, vv) == (c, v)), 1)}
                if capacity and (c, v) in capacity:
                    cap, rps = capacity[(c, v)]
                    row.update(batch_cap=cap, profiled_capacity_rps=round(rps, 2),
                               observed_capacity_rps=round(rps / self._factor(c, v, cap), 2))
                out.append(row)
            return out
