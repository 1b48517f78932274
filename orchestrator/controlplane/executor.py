"""The plan executor: carries a target plan out on the Triton servers, safely.

Order of an apply (see docs/control-plane.md):
  1. diff what the servers actually have loaded (and with which instance config) against the target;
  2. load what is new, or reload what changes instance config, all devices in parallel; each load
     returns once Triton reports the model READY;
  3. publish the target as the new plan version (shims switch routes on their next poll);
  4. wait a grace period so requests queued on old routes drain;
  5. unload what the target no longer needs.
A failed load rolls back: what this apply loaded is unloaded (a reloaded model gets its previous
config back), the previous plan stays published, and the error says which load failed and why.
Applying the plan that is already current changes nothing. Only one apply runs at a time; a
second one is refused at once (`ApplyBusy`, HTTP 409) rather than interleaved.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Protocol

from orchestrator.errors import UserError
from orchestrator.plan import Placement, Plan

THREADS_PARAMETER = "intra_op_threads"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ApplyBusy(Exception):
    """Another apply is in progress."""


class NotRoutesOnly(Exception):
    """An apply asked to move routes only would load or unload a model; nothing was done."""


class ApplyFailed(Exception):
    """A load failed; the executor rolled back and the previous plan stays. `devices`: where a load
    failed (the controller plans around them until it tries again)."""

    def __init__(self, message: str, devices: frozenset[str] = frozenset()):
        super().__init__(message)
        self.devices = devices


class Runtime(Protocol):
    """What the executor needs of `orchestrator.triton.runtime.ClusterRuntime`."""

    def control(self, device_id: str): ...
    def load(self, device_id: str, variant: str, instances: int = 1, threads: int | None = None,
             max_batch_size: int | None = None) -> dict: ...
    def unload(self, device_id: str, variant: str) -> None: ...


@dataclass(frozen=True)
class LoadedModel:
    """A model a server has READY, with the instance config it runs."""

    device_id: str
    variant: str
    instances: int | None = None
    threads: int | None = None


@dataclass
class PlanDiff:
    """What an apply will do. Pairs are (device_id, variant)."""

    load: list[Placement] = field(default_factory=list)  # not loaded now
    reload: list[Placement] = field(default_factory=list)  # loaded with another instance config
    unload: list[tuple[str, str]] = field(default_factory=list)  # loaded, not in the target
    keep: list[tuple[str, str]] = field(default_factory=list)  # loaded as the target wants
    routes_changed: bool = False  # routing weights differ from the current plan's

    @property
    def changes_models(self) -> bool:
        return bool(self.load or self.reload or self.unload)

    @property
    def is_empty(self) -> bool:
        return not self.changes_models and not self.routes_changed

    def to_dict(self) -> dict:
        def pl(p: Placement) -> dict:
            return {"device_id": p.device_id, "variant": p.variant, "instances": p.instances, "threads": p.threads}
        return {"load": [pl(p) for p in self.load], "reload": [pl(p) for p in self.reload],
                "unload": [{"device_id": d, "variant": v} for d, v in self.unload],
                "keep": [{"device_id": d, "variant": v} for d, v in self.keep],
                "routes_changed": self.routes_changed, "empty": self.is_empty}

    def summary(self) -> str:
        if self.is_empty:
            return "no change"
        parts = []
        if self.load:
            parts.append("load " + ", ".join(f"{p.variant}@{p.device_id}" for p in self.load))
        if self.reload:
            parts.append("reload " + ", ".join(f"{p.variant}@{p.device_id}" for p in self.reload))
        if self.unload:
            parts.append("unload " + ", ".join(f"{v}@{d}" for d, v in self.unload))
        if not self.changes_models:
            parts.append("new routing weights")
        return "; ".join(parts)


@dataclass
class ApplyResult:
    plan: Plan
    diff: PlanDiff
    changed: bool
    load_s: float = 0.0
    drain_s: float = 0.0
    unload_s: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"version": self.plan.version, "changed": self.changed, "diff": self.diff.to_dict(),
                "summary": self.diff.summary(), "load_s": round(self.load_s, 3), "drain_s": round(self.drain_s, 3),
                "unload_s": round(self.unload_s, 3), "warnings": self.warnings}


def route_table(plan: Plan | None) -> dict[str, dict[tuple[str, str], float]]:
    if plan is None:
        return {}
    return {fam: {(r.device_id, r.variant): round(r.weight, 6) for r in fp.routes} for fam, fp in plan.families.items()}


def loaded_model_from_config(device_id: str, variant: str, config: dict) -> LoadedModel:
    """The instance count and threads a running model config says (None where it does not say)."""
    groups = config.get("instance_group") or []
    count = sum(int(g.get("count", 1)) for g in groups) if groups else None
    threads = (config.get("parameters") or {}).get(THREADS_PARAMETER, {}).get("string_value")
    return LoadedModel(device_id, variant, count, int(threads) if threads and str(threads).isdigit() else None)


def compute_diff(target: Plan, loaded: dict[str, dict[str, LoadedModel]], current: Plan | None,
                 managed: set[str]) -> PlanDiff:
    """`loaded`: device -> variant -> what runs there; `managed`: variant names the executor may unload
    (the catalog's); models outside it are left alone."""
    diff = PlanDiff()
    wanted = target.loaded_pairs()
    for p in sorted(target.placements, key=lambda p: (p.device_id, p.variant)):
        have = loaded.get(p.device_id, {}).get(p.variant)
        if have is None:
            diff.load.append(p)
        elif (have.instances not in (None, p.instances)) or (have.threads not in (None, p.threads)):
            diff.reload.append(p)
        else:
            diff.keep.append((p.device_id, p.variant))
    for dev, models in sorted(loaded.items()):
        for var in sorted(models):
            if var in managed and (dev, var) not in wanted:
                diff.unload.append((dev, var))
    diff.routes_changed = route_table(target) != route_table(current)
    return diff


class PlanExecutor:
    """Applies plans through a runtime; `publish(plan)` makes a plan current (store + shims)."""

    def __init__(self, runtime: Runtime, publish: Callable[[Plan], None], managed: set[str],
                 drain_s: float = 2.0, log: Callable[[str], None] | None = None,
                 is_down: Callable[[str], bool] = lambda device_id: False):
        self.runtime = runtime
        self.publish = publish
        self.is_down = is_down  # a device whose loads are still running went down: the apply fails now
        self.managed = set(managed)
        self.drain_s = drain_s
        self.log = log or (lambda msg: None)
        self._lock = threading.Lock()
        self.last_apply_s = 0.0  # how long the last apply with model changes took (the forecaster's horizon)

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    def loaded(self, device_ids: list[str]) -> dict[str, dict[str, LoadedModel]]:
        """What each device's Triton has READY now, with instance config (managed variants only)."""
        out: dict[str, dict[str, LoadedModel]] = {}
        for dev in device_ids:
            ctl = self.runtime.control(dev)
            models = {}
            try:
                names = ctl.loaded()
            except UserError as e:  # a device that does not answer hosts nothing we can use
                self.log(str(e))  # the message names the device
                names = {}
            out[dev] = models
            for name in names:
                if name not in self.managed:
                    continue
                try:
                    models[name] = loaded_model_from_config(dev, name, ctl.model_config(name))
                except UserError:
                    models[name] = LoadedModel(dev, name)
        return out

    def diff(self, target: Plan, current: Plan | None, device_ids: list[str]) -> PlanDiff:
        return compute_diff(target, self.loaded(device_ids), current, self.managed)

    def apply(self, target: Plan, current: Plan | None, device_ids: list[str],
              next_version: Callable[[], int] | None = None, routes_only: bool = False) -> ApplyResult:
        """Carry `target` out. When anything changes it is published as version `next_version()`
        (or its own version when that is None). When nothing changes (the same models loaded the
        same way, the same routes), nothing happens and the current plan stays. Raises ApplyBusy
        or ApplyFailed; with `routes_only`, NotRoutesOnly when a model would load or unload."""
        if not self._lock.acquire(blocking=False):
            raise ApplyBusy("another apply is in progress; try again when it has finished")
        try:
            return self._apply(target, current, device_ids, next_version, routes_only)
        finally:
            self._lock.release()

    def _apply(self, target: Plan, current: Plan | None, device_ids: list[str],
               next_version: Callable[[], int] | None, routes_only: bool) -> ApplyResult:
        diff = self.diff(target, current, device_ids)
        if diff.is_empty and current is not None:
            return ApplyResult(plan=current, diff=diff, changed=False)
        if routes_only and diff.changes_models:
            raise NotRoutesOnly(f"not a change of routes only: it would {diff.summary()}")
        started = time.monotonic()
        self._load_all(diff, current)
        if next_version is not None:
            target = target.with_version(next_version(), created_at=utc_now())
        result = ApplyResult(plan=target, diff=diff, changed=True, load_s=time.monotonic() - started)
        self.publish(target)
        if diff.unload:
            t = time.monotonic()
            time.sleep(self.drain_s)  # requests already routed to old variants finish
            result.drain_s = time.monotonic() - t
            t = time.monotonic()
            for dev, var in diff.unload:
                try:
                    self.log(f"unload {var} on {dev}")
                    self.runtime.unload(dev, var)
                except UserError as e:
                    result.warnings.append(str(e))
            result.unload_s = time.monotonic() - t
        if diff.changes_models:
            self.last_apply_s = time.monotonic() - started
        return result

    def _load_all(self, diff: PlanDiff, current: Plan | None) -> None:
        """Load and reload in parallel across devices (sequentially on one device); roll back on failure."""
        by_device: dict[str, list[tuple[str, Placement]]] = {}
        for p in diff.load:
            by_device.setdefault(p.device_id, []).append(("load", p))
        for p in diff.reload:
            by_device.setdefault(p.device_id, []).append(("reload", p))
        if not by_device:
            return
        done: list[tuple[str, Placement]] = []
        errors: list[str] = []
        failed: set[str] = set()
        done_lock = threading.Lock()

        def run(steps: list[tuple[str, Placement]]) -> None:
            for action, p in steps:
                if errors:
                    return
                try:
                    self.log(f"{action} {p.variant} on {p.device_id} ({p.instances}x{p.threads})")
                    self.runtime.load(p.device_id, p.variant, instances=p.instances, threads=p.threads)
                    if not self.runtime.control(p.device_id).is_model_ready(p.variant):
                        raise UserError(f"{p.device_id}: {p.variant} loaded but is not ready")
                    with done_lock:
                        done.append((action, p))
                except Exception as e:  # noqa: BLE001 - any failure rolls back, and its message is kept
                    with done_lock:
                        failed.add(p.device_id)
                        errors.append(str(e) if isinstance(e, UserError) else f"{p.device_id}: {action} of "
                                      f"{p.variant} failed: {e}")
                    return

        pool = ThreadPoolExecutor(max_workers=len(by_device))
        pending = {pool.submit(run, steps): dev for dev, steps in by_device.items()}
        try:
            while pending:
                finished, _ = wait(pending, timeout=0.1)
                for f in finished:
                    del pending[f]
                for f, dev in list(pending.items()):
                    if self.is_down(dev):  # its load would end only at the load timeout (hung, cut off)
                        del pending[f]  # not waited for; the loads on other devices are
                        with done_lock:
                            failed.add(dev)
                            errors.append(f"{dev}: went down while its models loaded")
        finally:
            pool.shutdown(wait=False)  # a load into a device that went down is left to its own timeout
        if errors:
            with done_lock:  # a load left running (its device went down) may still finish
                done = list(done)
            self._rollback(done, current)
            undone = ", ".join(f"{p.variant}@{p.device_id}" for _, p in done) or "nothing"
            raise ApplyFailed(f"{'; '.join(errors)} — rolled back (undid: {undone}); the previous plan stays",
                              frozenset(failed))

    def _rollback(self, done: list[tuple[str, Placement]], current: Plan | None) -> None:
        for action, p in reversed(done):
            try:
                if action == "load":
                    self.runtime.unload(p.device_id, p.variant)
                else:
                    old = current.placement(p.device_id, p.variant) if current else None
                    if old is not None:
                        self.runtime.load(p.device_id, p.variant, instances=old.instances, threads=old.threads)
            except UserError as e:
                self.log(f"rollback step failed: {e}")
