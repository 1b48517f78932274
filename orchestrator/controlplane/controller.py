"""The controller loop: telemetry -> demand estimate -> re-plan when needed -> apply.

Every tick (default 1 s) it
  1. takes the finished telemetry seconds, writes them to the history and feeds the estimators;
  2. checks the devices' health;
  3. re-plans when one of these holds, and says which in the decision log:
       - there is demand but no plan yet,
       - a family's estimated demand left the hysteresis band around what the plan was made for,
       - the deadline-miss rate over the last seconds exceeds the trigger,
       - a device went down, came back, joined or left (node discovery), or lacks a model the
         plan in force has there (someone unloaded it); a device whose server restarted between
         two probes (health.py tells it from the index) came back: the plan in force without the
         models it lost (routes only) is put in force first, so no traffic goes to them while
         they load again,
       - the speed observed in service of a (device class, variant) the plan relies on moved by
         more than 15 % since the plan was made (controlplane/speed.py),
       - the operator changed a setting (SLO, floor, demand override);
     falling demand, devices found faster and the miss trigger wait for the minimum dwell time since the last change of
     what is loaded (by the controller, or a plan someone else applied), so noise does not reshuffle the cluster's models; rising demand does not
     wait (scale up at once, down slowly, as Kubernetes' autoscaler's stabilisation window). A
     re-plan that only moves traffic among models already loaded (no load, no unload: applied
     in milliseconds) does not start a dwell. A re-plan that comes out as the current plan is a
     "hold". A re-plan whose apply failed (a load Triton refused or did not finish; the executor
     rolled back) is tried again after a backoff (5 s, doubling up to 2 min) until one succeeds:
     a device that came back with a broken or stuck model gets traffic once it is mended, without
     waiting for demand to move. Until then the devices where a load failed are planned around
     (as if down): when the plan in force routes to one of them (it lost its models, or they
     never loaded), or the failed apply's rollback undid loads that succeeded elsewhere, a plan
     without them is applied at once, so no traffic waits for the retry. A re-plan made
     meanwhile leaves them out and does not cancel the retry; one that would route a family
     nowhere without them tries them again at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from orchestrator.controlplane.demand import DemandTracker
from orchestrator.controlplane.executor import ApplyBusy, ApplyFailed, NotRoutesOnly
from orchestrator.controlplane.intake import COUNTERS, FamilySecond
from orchestrator.controlplane.port import ControlPort
from orchestrator.errors import UserError
from orchestrator.plan import Plan

log = logging.getLogger("orchestrator.controller")

MISS_WINDOW_S = 5
MEMORY_S = 300  # a new tracker starts from this much recorded history (the peak estimator's window)
MIN_BAND_RPS = 1.0  # demand changes smaller than this never trigger a re-plan
NOISE_SIGMAS = 2.0  # nor do changes within this many standard deviations of Poisson noise (sqrt of the rate)
HELD_TOLERANCE = 0.05  # a re-plan for a demand this close to a hold's (relative; or MIN_BAND_RPS) is not made
HEADROOM_STEP = 1.25  # a miss-triggered re-plan plans for this much more than the estimate ...
HEADROOM_MAX = 1.5  # ... compounding up to this factor, and decays back to 1 while deadlines are met
HEADROOM_DECAY = 0.97  # per tick without misses
RETRY_FIRST_S = 5.0  # a failed re-plan is tried again after this long ...
RETRY_MAX_S = 120.0  # ... doubling up to this
MAX_TOTAL = 2**53  # a (family, second)'s counters are clamped to this (SQLite holds 64-bit integers)


class Controller:
    def __init__(self, cp: ControlPort, clock=time.time, wake: threading.Event | None = None):
        self.cp = cp
        self.clock = clock
        self.wake = wake if wake is not None else threading.Event()  # set: tick now (a setting changed)
        self.tracker = self._new_tracker(clock())
        self._misses: dict[str, deque[tuple[int, int]]] = {}  # family -> (misses, arrivals) per second
        self._live: dict[str, tuple[bool, int]] | None = None  # device -> (live, times it has become live)
        self._capacity_plan: Plan | None = None  # the plan `_capacity_of` (family -> capacity) is for
        self._capacity_of: dict[str, float] = {}
        self.headroom: dict[str, float] = {}  # family -> factor over the estimate (grows on misses)
        self._plan_headroom: dict[str, float] = {}  # family -> the headroom the plan in force was made with
        self.miss_family = ""  # the family the last miss-triggered reason names
        self.demand_rose = False  # whether the last demand-triggered reason was a rise
        self.last_change = 0.0  # when what is loaded last changed (the dwell counts from here)
        self._version_seen: int | None = None  # the plan version in force at the last tick
        self._version_since = 0.0  # when this controller first saw that version
        self._own_change = False  # the next new version is the controller's own (its dwell is set already)
        self._held: tuple[Plan | None, dict[str, float]] = (None, {})  # the plan in force at the last re-plan, and its demand
        self._health_pending: list[str] = []  # health changes seen but not yet planned for (an apply was running)
        self._lacking: dict[str, frozenset[str]] = {}  # device -> planned models not READY at the last tick
        self._lacking_said: set[tuple[str, frozenset[str]]] = set()  # ... of those, already planned for
        self._retry: tuple[float, float, str] | None = None  # after a failed re-plan: (when, backoff, its reason)
        self._quarantine: set[str] = set()  # devices whose loads failed: planned around until the retry
        self._released: frozenset[str] = frozenset()  # quarantined devices the last `_solve` let out
        self._busy = False  # the last `_replan` met another apply in progress (nothing was tried)
        self._restarted: set[str] = set()  # devices live at two looks with a new run between them
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ticks = 0

    # -- thread ----------------------------------------------------------------------------
    def start(self) -> "Controller":
        self._thread = threading.Thread(target=self._run, name="controller", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            woken = self.wake.wait(self.cp.config.tick_s)
            if self._stop.is_set():
                return
            self.wake.clear()
            try:
                self.tick(settings_changed=woken)
            except Exception:  # noqa: BLE001 - the loop must survive; the log has the details
                log.exception("controller tick failed")

    # -- one tick --------------------------------------------------------------------------
    def tick(self, settings_changed: bool = False) -> str | None:
        """Run one control step; returns the re-plan reason when it re-planned."""
        now = self.clock()
        self.ticks += 1
        if self.tracker.estimator != self.cp.config.estimator:
            self.tracker = self._new_tracker(now)
        plan = self.cp.plan
        if plan is not None and plan.version != self._version_seen:
            if not self._own_change:
                self.last_change = now  # someone else's plan (an operator's) starts the dwell too
                self._plan_headroom = {}
            self._own_change = False
            self._version_seen, self._version_since = plan.version, now
        elif self._own_change and not self.cp.busy:
            self._own_change = False  # the controller's last re-plan came to no new version (a hold)
        self._ingest(now)
        self.tracker.set_horizon(max(2.0, self.cp.last_apply_s + self.cp.config.tick_s))
        self._decay_headroom()
        self.cp.estimates = {f: round(v * self.headroom.get(f, 1.0), 3) for f, v in self.tracker.estimates().items()}
        changed = self._health_change()
        if changed:
            self._health_pending.append(changed)
        if not self.cp.config.auto or self.cp.busy:
            if not self.cp.config.auto:
                self._restarted.clear()  # an operator plans by hand: nothing to route around for them
            return None  # a health change seen meanwhile stays pending: it is planned for once the apply ends
        health_reason = "device health changed: " + "; ".join(self._health_pending) if self._health_pending else None
        pending, self._health_pending = self._health_pending, []
        restarted, self._restarted = self._restarted, set()
        if restarted:
            self._route_around(restarted)
        reason = health_reason or ("operator changed a setting" if settings_changed else None)
        if reason is not None and self.cp.plan is None and not any(v > 0 for v in self.cp.planning_demand().values()):
            reason = None  # nothing to plan for yet: an empty plan would only unload models
        if reason is None and self._retry is not None and now >= self._retry[0]:
            reason = f"retry of a failed re-plan ({self._retry[2]})"
            self._quarantine.clear()  # the retry plans with them again
            self._mark_down()
        urgent = reason is not None
        missed = False
        if reason is None:
            change = self.cp.speed_change()
            if change is not None:  # slower: capacity fell, re-plan at once; faster waits out the dwell
                reason, urgent = "speed changed: " + change[0], change[1]
        if reason is None:
            reason = self._demand_reason()
            if reason is None:
                reason = self._miss_reason()
                missed = reason is not None
            if reason is not None and self._repeats_hold(missed):
                reason, missed = None, False
            elif reason is not None and not missed:
                urgent = self.demand_rose  # scale up at once; only scaling down waits out the dwell
                self.headroom.clear()  # headroom learned from misses under the old demand does not carry over
        if reason is None:
            return None
        if not urgent and self.cp.plan is not None and now - self.last_change < self.cp.config.dwell_s:
            return None
        if missed:  # the plan met the estimate on paper but not in practice: plan with headroom
            fam = self.miss_family
            self.headroom[fam] = self._raised_headroom(fam)
            est = self.tracker.estimate(fam) or 0.0
            self.cp.estimates[fam] = round(est * self.headroom[fam], 3)
            reason += f"; planning with {self.headroom[fam]:.2f}x headroom"
        before = self.last_change
        self.last_change = now
        if not self._replan(reason):
            self.last_change = before  # routes only (or nothing) changed: no dwell
            if self._busy and health_reason:  # an operator's apply came first: plan for it after that
                self._health_pending = pending + self._health_pending
        return reason

    def _new_tracker(self, now: float) -> DemandTracker:
        """A tracker for the configured estimator, started from the arrivals recorded over the
        last `MEMORY_S` (a restarted control plane, or another estimator chosen): the peak
        estimator remembers the bursts of the last 5 minutes, and would otherwise plan for the
        calm until the next burst shows it again."""
        tracker = DemandTracker(self.cp.config.estimator)
        for family, second, arrivals in self.cp.recorded_arrivals(int(now) - self.cp.config.lateness_s - MEMORY_S):
            tracker.observe(family, second, arrivals)
        return tracker

    def _ingest(self, now: float) -> None:
        rows = [fs for fs in map(self._sane, self.cp.flush_telemetry(int(now) - self.cp.config.lateness_s)) if fs]
        if not rows:
            return
        plan = self.cp.plan
        acc = {v.name: v.accuracy for v in self.cp.catalog.variants.values()}
        if plan is not self._capacity_plan:
            self._capacity_plan, self._capacity_of = plan, {}
        capacity_of = self._capacity_of
        history = []
        for fs in rows:
            self.tracker.observe(fs.family, fs.second, fs.arrivals)
            window = self._misses.setdefault(fs.family, deque(maxlen=MISS_WINDOW_S))
            misses = fs.deadline_misses + fs.errors
            window.append((misses, fs.arrivals))
            if fs.served_met is not None:  # exact: accuracy of each in-time answer, over all arrivals
                eff = sum(acc.get(v, 0.0) * n for v, n in fs.served_met.items()) / fs.arrivals if fs.arrivals else 0.0
            else:  # older shims: the served mix's mean accuracy x the in-time share
                served_acc = sum(acc.get(v, 0.0) * n for v, n in fs.served.items())
                mean_acc = served_acc / fs.completions if fs.completions else 0.0
                eff = mean_acc * fs.met / fs.arrivals if fs.arrivals else 0.0
            capacity = capacity_of.get(fs.family)
            if capacity is None:
                capacity = capacity_of[fs.family] = self._capacity(plan, fs.family)
            history.append({"second": fs.second, "family": fs.family, "arrivals": fs.arrivals,
                            "estimate": self.tracker.estimate(fs.family) or 0.0, "capacity": round(capacity, 3),
                            "completions": fs.completions, "met": fs.met, "misses": misses,
                            "effective_accuracy": round(eff, 3), "plan_version": plan.version if plan else None,
                            "mix": fs.served})
        self.cp.record_history(history)

    def _sane(self, fs: FamilySecond) -> FamilySecond | None:
        """`fs` with every count an integer in 0..MAX_TOTAL and only the family's variants, or None
        when it is no catalog family's second. The intake checks reports (intake.py); this keeps a
        tick from failing on whatever it holds all the same."""
        family_variants = self.cp.catalog.families().get(fs.family) if isinstance(fs.family, str) else None
        if family_variants is None or isinstance(fs.second, bool) or not isinstance(fs.second, int) \
                or not 0 <= fs.second <= MAX_TOTAL:
            log.warning("telemetry for %r at second %r dropped: not a catalog family's second", fs.family, fs.second)
            return None
        names = {v.name for v in family_variants}

        def count(n) -> int:
            return min(n, MAX_TOTAL) if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 0

        def per_variant(mapping) -> dict[str, int]:
            return {v: count(n) for v, n in mapping.items() if v in names} if isinstance(mapping, dict) else {}

        return FamilySecond(fs.family, fs.second, **{k: count(getattr(fs, k)) for k in COUNTERS},
                            served=per_variant(fs.served),
                            served_met=None if fs.served_met is None else per_variant(fs.served_met))

    def _capacity(self, plan: Plan | None, family: str) -> float:
        """Requests/s the plan's placements of the family's variants serve at most."""
        if plan is None:
            return 0.0
        variants = {v.name for v in self.cp.catalog.families().get(family, [])}
        return sum(p.capacity_rps for p in plan.placements if p.variant in variants)

    def _health_change(self) -> str | None:
        live = {dev: (self.cp.device_live(dev), self.cp.device_ups(dev)) for dev in self.cp.device_ids()}
        before, self._live = self._live, live
        if before is not None:  # a device that restarted or joined gets a fresh try at its loads
            self._quarantine -= {d for d, (ok, ups) in live.items() if ok and (d not in before or before[d][1] != ups)}
        self._quarantine &= set(live)
        self._mark_down()
        if before is None:  # the first look: a plan made before this controller ran may leave out
            # devices that were down or failing then (it does not say why): plan with them once
            plan = self.cp.plan
            unused = sorted(d for d, (ok, _) in live.items() if ok and plan is not None and not plan.placements_on(d))
            if not unused:
                return None
            changed = [f"{d} is live and unused by the plan in force (made before this controller started)"
                       for d in unused]
            self.cp.record_decision("health", "; ".join(changed))
            return "; ".join(changed)
        # a device live at both looks but with a new run between them (restarted) came back too
        changed = [f"{d} {('is up' if ups == 1 else 'came back') if ok else 'went down'}" for d, (ok, ups) in live.items()
                   if d in before and (before[d][0] != ok or (ok and before[d][1] != ups))]
        self._restarted |= {d for d, (ok, ups) in live.items() if d in before and ok and before[d][0]
                            and before[d][1] != ups}
        changed += [f"{d} joined" for d, (ok, _) in live.items() if d not in before and ok]  # live at its first look
        changed += [f"{d} left" for d in before if d not in live]  # node discovery: no longer in DNS
        changed += self._lacking_models(live)
        if changed:
            self.cp.record_decision("health", "; ".join(changed))
            return "; ".join(changed)
        return None

    def _lacking_models(self, live: dict[str, tuple[bool, int]]) -> list[str]:
        """Live devices that lack a model the plan in force places there, by an index they
        answered after that plan came in force, at two ticks in a row with no apply running (a
        load finished just now may not be in the last probe's index yet); each such gap is named once."""
        plan = self.cp.plan
        lacking: dict[str, frozenset[str]] = {}
        if plan is not None and not self.cp.busy:
            for d, (ok, _) in live.items():
                missing = self._missing(plan, d, self._version_since) if ok else None
                if missing:
                    lacking[d] = missing
        seen, self._lacking = self._lacking, lacking
        self._lacking_said &= set(lacking.items())  # a gap that closed may be named again if it reopens
        out = []
        for d, missing in sorted(lacking.items()):
            if seen.get(d) == missing and (d, missing) not in self._lacking_said:
                self._lacking_said.add((d, missing))
                out.append(f"{d} lacks {', '.join(sorted(missing))} (not READY there: its Triton restarted, "
                           f"or the model was unloaded outside the plan)")
        return out

    def _missing(self, plan: Plan, device_id: str, since: float) -> frozenset[str] | None:
        """The variants the plan places on the device that its index (answered after `since`) does
        not have READY; None without such an answer."""
        ready = self.cp.device_ready_models(device_id, since)
        return None if ready is None else frozenset(p.variant for p in plan.placements_on(device_id)) - ready

    def _demand_reason(self) -> str | None:
        plan = self.cp.plan
        demand = self.cp.planning_demand()
        if plan is None:
            active = {f: d for f, d in demand.items() if d > 0}
            if active:
                initial = self.cp.config.initial_demand_rps
                why = " (no plan yet, no traffic: the initial demand)" if initial and all(
                    not self.cp.estimates.get(f) for f in active) else ""
                return "first plan for demand " + ", ".join(f"{f} {d:.1f} rps" for f, d in active.items()) + why
            return None
        for fam, est in sorted(demand.items()):
            planned = plan.families[fam].demand_rps if fam in plan.families else 0.0
            low, high = self._band(planned)
            if not low <= est <= high:
                self.demand_rose = est > high
                return (f"{fam}: demand {est:.1f} rps {'rose above' if est > high else 'fell below'} the band "
                        f"{low:.1f}..{high:.1f} rps around the planned {planned:.1f} rps")
            made_with = self._plan_headroom.get(fam, 1.0)
            if made_with > 1.0 and self.headroom.get(fam, 1.0) <= 1.0 and est < planned - MIN_BAND_RPS:
                # the misses that raised the headroom have stopped long enough for it to decay: the
                # plan's extra capacity (fast variants instead of accurate ones) is no longer needed
                self.demand_rose = False
                return (f"{fam}: deadlines met again, so the {made_with:.2f}x headroom the plan was made with "
                        f"is spent: planning for {est:.1f} rps instead of {planned:.1f} rps")
        return None

    def _repeats_hold(self, missed: bool) -> bool:
        """Whether this re-plan would plan for the demand of the last re-plan, which came out as the
        plan in force (a hold: e.g. a plan already at capacity under a steady overload): it would
        hold again, so it is not made (or the planner would run, and log a hold, every tick)."""
        held_plan, held_demand = self._held
        if held_plan is None or held_plan is not self.cp.plan:
            return False
        demand = self.cp.planning_demand()
        if missed:  # it would plan with more headroom for the family that missed
            fam = self.miss_family
            demand[fam] = (self.tracker.estimate(fam) or 0.0) * self._raised_headroom(fam)
        return all(abs(d - held_demand.get(f, 0.0)) <= max(MIN_BAND_RPS, HELD_TOLERANCE * held_demand.get(f, 0.0))
                   for f, d in demand.items())

    def _raised_headroom(self, fam: str) -> float:
        """The headroom a miss-triggered re-plan of `fam` plans with: one step up, at most the cap."""
        return min(HEADROOM_MAX, self.headroom.get(fam, 1.0) * HEADROOM_STEP)

    def _band(self, planned: float) -> tuple[float, float]:
        """The demands that do not call for a re-plan: within the hysteresis band or the Poisson noise around `planned`."""
        h = self.cp.config.hysteresis
        noise = max(MIN_BAND_RPS, NOISE_SIGMAS * planned ** 0.5)
        return min(planned * (1 - h), planned - noise), max(planned * (1 + h), planned + noise)

    def _miss_reason(self) -> str | None:
        """Why the miss rate calls for a re-plan (and `miss_family` names the family), or None."""
        for fam, window in sorted(self._misses.items()):
            misses = sum(m for m, _ in window)
            arrivals = sum(a for _, a in window)
            if arrivals >= 10 and misses / arrivals > self.cp.config.miss_rate_trigger:
                self.miss_family = fam
                return (f"{fam}: {misses / arrivals:.0%} of requests missed the deadline over the last "
                        f"{len(window)} s (trigger {self.cp.config.miss_rate_trigger:.0%})")
        return None

    def _decay_headroom(self) -> None:
        for fam, factor in list(self.headroom.items()):
            window = self._misses.get(fam)
            if window and window[-1][0] == 0:
                self.headroom[fam] = max(1.0, factor * HEADROOM_DECAY)

    def _replan(self, reason: str) -> bool:
        """Solve and apply; True when what is loaded changed (or the attempt failed: try again later)."""
        self.cp.counters["replans"] += 1
        self._busy = False
        before = self.cp.plan.loaded_models() if self.cp.plan is not None else None
        self._held = (self.cp.plan, self.cp.planning_demand())
        try:
            plan, again = self._solve()
            reason += again
            self._own_change = True
            self.cp.apply(plan, reason=f"controller: {reason}", kind="replan")
            self._plan_headroom = {f: h for f, h in self.headroom.items() if h > 1.0}
            if not self._quarantine:  # a re-plan that left devices out (loads failed there) does not
                self._retry = None    # replace the retry that tries them again
            for window in self._misses.values():
                window.clear()  # misses under the old plan do not count against the new one
            return before is None or plan.loaded_models() != before
        except ApplyBusy:
            self._own_change = False
            self._unrelease()
            self._busy = True
            return False  # an operator's apply is running; the next tick looks again
        except (ApplyFailed, UserError) as e:
            self._own_change = False
            if not isinstance(e, ApplyFailed):
                self._unrelease()  # nothing was loaded: the devices let out were not tried
            backoff = RETRY_FIRST_S if self._retry is None else min(RETRY_MAX_S, 2 * self._retry[1])
            first = reason if self._retry is None else self._retry[2]  # a retry's reason names the first
            self._retry = (self.clock() + backoff, backoff, first)
            self.cp.record_decision("error", f"controller: {reason}; re-plan failed: {e}; "
                                             f"trying again in {backoff:g} s")
            failed = getattr(e, "devices", frozenset()) - self._quarantine
            if failed:
                self._plan_around(failed, backoff)
            return True

    def _route_around(self, restarted: set[str]) -> None:
        """Devices restarted between two probes came back empty while the plan in force routes to
        them: put in force that plan without the models they lost (`Plan.without`, routes only),
        so no traffic goes there while the re-plan that follows loads them (or fails to)."""
        plan = self.cp.plan
        if plan is None:
            return
        lost = {(d, v) for d in restarted for v in self._missing(plan, d, 0.0) or ()}  # None: not answering
        target = plan.without(lost) if lost else None
        if target is None:
            return
        names = ", ".join(sorted({d for d, _ in lost}))
        try:
            result = self.cp.apply(target, reason=f"controller: {names} restarted (empty): routing around the models "
                                                  "it lost while they load again", kind="replan", routes_only=True)
        except NotRoutesOnly as e:  # another device lacks a model too: the re-plan that follows sees to all
            log.info("no routing revision around %s: %s", names, e)
            return
        except (ApplyBusy, ApplyFailed, UserError) as e:
            self.cp.record_decision("error", f"controller: routing around the restarted {names} failed: {e}")
            return
        self._version_seen, self._version_since = result.plan.version, self.clock()  # the controller's own

    def _plan_around(self, failed: frozenset[str], backoff: float) -> None:
        """After loads failed on `failed`: plan without them until the retry, applied at once when
        the plan in force routes to one of them or loads other models (the failed apply's rollback
        undid loads that had succeeded elsewhere)."""
        self._quarantine |= failed
        self._mark_down()
        plan = self.cp.plan
        if plan is None:
            return
        names = ", ".join(sorted(failed))
        try:
            target, again = self._solve(keep_out=failed)
            if not any(plan.placements_on(d) for d in failed) and target.loaded_models() == plan.loaded_models():
                return
            self._own_change = True
            self.cp.apply(target, reason=f"controller: planning around {names} (its loads failed) until the retry "
                                         f"in {backoff:g} s{again}", kind="replan")
        except (ApplyBusy, ApplyFailed, UserError) as e:
            self._own_change = False
            self._quarantine |= e.devices if isinstance(e, ApplyFailed) else self._released  # failed again, or not tried
            self._mark_down()
            self.cp.record_decision("error", f"controller: the plan around {names} failed too: {e}")

    def _solve(self, keep_out: frozenset[str] = frozenset()) -> tuple[Plan, str]:
        """A plan without the quarantined devices, or, where that routes a family with demand
        nowhere and a plan with the live ones (bar `keep_out`) routes fewer, that plan: they are
        tried again at once. Returns it and what to add to the reason; `_released`: who was let out."""
        self._released = frozenset()
        plan = self.cp.solve()
        live = {d for d, (ok, _) in (self._live or {}).items() if ok}
        others = frozenset((self._quarantine - keep_out) & live)
        unrouted = _unrouted(plan)
        if not others or not unrouted:
            return plan, ""
        self._quarantine -= others
        self._mark_down()
        self._released = others
        try:
            again = self.cp.solve()
        except UserError:
            self._unrelease()
            raise
        if not set(_unrouted(again)) < set(unrouted):  # they would not help (no variant meets the SLO, ...)
            self._unrelease()
            return plan, ""
        return again, f"; trying {', '.join(sorted(others))} again at once (no other device serves {', '.join(unrouted)})"

    def _mark_down(self) -> None:
        """What the planner treats as down: the devices not live at the last look, and those planned around."""
        self.cp.down = {d for d, (ok, _) in (self._live or {}).items() if not ok} | self._quarantine

    def _unrelease(self) -> None:
        """Put the devices `_solve` let out back into quarantine (they were not tried)."""
        self._quarantine |= self._released
        self._mark_down()
        self._released = frozenset()


def _unrouted(plan: Plan) -> list[str]:
    """The families with demand that the plan routes nowhere."""
    return sorted(f for f, fp in plan.families.items() if fp.demand_rps > 0 and not any(r.weight > 0 for r in fp.routes))
