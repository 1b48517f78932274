"""The control plane's state and operations, shared by the REST API, the UI and the controller loop.

`ControlPlane` owns: the cluster and its runtime (Triton servers), the catalog and profiles, the
store (SQLite), the executor, the published plan, the telemetry intake, and the operator's
settings (SLO and accuracy floor per family, demand override, drained devices).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from orchestrator.catalog import Catalog
from orchestrator.cluster import Cluster, Device
from orchestrator.controlplane.demand import ESTIMATORS, Estimator
from orchestrator.controlplane.discovery import Discovery
from orchestrator.controlplane.executor import ApplyResult, PlanDiff, PlanExecutor
from orchestrator.controlplane.health import DeviceHealth, HealthMonitor
from orchestrator.controlplane.intake import FamilySecond, TelemetryIntake
from orchestrator.controlplane.speed import ObservedSpeed
from orchestrator.controlplane.store import Store
from orchestrator.errors import UserError
from orchestrator.plan import Plan
from orchestrator.profiles import ProfileSet


class NotFound(UserError):
    """An unknown device, variant or family (HTTP 404)."""


@dataclass
class ControlPlaneConfig:
    """Settings of one control plane (the `serve` command's flags)."""

    token: str | None = None  # bearer token for mutating endpoints; None: mutations are refused
    db_path: str = ":memory:"
    tick_s: float = 1.0  # controller period
    drain_s: float = 2.0  # grace for old routes between publishing a plan and unloading
    dwell_s: float = 10.0  # least time between two automatic plan changes
    hysteresis: float = 0.25  # re-plan when demand leaves [planned x (1-h), planned x (1+h)]
    miss_rate_trigger: float = 0.05  # re-plan when the deadline-miss rate over the window exceeds this
    estimator: Estimator = Estimator.PEAK  # window | ewma | forecast | peak (controlplane/demand.py)
    policy: str = "milp"
    default_slo_ms: float = 500.0
    slo_ms: dict[str, float] = field(default_factory=dict)  # initial SLO per family (else the default)
    lateness_s: int = 2  # telemetry seconds are final this long after they end
    auto: bool = True  # the controller re-plans by itself
    load_timeout_s: float = 120.0  # a model load Triton has not finished by then fails, and the apply rolls back
    initial_demand_rps: float | None = None  # no plan yet and no traffic: the controller's first plan serves this per family
    observed_speed: bool = True  # plan with the profiles scaled by the speed observed in service (controlplane/speed.py)
    demand_floor: dict[str, float] = field(default_factory=dict)  # per family: plan for at least this rps (its known peak; planning.floored)

    def __post_init__(self) -> None:
        try:
            self.estimator = Estimator(self.estimator)
        except ValueError:
            raise ValueError(f"ControlPlaneConfig.estimator must be one of {', '.join(ESTIMATORS)}, "
                             f"not {self.estimator!r}") from None


FAMILY_SETTINGS = ("slo_ms", "accuracy_floor", "demand_override", "demand_floor")  # PUT /api/v1/settings/families/F
MAX_RATE_RPS = 1e7  # the largest request rate a setting, a demand or a plan may name
MAX_SLO_MS = 3_600_000.0  # an hour


def shown(value, width: int = 60) -> str:
    """`repr(value)` cut to `width` characters, for error messages about what a client sent."""
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def parse_number(value, what: str, low: float, high: float, *, above_low: bool = False) -> float:
    """`value` as a float in low..high (above `low` when `above_low`); UserError naming `what` otherwise.

    JSON numbers only: booleans, strings, NaN and infinities are refused, so that nothing
    non-finite reaches the planner, the store or a response."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float)
                                                                          and not math.isfinite(value)):
        raise UserError(f"{what} must be a number, not {shown(value)}")
    if above_low and not low < value <= high:
        raise UserError(f"{what} must be a number above {low:g} and at most {high:g}, not {shown(value)}")
    if not low <= value <= high:
        raise UserError(f"{what} must be a number in {low:g}..{high:g}, not {shown(value)}")
    return float(value)


def parse_positive(value, what: str, high: float = MAX_SLO_MS) -> float:
    return parse_number(value, what, 0.0, high, above_low=True)


def _finite_values(mapping) -> dict:
    """The entries of a stored {family: number} setting that are finite numbers (a store written by
    an older version may hold NaN, which JSON cannot carry)."""
    if not isinstance(mapping, dict):
        return {}
    return {k: float(v) for k, v in mapping.items()
            if not isinstance(v, bool) and isinstance(v, (int, float)) and -1e300 < v < 1e300}  # NaN compares false


class ControlPlane:
    def __init__(self, cluster: Cluster, catalog: Catalog, profiles: ProfileSet, runtime, store: Store,
                 config: ControlPlaneConfig | None = None):
        self.cluster = cluster
        self.catalog = catalog
        self.profiles = profiles
        self.runtime = runtime
        self.store = store
        self.config = config or ControlPlaneConfig()
        self.intake = TelemetryIntake({f: {v.name for v in vs} for f, vs in catalog.families().items()})
        self._classes: tuple[list | None, dict[str, str]] = (None, {})  # (device list, id -> class) cache
        self.speed = ObservedSpeed(profiles, self.device_class)
        self.intake.on_batches = self.speed.observe_report
        self.executor = PlanExecutor(runtime, self._publish, managed=set(catalog.variants),
                                     drain_s=self.config.drain_s,
                                     is_down=lambda device_id: self.health.running and not self.health.state(device_id).live)
        self._plan: Plan | None = None
        self._plan_lock = threading.Lock()
        self.started_at = time.time()
        self.counters = {"applies": 0, "apply_failures": 0, "rollbacks": 0, "replans": 0, "telemetry_reports": 0}
        self.estimates: dict[str, float] = {}  # the controller's latest demand estimate per family
        self.wake = threading.Event()  # set to make the controller tick now (a setting or a device's health changed)
        self.down: set[str] = set()  # devices whose Triton does not answer (the controller checks)
        # probed off the controller's thread once started (`start_health`); until then each read probes
        self.health = HealthMonitor(self.device_ids(), self._probe, lambda device_id, health: self.wake.set(),
                                    self._recover, busy=getattr(runtime, "busy", lambda device_id: False))
        self._closed = False
        self.on_restart: Callable[[], None] | None = None  # after supervision restarted a server (its record changed)
        self._applying = 0  # applies in progress, their decision records included (guarded by _applies)
        self._applies = threading.Condition()
        fixed = {d.id for d in cluster.devices}
        self.discovery = Discovery(cluster.pools, self.add_device, self.remove_device,
                                   taken=lambda device_id: device_id in fixed) if cluster.pools else None
        self.departed: dict[str, dict] = {}  # endpoints of devices that left, while the plan in force routes there

    def start_health(self) -> None:
        """Find the pools' devices, then probe every device (both keep running until close)."""
        if self.discovery is not None:
            self.discovery.start()
        self.health.start()

    # -- devices that join and leave (node discovery) -------------------------------------------
    def add_device(self, device: Device) -> None:
        """A device that appeared: probed, and planned for once it answers (the controller wakes)."""
        self.runtime.add_device(device)
        self.departed.pop(device.id, None)
        self.health.add(device.id)
        self.store.record_decision("discovery", f"{device.id} joined (pool {device.pool}, {device.url})")
        self.wake.set()

    def remove_device(self, device_id: str) -> None:
        """A device that went away: planned around at once; shims keep its endpoint until a plan
        without it is published."""
        endpoint = self.endpoints().get(device_id)
        plan = self.plan
        if endpoint is not None and plan is not None and plan.placements_on(device_id):
            self.departed[device_id] = endpoint
        self.health.remove(device_id)
        self.runtime.remove_device(device_id)
        self.store.record_decision("discovery", f"{device_id} left (no longer in DNS)")
        self.wake.set()

    def endpoints(self) -> dict[str, dict]:
        """Where shims send requests, per device, with its class (devices that left included while planned)."""
        classes = {d.id: d.device_class for d in self.cluster.devices}
        out = {d: {**ep, "device_class": classes[d]} for d, ep in self.runtime.endpoints().items() if d in classes}
        for d, ep in list(self.departed.items()):
            out.setdefault(d, ep)
        return out

    def close(self) -> None:
        """Stop probing, and let an apply in progress finish (a stuck load ends at the load
        timeout) so that its decision, a rollback included, is recorded before the store closes."""
        self._closed = True
        if self.discovery is not None:
            self.discovery.stop()
        self.health.stop()
        with self._applies:
            self._applies.wait_for(lambda: self._applying == 0, timeout=self.config.load_timeout_s + 10.0)

    def _recover(self, device_id: str, silent_s: float) -> None:
        """Supervision: the runtime restarts a dead or hung embedded server (with backoff)."""
        recover = getattr(self.runtime, "recover", None)
        done = recover(device_id, silent_s) if recover is not None and not self._closed else None
        if done is not None and not self._closed:
            self.health.mark_down(device_id, done)
            self.store.record_decision("health", done)
            if self.on_restart is not None:
                self.on_restart()
            self.wake.set()

    def _probe(self, device_id: str, timeout_s: float) -> list[dict]:
        return self.runtime.control(device_id).probe(timeout_s)

    # -- plan ------------------------------------------------------------------------------
    @property
    def plan(self) -> Plan | None:
        with self._plan_lock:
            return self._plan

    def _publish(self, plan: Plan) -> None:
        self.store.save_plan(plan, applied=True)
        with self._plan_lock:
            self._plan = plan
        for device_id in [d for d in self.departed if not plan.placements_on(d)]:
            self.departed.pop(device_id, None)

    def device_ids(self) -> list[str]:
        return [d.id for d in self.cluster.devices]

    def device_class(self, device_id: str) -> str | None:
        """A device's class (None: not in the cluster); node discovery replaces the device list."""
        devices = self.cluster.devices
        if self._classes[0] is not devices or len(self._classes[1]) != len(devices):
            self._classes = (devices, {d.id: d.device_class for d in devices})
        return self._classes[1].get(device_id)

    def speed_change(self) -> tuple[str, bool] | None:
        return self.speed.replan_reason() if self.config.observed_speed and self.plan is not None else None

    # -- the controller's port (port.py) ---------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.executor.busy

    @property
    def last_apply_s(self) -> float:
        return self.executor.last_apply_s

    def flush_telemetry(self, before_second: int) -> list[FamilySecond]:
        return self.intake.flush(before_second)

    def device_live(self, device_id: str) -> bool:
        return self.health.current(device_id).live

    def device_ups(self, device_id: str) -> int:
        return self.health.state(device_id).ups

    def device_ready_models(self, device_id: str, since: float) -> frozenset[str] | None:
        h = self.health.current(device_id)
        if h.error is not None or h.last_ok is None or h.last_ok < since:
            return None
        return frozenset(str(m.get("name")) for m in h.models if m.get("state") == "READY")

    def live_device_ids(self) -> list[str]:
        """The devices whose Triton answers (the others host nothing a plan can use)."""
        return [d for d in self.device_ids() if self.health.current(d).live]

    def record_history(self, rows: list[dict]) -> None:
        self.store.record_history(rows)

    def recorded_arrivals(self, since_second: int) -> list[tuple[str, int, float]]:
        rows = self.store.history(since=since_second, limit=1_000_000)
        return [(r["family"], int(r["second"]), float(r["arrivals"])) for r in rows]

    def record_decision(self, kind: str, reason: str, plan_version: int | None = None,
                        detail: dict | None = None, ts: float | None = None) -> dict:
        return self.store.record_decision(kind, reason, plan_version, detail, ts)

    def families(self) -> list[str]:
        return sorted(self.catalog.families())

    # -- settings --------------------------------------------------------------------------
    def slo_ms(self) -> dict[str, float]:
        saved = _finite_values(self.store.get_setting("slo_ms", {}))
        return {f: float(saved.get(f, self.config.slo_ms.get(f, self.config.default_slo_ms))) for f in self.families()}

    def accuracy_floors(self) -> dict[str, dict]:
        saved = self.store.get_setting("accuracy_floor", {})
        values = _finite_values({f: v.get("value") for f, v in saved.items() if isinstance(v, dict)}
                                if isinstance(saved, dict) else {})
        return {f: {"value": values[f], "kind": saved[f].get("kind", "variant")} for f in values}

    def demand_override(self) -> dict[str, float]:
        return _finite_values(self.store.get_setting("demand_override", {}))

    def demand_floor(self) -> dict[str, float]:
        """Per family, the rate to plan for at least (its declared peak): the `--demand-floor`
        flags until an operator sets one through the API, then what is stored."""
        saved = self.store.get_setting("demand_floor", None)
        return _finite_values(saved if isinstance(saved, dict) else self.config.demand_floor)

    def drained(self) -> list[str]:
        return self.store.get_setting("drained", [])

    def family_settings(self) -> dict[str, dict]:
        slo, floors, override, demand_floor = self.slo_ms(), self.accuracy_floors(), self.demand_override(), \
            self.demand_floor()
        return {f: {"slo_ms": slo[f], "accuracy_floor": floors.get(f), "demand_override": override.get(f),
                    "demand_floor": demand_floor.get(f)}
                for f in self.families()}

    def update_family(self, family: str, body: dict) -> dict:
        """Set any of slo_ms, accuracy_floor ({value, kind} or a number, or null), demand_override
        (rps or null), demand_floor (rps or null).

        Every field is checked before anything is stored: a bad one changes nothing."""
        if family not in self.catalog.families():
            raise NotFound(f"unknown family {shown(family)}; the catalog has {self.families()}")
        if not isinstance(body, dict) or not body:
            raise UserError(f"send a JSON object with any of {', '.join(map(repr, FAMILY_SETTINGS))}")
        unknown = set(body) - set(FAMILY_SETTINGS)
        if unknown:
            raise UserError(f"unknown setting {shown(sorted(unknown)[0])} "
                            f"(allowed: {', '.join(FAMILY_SETTINGS)})")
        updates: dict[str, tuple[dict, object]] = {}  # setting -> (stored mapping, new value or None)
        changes = []
        if "slo_ms" in body:
            slo = parse_positive(body["slo_ms"], f"slo_ms of {family!r}")
            updates["slo_ms"] = (self.store.get_setting("slo_ms", {}), slo)
            changes.append(f"SLO {slo:g} ms")
        if "accuracy_floor" in body:
            raw = body["accuracy_floor"]
            floor = None
            if raw is None:
                changes.append("no accuracy floor")
            else:
                if not isinstance(raw, dict):
                    raw = {"value": raw}
                extra = set(raw) - {"value", "kind"}
                if extra:
                    raise UserError(f"accuracy_floor of {family!r} takes 'value' and 'kind', not "
                                    f"{shown(sorted(extra)[0])}")
                value = parse_number(raw.get("value"), f"accuracy_floor of {family!r} (a top-1 percentage)", 0, 100)
                kind = raw.get("kind", "variant")
                if kind not in ("variant", "average"):
                    raise UserError(f"accuracy_floor kind must be 'variant' or 'average', not {shown(kind)}")
                floor = {"value": value, "kind": kind}
                changes.append(f"accuracy floor {value:g} % ({kind})")
            updates["accuracy_floor"] = (self.accuracy_floors(), floor)
        rates = {"demand_override": (self.demand_override, "auto", "demand: auto", "demand fixed at {:g} rps"),
                 "demand_floor": (self.demand_floor, "none", "no demand floor", "plan for at least {:g} rps")}
        for key, (stored_now, null_means, said_null, said_set) in rates.items():
            if key in body:  # a rate in rps, or null
                raw = body[key]
                rate = None if raw is None else parse_number(
                    raw, f"{key} of {family!r} (rps, or null for {null_means})", 0, MAX_RATE_RPS)
                changes.append(said_null if rate is None else said_set.format(rate))
                updates[key] = (stored_now(), rate)
        for key, (stored, value) in updates.items():
            if value is None:
                stored.pop(family, None)
            else:
                stored[family] = value
            self.store.set_setting(key, stored)
        self.store.record_decision("settings", f"{family}: " + ", ".join(changes))
        self.wake.set()
        return self.family_settings()[family]

    # -- health ----------------------------------------------------------------------------
    def device_health(self) -> list[dict]:
        """Every device as the health monitor last saw it (no call to a Triton here)."""
        plan = self.plan
        drained = self.drained()
        out = []
        for d in self.cluster.devices:
            h: DeviceHealth = self.health.current(d.id)
            out.append({"id": d.id, "class": d.device_class, "kind": d.kind, "memory_mb": d.memory_mb,
                        "remote": d.is_remote, "pool": d.pool, "live": h.live, "error": h.error,
                        "models": [{"name": m.get("name"), "version": m.get("version", ""),
                                    "state": m.get("state", ""), "reason": m.get("reason", "")}
                                   for m in h.models if m.get("state")],
                        "last_answer": h.last_ok, "since": h.since,
                        "drained": d.id in drained,
                        "planned": sorted(p.variant for p in plan.placements_on(d.id)) if plan else []})
        return out

    def check_device(self, device_id: str) -> None:
        if device_id not in self.device_ids():
            raise NotFound(f"unknown device {shown(device_id)}; the cluster has {self.device_ids()}")

    def check_variant(self, variant: str) -> None:
        if not isinstance(variant, str) or variant not in self.catalog.variants:
            raise NotFound(f"unknown variant {shown(variant)}; the catalog has {sorted(self.catalog.variants)}")

    # -- solve and apply -------------------------------------------------------------------
    def planning_demand(self, override: dict[str, float] | None = None) -> dict[str, float]:
        """Demand to plan for: explicit override > operator's per-family override > estimate (at
        least the demand floor) > current plan's."""
        from orchestrator.controlplane.planning import planning_demand

        return planning_demand(self.families(), self.plan, self.estimates, self.demand_override(), override,
                               initial_rps=self.config.initial_demand_rps, floors=self.demand_floor())

    def solve(self, demand: dict[str, float] | None = None, slo_ms: dict[str, float] | None = None,
              policy: str | None = None) -> Plan:
        from orchestrator.controlplane.planning import solve_plan  # the planner glue

        for what, mapping in (("demand", demand), ("slo_ms", slo_ms)):
            if mapping is not None and not isinstance(mapping, dict):
                raise UserError(f"{what} must be an object mapping family to a number, not {shown(mapping)}")
            for fam, value in (mapping or {}).items():
                if fam not in self.catalog.families():
                    raise NotFound(f"{what} names unknown family {shown(fam)}; the catalog has {self.families()}")
                if what == "demand":
                    parse_number(value, f"demand of {fam!r} (rps)", 0, MAX_RATE_RPS)
                else:
                    parse_positive(value, f"slo_ms of {fam!r}")
        if policy is not None and not isinstance(policy, str):
            from orchestrator.controlplane.planning import policies

            raise UserError(f"unknown policy {shown(policy)}; choose one of {', '.join(policies())}")
        slo = {**self.slo_ms(), **{f: float(v) for f, v in (slo_ms or {}).items()}}
        profiles = self.speed.corrected() if self.config.observed_speed else self.profiles
        plan = solve_plan(self.catalog, self.cluster, profiles, slo_ms=slo,
                          demand_rps=self.planning_demand(demand), current=self.plan,
                          floors=self.accuracy_floors(), drained=sorted(set(self.drained()) | self.down),
                          policy=policy or self.config.policy)
        unknown = [k for k in ("objective", "gap", "time_ms") if not math.isfinite(getattr(plan.solver, k))]
        if unknown:  # e.g. a FEASIBLE MILP with no finite bound: JSON has no Infinity, so say so in a note
            plan = replace(plan, solver=replace(plan.solver, **{k: -1.0 for k in unknown}),
                           notes=plan.notes + (f"the solver reported no finite {', '.join(unknown)} (shown as -1)",))
        return plan

    def check_plan(self, plan: Plan) -> None:
        """A plan a client sent (POST /apply), checked field by field (plan_check.py)."""
        from orchestrator.controlplane.plan_check import check_plan

        check_plan(self, plan)

    def diff(self, target: Plan) -> PlanDiff:
        return self.executor.diff(target, self.plan, self.live_device_ids())

    def apply(self, target: Plan, reason: str, kind: str = "apply", routes_only: bool = False) -> ApplyResult:
        """Carry out `target`; records the decision (and the rollback, on failure). With
        `routes_only`, NotRoutesOnly (and nothing done) when a model would load or unload."""
        with self._applies:
            self._applying += 1
        try:
            return self._apply(target, reason, kind, routes_only)
        finally:
            with self._applies:
                self._applying -= 1
                self._applies.notify_all()

    def _apply(self, target: Plan, reason: str, kind: str, routes_only: bool) -> ApplyResult:
        from orchestrator.controlplane.executor import ApplyBusy, ApplyFailed

        for p in target.placements:
            self.check_device(p.device_id)
            self.check_variant(p.variant)
        current = self.plan
        try:
            result = self.executor.apply(target, current, self.live_device_ids(),
                                         next_version=self.store.next_plan_version, routes_only=routes_only)
        except ApplyBusy:
            raise
        except ApplyFailed as e:
            self.counters["apply_failures"] += 1
            self.counters["rollbacks"] += 1
            self.store.record_decision("rollback", f"{reason}: {e}", current.version if current else None)
            raise
        self.counters["applies"] += 1
        if result.changed:
            self.store.record_decision(kind, f"{reason} -> plan v{result.plan.version}: {result.diff.summary()}",
                                       result.plan.version, {"diff": result.diff.to_dict(),
                                                             "load_s": round(result.load_s, 3),
                                                             "effective_accuracy": round(result.plan.effective_accuracy, 3)})
        else:
            self.store.record_decision("hold", f"{reason}: the plan is already in effect (v{result.plan.version})",
                                       result.plan.version)
        return result

    # -- manual model control --------------------------------------------------------------
    def load_variant(self, device_id: str, variant: str, instances: int = 1, threads: int | None = None) -> dict:
        self.check_device(device_id)
        self.check_variant(variant)
        if isinstance(instances, bool) or not isinstance(instances, int) or not 1 <= instances <= 16:
            raise UserError(f"instances must be an integer in 1..16, not {shown(instances)}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 64):
            raise UserError(f"threads must be an integer in 1..64, not {shown(threads)}")
        try:
            self.runtime.load(device_id, variant, instances=instances, threads=threads)
        except UserError as e:  # the input was checked above: this is Triton's failure
            self.store.record_decision("error", f"operator's load of {variant} on {device_id} failed: {e}")
            raise LoadFailed(str(e)) from None
        self.store.record_decision("load", f"operator loaded {variant} on {device_id} ({instances} instance(s))")
        return {"device_id": device_id, "variant": variant, "ready": self.runtime.control(device_id).is_model_ready(variant)}

    def unload_variant(self, device_id: str, variant: str) -> dict:
        self.check_device(device_id)
        self.check_variant(variant)
        plan = self.plan
        if plan is not None and (device_id, variant) in plan.routed_pairs():
            raise Conflict(f"{variant} on {device_id} carries traffic in plan v{plan.version}; "
                           f"apply a plan without it first (or drain {device_id})")
        if variant not in self.runtime.control(device_id).loaded():
            raise NotFound(f"{variant} is not loaded on {device_id}")
        self.runtime.unload(device_id, variant)
        self.store.record_decision("unload", f"operator unloaded {variant} from {device_id}")
        return {"device_id": device_id, "variant": variant, "ready": False}

    # -- restart ---------------------------------------------------------------------------
    def resume(self) -> ApplyResult | None:
        """Resume the last applied plan: publish it again and load only what the servers lack."""
        last = self.store.last_applied_plan()
        if last is None:
            return None
        with self._plan_lock:
            self._plan = last
        from orchestrator.controlplane.executor import ApplyFailed

        try:
            result = self.executor.apply(last, None, self.live_device_ids())  # version kept: nothing new is decided
        except (ApplyFailed, UserError) as e:
            # keep serving what is there; the controller re-plans when it sees the devices' health
            self.store.record_decision("reconcile", f"resumed plan v{last.version}, but could not restore it: {e}",
                                       last.version)
            return None
        loaded = ", ".join(f"{v}@{d}" for d, v in result.diff.keep) or "nothing"
        self.store.record_decision("reconcile", f"resumed plan v{last.version}; already loaded: {loaded}; "
                                   f"{result.diff.summary() if result.diff.changes_models else 'nothing to load'}",
                                   last.version, {"diff": result.diff.to_dict()})
        return result


class LoadFailed(UserError):
    """Triton could not load a model (HTTP 502)."""


class Conflict(UserError):
    """The request conflicts with the current state (HTTP 409)."""
