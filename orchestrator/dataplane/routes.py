"""The routes a plan asks for, worked out once for every driver (the shim's route workers, the
simulator's routes): which (device, variant) pairs, each one's batch cap and deadline, whether
it is a spill route, its latency model and batching policy, and when a route of the plan before
may be kept. Pure: no clock, no I/O."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from orchestrator.dataplane.batching import Policy, make_policy, max_hold_s
from orchestrator.catalog import Catalog, Variant
from orchestrator.dataplane.config import Routing, ShimConfig
from orchestrator.dataplane.latency import LatencyModel
from orchestrator.plan import Placement, Plan
from orchestrator.profiles import ProfileSet

DEFAULT_BATCH_CAP = 8  # a hand-written plan's route without a placement, for a variant with no max_batch_size


@dataclass(frozen=True)
class RouteSpec:
    """One route of a plan, as every driver builds it."""

    device_id: str
    variant: str
    placement: Placement  # the plan's (or, for a route without one, one instance with `batch_cap`)
    batch_cap: int  # the largest batch sent: the placement's, within the variant's max_batch_size
    slo_ms: float  # the family's deadline (0: none)
    spill: bool  # no weight in the plan: it takes requests past the planned routes' flows only

    def keeps(self, previous: Placement) -> bool:
        """Whether a route built for `previous` serves this one: the same model instances and
        threads (a reload with other instances needs a route with other lanes and latencies)."""
        return previous.instances == self.placement.instances and previous.threads == self.placement.threads


def batch_cap(placement: Placement | None, variant: Variant) -> int:
    cap = placement.batch_cap if placement is not None else (variant.max_batch_size or DEFAULT_BATCH_CAP)
    if variant.max_batch_size > 0:
        cap = min(cap, variant.max_batch_size)
    return max(1, cap)


def plan_routes(plan: Plan, catalog: Catalog, routing: str,
                endpoints: Collection[str] | None = None) -> dict[tuple[str, str], RouteSpec]:
    """The plan's routes under `routing` (accuracy-first routes spill routes too, weighted only
    the weighted ones), by (device, variant), in sorted order. ValueError for a device not in
    `endpoints` (when given) or a variant the catalog lacks."""
    spill_routing = routing == Routing.ACCURACY_FIRST
    weighted = plan.routed_pairs()
    needed = sorted(plan.routed_pairs(spill_routing))
    if endpoints is not None:
        no_endpoint = sorted({d for d, _ in needed if d not in endpoints})
        if no_endpoint:
            raise ValueError(f"plan version {plan.version} routes to device(s) {no_endpoint} without an endpoint; "
                             f"endpoints known: {sorted(endpoints)}")
    missing = sorted({v for _, v in needed if v not in catalog.variants})
    if missing:
        raise ValueError(f"plan version {plan.version} routes to variant(s) {missing} the catalog lacks")
    specs: dict[tuple[str, str], RouteSpec] = {}
    for device_id, name in needed:
        variant = catalog.variants[name]
        placement = plan.placement(device_id, name)
        cap = batch_cap(placement, variant)
        family = plan.families.get(variant.family)
        specs[(device_id, name)] = RouteSpec(
            device_id=device_id, variant=name, placement=placement or Placement(device_id, name, cap),
            batch_cap=cap, slo_ms=family.slo_ms if family is not None else 0.0,
            spill=(device_id, name) not in weighted)
    return specs


def latency_model(spec: RouteSpec, profiles: ProfileSet | None, device_class: str | None,
                  percentile: str) -> LatencyModel:
    """The route's latency model: from the profiles of its (variant, device class) for its
    placement's instances and threads, else one learned from the answers it gets."""
    if profiles is not None and device_class:
        records = profiles.for_pair(spec.variant, device_class)
        if records:
            return LatencyModel.from_profiles(records, percentile, instances=spec.placement.instances,
                                              threads=spec.placement.threads)
    return LatencyModel.learned()


def route_policy(spec: RouteSpec, model: LatencyModel, config: ShimConfig) -> Policy:
    """The route's batching policy (config.policy), with its cap, deadline and hold bound."""
    policy = make_policy(config.policy, model=model, batch_cap=spec.batch_cap,
                         slo_s=spec.slo_ms / 1000.0 if spec.slo_ms > 0 else None, slack_s=config.slack_ms / 1000.0,
                         max_hold_s=None if config.max_hold_ms is None else config.max_hold_ms / 1000.0,
                         hold_factor=config.hold_factor)
    set_hold(policy, spec, model, config)
    return policy


def set_hold(policy: Policy, spec: RouteSpec, model: LatencyModel, config: ShimConfig) -> None:
    """Bring a kept route's policy to the new plan: its batch cap and how long it may hold a
    queue (a spill route hardly at all: batching.max_hold_s)."""
    if hasattr(policy, "batch_cap"):
        policy.batch_cap = spec.batch_cap
    if hasattr(policy, "max_hold_s"):
        policy.max_hold_s = max_hold_s(spec.spill, config.max_hold_ms, model, spec.batch_cap)
