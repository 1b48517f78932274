"""The checks on a plan a client sends to POST /api/v1/apply: every name known (404 otherwise),
every field of the right type and every number finite and in range (400 otherwise)."""

from __future__ import annotations

from orchestrator.controlplane.service import MAX_RATE_RPS, MAX_SLO_MS, NotFound, parse_number, shown
from orchestrator.errors import UserError
from orchestrator.plan import Plan


def check_plan(cp, plan: Plan) -> None:
    """A plan a client sent (POST /apply): every name known (404 otherwise), every field of the
    right type and every number finite and in range (400 otherwise), so that a stored plan can
    always be planned from, drawn and served as JSON."""
    def integer(value, what: str, low: int, high: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise UserError(f"plan: {what} must be an integer in {low}..{high}, not {shown(value)}")

    def text(value, what: str) -> None:
        if not isinstance(value, str):
            raise UserError(f"plan: {what} must be a string, not {shown(value)}")

    integer(plan.version, "version", 0, 2**63 - 1)
    text(plan.policy, "policy")
    text(plan.created_at, "created_at")
    for i, note in enumerate(plan.notes):
        text(note, f"notes[{i}]")
    text(plan.solver.status, "solver.status")
    text(plan.solver.solver, "solver.solver")
    for key in ("objective", "gap", "time_ms"):
        parse_number(getattr(plan.solver, key), f"plan: solver.{key}", -1e15, 1e15)
    for i, p in enumerate(plan.placements):
        where = f"placements[{i}]"
        text(p.device_id, f"{where}.device_id")
        text(p.variant, f"{where}.variant")
        cp.check_device(p.device_id)
        cp.check_variant(p.variant)
        integer(p.batch_cap, f"{where}.batch_cap", 1, 4096)
        integer(p.instances, f"{where}.instances", 1, 16)
        integer(p.threads, f"{where}.threads", 1, 64)
        for key in ("capacity_rps", "served_rps"):
            parse_number(getattr(p, key), f"plan: {where}.{key}", 0, MAX_RATE_RPS)
    for name, fp in plan.families.items():
        where = f"families[{name!r}]"
        if name not in cp.catalog.families():
            raise NotFound(f"plan: unknown family {shown(name)}; the catalog has {cp.families()}")
        if fp.family != name:
            raise UserError(f"plan: {where}.family must be {name!r}, not {shown(fp.family)}")
        parse_number(fp.slo_ms, f"plan: {where}.slo_ms", 0, MAX_SLO_MS)
        for key in ("demand_rps", "served_rps", "unserved_rps"):
            parse_number(getattr(fp, key), f"plan: {where}.{key}", 0, MAX_RATE_RPS)
        parse_number(fp.effective_accuracy, f"plan: {where}.effective_accuracy", 0, 100)
        if fp.accuracy_floor is not None:
            parse_number(fp.accuracy_floor, f"plan: {where}.accuracy_floor", 0, 100)
        text(fp.reason, f"{where}.reason")
        variants = {v.name for v in cp.catalog.families()[name]}
        for j, r in enumerate(fp.routes):
            text(r.device_id, f"{where}.routes[{j}].device_id")
            text(r.variant, f"{where}.routes[{j}].variant")
            cp.check_device(r.device_id)
            if r.variant not in variants:
                raise NotFound(f"plan: {where}.routes[{j}] names {shown(r.variant)}, not a variant of {name!r} "
                               f"({', '.join(sorted(variants))})")
            if (r.device_id, r.variant) not in plan.loaded_pairs():
                raise UserError(f"plan: {where}.routes[{j}] sends to {r.variant} on {r.device_id}, "
                                f"which the plan's placements do not load")
            parse_number(r.weight, f"plan: {where}.routes[{j}].weight", 0, 1 + 1e-6)  # planner rounding
