"""The control plane's state and operations, shared by the REST API, the UI and the controller loop.

`ControlPlane` owns: the cluster and its runtime (Triton servers), the catalog and profiles, the
store (SQLite), the executor, the published plan, the telemetry intake, and the operator's
settings (SLO and accuracy floor per family, demand override, drained devices).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

from orchestrator.catalog import Catalog
from orchestrator.cluster import Cluster
from orchestrator.controlplane.executor import ApplyResult, PlanDiff, PlanExecutor
from orchestrator.controlplane.intake import TelemetryIntake
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
    estimator: str = "peak"  # window | ewma | forecast | peak (controlplane/demand.py)
    policy: str = "milp"
    default_slo_ms: float = 500.0
    slo_ms: dict[str, float] = field(default_factory=dict)  # initial SLO per family (else the default)
    lateness_s: int = 2  # telemetry seconds are final this long after they end
    auto: bool = True  # the controller re-plans by itself


def parse_positive(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or math.isinf(value):
        raise UserError(f"{what} must be a number, not {value!r}")
    if value <= 0:
        raise UserError(f"{what} must be positive, not {value!r}")
    return float(value)


class ControlPlane:
    def __init__(self, cluster: Cluster, catalog: Catalog, profiles: ProfileSet, runtime, store: Store,
                 config: ControlPlaneConfig | None = None):
        self.cluster = cluster
        self.catalog = catalog
        self.profiles = profiles
        self.runtime = runtime
        self.store = store
        self.config = config or ControlPlaneConfig()
        self.intake = TelemetryIntake()
        self.executor = PlanExecutor(runtime, self._publish, managed=set(catalog.variants),
                                     drain_s=self.config.drain_s)
        self._plan: Plan | None = None
        self._plan_lock = threading.Lock()
        self.started_at = time.time()
        self.counters = {"applies": 0, "apply_failures": 0, "rollbacks": 0, "replans": 0, "telemetry_reports": 0}
        self.estimates: dict[str, float] = {}  # the controller's latest demand estimate per family
        self.wake = threading.Event()  # set to make the controller tick now (a setting changed)
        self.down: set[str] = set()  # devices whose Triton does not answer (the controller checks)

    # -- plan ------------------------------------------------------------------------------
    @property
    def plan(self) -> Plan | None:
        with self._plan_lock:
            return self._plan

    def _publish(self, plan: Plan) -> None:
        self.store.save_plan(plan, applied=True)
        with self._plan_lock:
            self._plan = plan

    def device_ids(self) -> list[str]:
        return [d.id for d in self.cluster.devices]

    def families(self) -> list[str]:
        return sorted(self.catalog.families())

    # -- settings --------------------------------------------------------------------------
    def slo_ms(self) -> dict[str, float]:
        saved = self.store.get_setting("slo_ms", {})
        return {f: float(saved.get(f, self.config.slo_ms.get(f, self.config.default_slo_ms))) for f in self.families()}

    def accuracy_floors(self) -> dict[str, dict]:
        return self.store.get_setting("accuracy_floor", {})

    def demand_override(self) -> dict[str, float]:
        return self.store.get_setting("demand_override", {})

    def drained(self) -> list[str]:
        return self.store.get_setting("drained", [])

    def family_settings(self) -> dict[str, dict]:
        slo, floors, override = self.slo_ms(), self.accuracy_floors(), self.demand_override()
        return {f: {"slo_ms": slo[f], "accuracy_floor": floors.get(f), "demand_override": override.get(f)}
                for f in self.families()}

    def update_family(self, family: str, body: dict) -> dict:
        """Set any of slo_ms, accuracy_floor ({value, kind} or a number, or null), demand_override (rps or null)."""
        if family not in self.catalog.families():
            raise NotFound(f"unknown family {family!r}; the catalog has {self.families()}")
        if not isinstance(body, dict) or not body:
            raise UserError("send a JSON object with any of 'slo_ms', 'accuracy_floor', 'demand_override'")
        unknown = set(body) - {"slo_ms", "accuracy_floor", "demand_override"}
        if unknown:
            raise UserError(f"unknown setting {sorted(unknown)[0]!r} (allowed: slo_ms, accuracy_floor, demand_override)")
        changes = []
        if "slo_ms" in body:
            slo = self.store.get_setting("slo_ms", {})
            slo[family] = parse_positive(body["slo_ms"], f"slo_ms of {family!r}")
            self.store.set_setting("slo_ms", slo)
            changes.append(f"SLO {slo[family]:g} ms")
        if "accuracy_floor" in body:
            floors = self.accuracy_floors()
            raw = body["accuracy_floor"]
            if raw is None:
                floors.pop(family, None)
                changes.append("no accuracy floor")
            else:
                if not isinstance(raw, dict):
                    raw = {"value": raw}
                value = raw.get("value")
                kind = raw.get("kind", "variant")
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
                    raise UserError(f"accuracy_floor of {family!r} must be a top-1 percentage in 0..100, not {value!r}")
                if kind not in ("variant", "average"):
                    raise UserError(f"accuracy_floor kind must be 'variant' or 'average', not {kind!r}")
                floors[family] = {"value": float(value), "kind": kind}
                changes.append(f"accuracy floor {value:g} % ({kind})")
            self.store.set_setting("accuracy_floor", floors)
        if "demand_override" in body:
            override = self.demand_override()
            raw = body["demand_override"]
            if raw is None:
                override.pop(family, None)
                changes.append("demand: auto")
            else:
                if isinstance(raw, bool) or not isinstance(raw, (int, float)) or raw < 0 or math.isinf(raw):
                    raise UserError(f"demand_override of {family!r} must be a rate >= 0 (rps) or null for auto, "
                                    f"not {raw!r}")
                override[family] = float(raw)
                changes.append(f"demand fixed at {raw:g} rps")
            self.store.set_setting("demand_override", override)
        self.store.record_decision("settings", f"{family}: " + ", ".join(changes))
        self.wake.set()
        return self.family_settings()[family]

    # -- health ----------------------------------------------------------------------------
    def device_health(self) -> list[dict]:
        plan = self.plan
        out = []
        for d in self.cluster.devices:
            entry = {"id": d.id, "class": d.device_class, "kind": d.kind, "memory_mb": d.memory_mb,
                     "remote": d.is_remote, "live": False, "models": [], "error": None,
                     "drained": d.id in self.drained(),
                     "planned": sorted(p.variant for p in plan.placements_on(d.id)) if plan else []}
            try:
                ctl = self.runtime.control(d.id)
                entry["live"] = ctl.is_live()
                if entry["live"]:
                    entry["models"] = [{"name": m.get("name"), "version": m.get("version", ""),
                                        "state": m.get("state", ""), "reason": m.get("reason", "")}
                                       for m in ctl.index() if m.get("state")]
            except UserError as e:
                entry["error"] = str(e)
            out.append(entry)
        return out

    def check_device(self, device_id: str) -> None:
        if device_id not in self.device_ids():
            raise NotFound(f"unknown device {device_id!r}; the cluster has {self.device_ids()}")

    def check_variant(self, variant: str) -> None:
        if variant not in self.catalog.variants:
            raise NotFound(f"unknown variant {variant!r}; the catalog has {sorted(self.catalog.variants)}")

    # -- solve and apply -------------------------------------------------------------------
    def planning_demand(self, override: dict[str, float] | None = None) -> dict[str, float]:
        """Demand to plan for: explicit override > operator's per-family override > estimate > current plan's."""
        demand: dict[str, float] = {}
        plan = self.plan
        for f in self.families():
            if plan is not None and f in plan.families:
                demand[f] = plan.families[f].demand_rps
            if f in self.estimates:
                demand[f] = self.estimates[f]
        demand.update(self.demand_override())
        if override:
            demand.update(override)
        return {f: round(float(v), 3) for f, v in demand.items()}

    def solve(self, demand: dict[str, float] | None = None, slo_ms: dict[str, float] | None = None,
              policy: str | None = None) -> Plan:
        from orchestrator.controlplane.planning import solve_plan  # the planner glue

        for what, mapping in (("demand", demand or {}), ("slo_ms", slo_ms or {})):
            if not isinstance(mapping, dict):
                raise UserError(f"{what} must be an object mapping family to a number")
            for fam, value in mapping.items():
                if fam not in self.catalog.families():
                    raise NotFound(f"{what} names unknown family {fam!r}; the catalog has {self.families()}")
                if what == "demand":
                    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                        raise UserError(f"demand of {fam!r} must be a rate >= 0 (rps), not {value!r}")
                else:
                    parse_positive(value, f"slo_ms of {fam!r}")
        slo = {**self.slo_ms(), **{f: float(v) for f, v in (slo_ms or {}).items()}}
        return solve_plan(self.catalog, self.cluster, self.profiles, slo_ms=slo,
                          demand_rps=self.planning_demand(demand), current=self.plan,
                          floors=self.accuracy_floors(), drained=sorted(set(self.drained()) | self.down),
                          policy=policy or self.config.policy)

    def diff(self, target: Plan) -> PlanDiff:
        return self.executor.diff(target, self.plan, self.device_ids())

    def apply(self, target: Plan, reason: str, kind: str = "apply") -> ApplyResult:
        """Carry out `target`; records the decision (and the rollback, on failure)."""
        from orchestrator.controlplane.executor import ApplyBusy, ApplyFailed

        for p in target.placements:
            self.check_device(p.device_id)
            self.check_variant(p.variant)
        current = self.plan
        try:
            result = self.executor.apply(target, current, self.device_ids(), next_version=self.store.next_plan_version)
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
            raise UserError(f"instances must be an integer in 1..16, not {instances!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 64):
            raise UserError(f"threads must be an integer in 1..64, not {threads!r}")
        self.runtime.load(device_id, variant, instances=instances, threads=threads)
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
            result = self.executor.apply(last, None, self.device_ids())  # version kept: nothing new is decided
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


class Conflict(UserError):
    """The request conflicts with the current state (HTTP 409)."""
