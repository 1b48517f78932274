"""Invariants every plan must satisfy (shared by the planner tests)."""

from __future__ import annotations

from orchestrator.plan import Plan
from orchestrator.planner.problem import Problem

TOL = 1e-6


def check_plan(prob: Problem, plan: Plan) -> None:
    req = prob.request
    catalog = req.catalog
    # memory: what a device hosts fits in it
    for d in req.cluster.devices:
        hosted = plan.placements_on(d.id)
        used = sum(catalog.get(p.variant).memory_mb * p.instances for p in hosted)
        assert used <= d.memory_mb + TOL, (d.id, used, d.memory_mb)
        if d.id in req.drained:
            assert not hosted, f"drained {d.id} hosts {hosted}"
        # time sharing: served / capacity sums to at most the utilisation cap
        share = sum(p.served_rps / p.capacity_rps for p in hosted if p.capacity_rps > 0)
        assert share <= req.options.utilisation_cap + 1e-6, (d.id, share)
        assert len({p.variant for p in hosted}) == len(hosted), "one config per variant per device"
    for fam, fp in plan.families.items():
        assert fp.served_rps <= fp.demand_rps + 1e-6
        assert abs(fp.served_rps + fp.unserved_rps - fp.demand_rps) <= 1e-5 * max(1.0, fp.demand_rps)
        if fp.routes:
            assert abs(sum(r.weight for r in fp.routes) - 1.0) < 1e-6
        acc = 0.0
        for r in fp.routes:
            p = plan.placement(r.device_id, r.variant)
            assert p is not None, f"route to {r} without a placement"
            assert catalog.get(r.variant).family == fam
            # weights are the solved throughputs normalised, never uniform by construction
            assert abs(r.weight - p.served_rps / fp.served_rps) < 1e-5
            acc += p.served_rps * catalog.get(r.variant).accuracy
        if fp.demand_rps > 0:
            assert abs(acc / fp.demand_rps - fp.effective_accuracy) < 1e-4
        if fp.unserved_rps > 1e-6 * max(1.0, fp.demand_rps):
            assert fp.reason, f"{fam}: unserved without a reason"
        floor = req.accuracy_floor.get(fam)
        if floor is not None and fp.served_rps > 1e-6:
            if floor.kind == "variant":
                assert all(catalog.get(r.variant).accuracy >= floor.value for r in fp.routes)
            else:
                assert fp.effective_accuracy * fp.demand_rps / fp.served_rps >= floor.value - 1e-4
