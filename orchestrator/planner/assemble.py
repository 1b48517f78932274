"""Turn a policy's decision (what each device hosts and serves) into a `Plan`.

Every policy ends here, so all plans carry the same figures computed the same way: routing
weights are the served throughputs normalised per family; effective accuracy (predicted) is
sum over routes of served x accuracy / demand; unserved demand comes with a reason.
"""

from __future__ import annotations

from dataclasses import replace

from orchestrator.plan import FamilyPlan, Placement, Plan, Route, SolverInfo
from orchestrator.planner.capacity import Option
from orchestrator.planner.problem import Problem

EPS = 1e-9


def assemble(prob: Problem, policy: str, hosted: dict[str, list[tuple[Option, float]]], solver: SolverInfo,
             notes: tuple[str, ...] = (), reasons: dict[str, str] | None = None) -> Plan:
    """`hosted`: device id -> [(option, served rps)]; served may be 0 for a kept placement."""
    req = prob.request
    reasons = reasons or {}
    placements: list[Placement] = []
    served: dict[str, list[tuple[str, Option, float]]] = {}
    for d in req.cluster.devices:
        if d.id in req.reserved and req.current is not None:
            placements.extend(replace(p, served_rps=0.0) for p in req.current.placements if p.device_id == d.id)
            continue
        for opt, rps in sorted(hosted.get(d.id, []), key=lambda t: (t[0].family, t[0].accuracy, t[0].variant)):
            rps = max(0.0, rps)
            placements.append(Placement(device_id=d.id, variant=opt.variant, batch_cap=opt.batch_cap,
                                        instances=opt.instances, threads=opt.threads,
                                        capacity_rps=opt.capacity_rps, served_rps=rps))
            served.setdefault(opt.family, []).append((d.id, opt, rps))
    families: dict[str, FamilyPlan] = {}
    for fam in sorted(req.demand_rps):
        demand = float(req.demand_rps[fam])
        flows = [(dev, o, s) for dev, o, s in served.get(fam, []) if s > EPS]
        total = sum(s for _, _, s in flows)
        total = min(total, demand) if total > demand * (1 + 1e-7) else total
        routes = tuple(Route(dev, o.variant, s / total) for dev, o, s in flows) if total > 0 else ()
        unserved = max(0.0, demand - total)
        acc = sum(s * o.accuracy for _, o, s in flows) / demand if demand > 0 else 0.0
        reason = ""
        if unserved > 1e-6 * max(1.0, demand):
            reason = prob.no_option_reason.get(fam) or reasons.get(fam) or _capacity_reason(prob, fam, total)
        floor = req.accuracy_floor.get(fam)
        families[fam] = FamilyPlan(family=fam, slo_ms=float(req.slo_ms.get(fam, 0.0)), demand_rps=demand,
                                   served_rps=total, unserved_rps=unserved, routes=routes,
                                   effective_accuracy=acc,
                                   accuracy_floor=floor.value if floor else None, reason=reason)
    return Plan(version=0, policy=policy, placements=tuple(placements), families=families, solver=solver,
                notes=tuple(notes))


def _capacity_reason(prob: Problem, fam: str, served: float) -> str:
    u = prob.utilisation_cap
    alone = sum(len(g.devices) * u * max((o.capacity_rps for o in g.options if o.family == fam), default=0.0)
                for g in prob.groups)
    text = (f"not enough capacity: with every available device given to {fam!r} alone at the {u:.0%} "
            f"utilisation cap, at most {alone:.1f} rps can meet the SLO; this plan serves {served:.1f} rps")
    floor = prob.request.accuracy_floor.get(fam)
    if floor is not None and floor.kind == "average":
        text += f" (the average accuracy floor {floor.value:g} % also limits the faster variants)"
    return text
