"""Standby variants: room to spill a burst the plan was not made for, and to serve a calm accurately.

After the MILP has decided, each device that serves a family also gets, where its memory still
allows, the family's fastest usable variant on that device as a *spill route*: a placement that
serves nothing in the plan (served 0) and a route of weight 0. If the MILP kept that variant
loaded without a planned share (rather than pay to reload it later), it spills too. The shims'
accuracy-first routing sends a request there only when no more accurate route is predicted to
answer it by its deadline (routing.py, backlog.py). A standby therefore costs memory and one model load, and no accuracy
while the plan's routes keep up; when a burst outruns the plan, or a device runs slower than its
profile, the overflow moves to the fast variant within a request instead of waiting for the
controller's next plan and the executor's loads (seconds). This is Model-Switching's mechanism
(several variants resident, the variant chosen per request under load) on top of the MILP's
placement. Only the MILP policy gets standbys: the baselines stay as published.

A device that still hosts a variant more accurate than every one the plan gives a share of the
family (kept by the MILP from the plan in force, serving nothing: the calm's variant under a plan
made for a burst) gets the most accurate such variant as a route of weight 0 as well. It takes
requests only with spare time: while its device is idle (nothing in flight or queued there) and
would answer within half the request's budget (routing.py `SPARE_USE`); never a burst's
overflow, which goes to the fastest variant. So
the calm after a burst, while the peak estimator keeps the plan made for the burst, is served by
the accurate variant again, with no model load and no re-plan; on the live 5-minute run that
plan used to serve the whole calm with ResNet-18 (docs/results.md).

A device the plan leaves idle (no weighted route: demand is low, or it just came back or joined)
becomes a warm spare the same way: the fastest variant of each family the plan serves, busiest
family first, while its memory allows. When a serving device fails, the re-plan that moves its traffic
finds the model loaded there: a change of routes, in milliseconds, instead of a load of seconds.
A device the objective prices (`objective = "cost"` or a device cost weight, and a cost per hour)
stays idle: a spare would put it to use, which the plan chose not to pay for.

With a plan in force, a standby or spare is loaded only on a device the plan changes anyway (it
loads something there) or one that hosts nothing now (it joined or came back): a demand change the
plan absorbs by re-routing alone loads no model, standbys included. Spill routes to fastest
variants a device already hosts are added in every case (they load nothing).

Standbys and spares are outside the MILP's objective: the MILP is exact on its own terms
(tests/test_planner_properties.py, with standby off), and this layer only adds placements that
serve nothing and routes of weight 0 (the same tests check that, with standby on).
"""

from __future__ import annotations

from dataclasses import replace

from orchestrator.plan import Placement, Plan, Route
from orchestrator.planner.weights import weights_for
from orchestrator.planner.problem import Problem


def add_standby(plan: Plan, prob: Problem) -> Plan:
    """`plan` with the standby placements and spill routes added (unchanged when none fits)."""
    group_of = {d.id: g for g in prob.groups for d in g.devices}
    memory = {(o.variant, o.instances, o.threads): o.memory_mb for g in prob.groups for o in g.options}
    catalog = prob.request.catalog
    weights = weights_for(prob)
    placements = list(plan.placements)
    spill: dict[str, list[Route]] = {}
    added = []
    top_shared = {f: max((catalog.variants[r.variant].accuracy for r in fp.routes if r.weight > 0), default=-1.0)
                  for f, fp in plan.families.items()}  # the most accurate variant with a share, per family
    for device in prob.request.cluster.devices:
        g = group_of.get(device.id)
        if g is None:  # drained or reserved: the plan hosts nothing new there
            continue
        hosted = [p for p in placements if p.device_id == device.id]
        now = prob.current.get(device.id, set())
        may_load = (prob.request.current is None or not now
                    or any((p.variant, p.instances, p.threads) not in now for p in hosted))
        used = sum(memory.get((p.variant, p.instances, p.threads),
                              catalog.variants[p.variant].memory_mb * p.instances) for p in hosted)
        served_families = sorted({catalog.variants[r.variant].family for fp in plan.families.values()
                                  for r in fp.routes if r.device_id == device.id and r.weight > 0})
        if not served_families and weights.device_cost(g) == 0:  # idle: a warm spare, busiest family first
            served_families = [f for f, fp in sorted(plan.families.items(), key=lambda kv: (-kv[1].demand_rps, kv[0]))
                               if fp.served_rps > 0]
        for family in served_families:
            options = [o for o in g.options if o.family == family]
            if options:
                best = max(options, key=lambda o: (o.capacity_rps, -o.memory_mb, o.variant)).variant
                # the fastest variant, in its fastest instance config that fits beside what is hosted
                # (two instances of it may not fit where one does)
                configs = [o for o in options if o.variant == best and used + o.memory_mb <= g.memory_mb]
                fastest = max(configs or [o for o in options if o.variant == best],
                              key=lambda o: (o.capacity_rps, -o.memory_mb))
                if (may_load and not any(p.variant == fastest.variant for p in hosted)
                        and used + fastest.memory_mb <= g.memory_mb):
                    standby = Placement(device_id=device.id, variant=fastest.variant, batch_cap=fastest.batch_cap,
                                        instances=fastest.instances, threads=fastest.threads,
                                        capacity_rps=fastest.capacity_rps, served_rps=0.0)
                    placements.append(standby)
                    hosted.append(standby)
                    used += fastest.memory_mb
                    added.append(f"{fastest.variant}@{device.id}")
                # the fastest variant spills, loaded now or kept by the MILP from the current plan
                # (loaded, serving nothing); never a slower one: it would take device time the
                # plan gave to the weighted routes
                routed = {r.variant for r in plan.families[family].routes if r.device_id == device.id}
                if fastest.variant not in routed and any(p.variant == fastest.variant for p in hosted):
                    spill.setdefault(family, []).append(Route(device.id, fastest.variant, 0.0))
                # the most accurate variant the device still hosts (kept, serving nothing), where it
                # is more accurate than every variant the plan gives a share: it takes spare time only
                # (more accurate than those, it is in a tier of its own: routing.py never makes it
                # the route of an overflow)
                accurate = _kept_upgrade(hosted, routed, top_shared[family], options, catalog)
                if accurate is not None:
                    spill.setdefault(family, []).append(Route(device.id, accurate, 0.0))
    if not spill:
        return plan
    families = {f: replace(fp, routes=fp.routes + tuple(spill.get(f, ()))) for f, fp in plan.families.items()}
    note = "spill routes (weight 0): " + ", ".join(f"{r.variant}@{r.device_id}" for rs in spill.values() for r in rs)
    if added:
        note += f"; standby loaded for them: {', '.join(added)}"
    return replace(plan, placements=tuple(placements), families=families, notes=plan.notes + (note,))


def _kept_upgrade(hosted: list[Placement], routed: set[str], top: float, options, catalog) -> str | None:
    """The most accurate usable variant among `hosted` placements that serve nothing and are not
    routed on the device yet (`routed`), if it is more accurate than `top` (the most accurate
    variant with a share anywhere); else None."""
    usable = {o.variant for o in options}
    kept = [p.variant for p in hosted if p.served_rps <= 0 and p.variant in usable and p.variant not in routed
            and catalog.variants[p.variant].accuracy > top]
    return max(kept, key=lambda v: (catalog.variants[v].accuracy, v)) if kept else None
