"""Baseline policies behind the same interface as the MILP, each a reading of its paper.

All of them use the same capacity rule (capacity.py) as the MILP, so a comparison measures the
*decisions*, not different latency models. Every device's time is shared between the families
it hosts in proportion to their demand; a family's traffic is split over its hosts in proportion
to their usable capacity (a capacity-weighted load balancer), and what exceeds the usable
capacity (utilisation cap x profiled throughput) is reported unserved.

* Model-Switching -- J. Zhang, S. Elnikety, S. Zahedi, A. Gupta, M. Abdelzaher, "Model-Switching:
  Dealing with Fluctuating Workloads in Machine-Learning-as-a-Service Systems", HotCloud 2020,
  Algorithm 1: one model serves the whole cluster; at each period, given the observed arrival rate,
  pick the most accurate model whose profiled tail latency at that load meets the deadline, each
  with its best <replicas R, threads T> configuration. Here "tail latency at the load meets the
  deadline" is the capacity rule: load <= utilisation cap x capacity at the largest batch whose p99
  is within latency_fraction x SLO. When no model meets the load it serves the fastest (highest
  capacity) one and reports the rest unserved.
* Clipper-HA / Clipper-HT -- D. Crankshaw et al., "Clipper: A Low-Latency Online Prediction Serving
  System", NSDI 2017, as the static baselines of Proteus (S. Ahmad et al., ASPLOS 2024, Section 6):
  one fixed variant everywhere, the highest-accuracy (HA) or the highest-throughput (HT) one that
  can meet the SLO, with the batch size set by the SLO (Clipper's adaptive batching converges to the
  largest batch within the latency objective, which is what the capacity rule computes).
* INFaaS -- F. Romero, Q. Li, N. J. Yadwadkar, C. Kozyrakis, "INFaaS: Automated Model-less
  Inference Serving", USENIX ATC 2021, Section 4 (autoscaling): a greedy that starts from the
  running configuration; when a variant's load exceeds what its workers serve it either adds a
  worker or switches to a variant with higher throughput, whichever is cheaper, and when load
  drops it moves back to the more accurate variant. On a fixed cluster "adding a worker" is
  giving an idle device a replica; "cheapest" is the least accuracy lost per rps gained.
  One variant per device (INFaaS places variants on workers; it does not time-share by plan).
"""

from __future__ import annotations

import time

from orchestrator.plan import Plan, SolverInfo
from orchestrator.planner.assemble import assemble
from orchestrator.planner.capacity import Option
from orchestrator.planner.problem import Group, Problem


def model_switching(prob: Problem) -> Plan:
    t0 = time.perf_counter()
    choice, notes = {}, []
    for f in prob.families:
        ranked = sorted(_variants(prob, f), key=lambda v: (-_accuracy(prob, f, v), v))
        caps = {v: _family_capacity(prob, f, v) for v in ranked}
        meeting = [v for v in ranked if caps[v] >= prob.demand[f]]
        if meeting:
            choice[f] = meeting[0]
            notes.append(f"model-switching: {f} -> {choice[f]} (most accurate with capacity "
                         f"{caps[choice[f]]:.1f} >= load {prob.demand[f]:.1f} rps)")
        elif ranked:
            choice[f] = max(ranked, key=lambda v: caps[v])
            notes.append(f"model-switching: no {f} variant meets load {prob.demand[f]:.1f} rps; "
                         f"serving the fastest, {choice[f]} ({caps[choice[f]]:.1f} rps)")
    return _static_plan(prob, "model-switching", choice, t0, notes)


def clipper_ha(prob: Problem) -> Plan:
    t0 = time.perf_counter()
    choice = {f: max(vs, key=lambda v: (_accuracy(prob, f, v), v))
              for f in prob.families if (vs := _variants(prob, f))}
    return _static_plan(prob, "clipper-ha", choice, t0, [f"clipper-ha: {f} -> {v}" for f, v in choice.items()])


def clipper_ht(prob: Problem) -> Plan:
    t0 = time.perf_counter()
    choice = {f: max(vs, key=lambda v: (_family_capacity(prob, f, v), v))
              for f in prob.families if (vs := _variants(prob, f))}
    return _static_plan(prob, "clipper-ht", choice, t0, [f"clipper-ht: {f} -> {v}" for f, v in choice.items()])


def infaas(prob: Problem) -> Plan:
    t0 = time.perf_counter()
    u = prob.utilisation_cap
    group_of = {d.id: g for g in prob.groups for d in g.devices}
    assign: dict[str, Option] = {}  # device -> the one option it runs
    # start from what runs now
    served_now = {}
    if prob.request.current is not None:
        served_now = {(p.device_id, p.variant, p.instances, p.threads): p.served_rps
                      for p in prob.request.current.placements}
    for dev, keys in prob.current.items():
        g = group_of[dev]
        usable = [o for o in _options(prob, g) if o.key in keys and o.family in prob.demand]
        if usable:
            assign[dev] = max(usable, key=lambda o: (served_now.get((dev, *o.key), 0.0), o.accuracy))

    def cap(f: str) -> float:
        return sum(u * o.capacity_rps for o in assign.values() if o.family == f)

    # scale out: idle devices get a replica of the most accurate variant of the neediest family
    for g in prob.groups:
        for d in g.devices:
            if d.id in assign:
                continue
            fams = [f for f in prob.families if any(o.family == f for o in _options(prob, g))]
            if not fams:
                continue
            f = max(fams, key=lambda f: (prob.demand[f] / max(cap(f), 1e-9), f))
            assign[d.id] = _best(prob, g, f, key=lambda o: (o.accuracy, o.capacity_rps))
    # under load: cheapest downgrade (least accuracy lost per rps gained) until the load is met
    while True:
        short = [f for f in prob.families if cap(f) < prob.demand[f] - 1e-9]
        moves = []
        for dev, o in assign.items():
            if o.family not in short:
                continue
            for alt in _options(prob, group_of[dev]):
                if alt.family == o.family and alt.capacity_rps > o.capacity_rps:
                    rate = (o.accuracy - alt.accuracy) / (u * (alt.capacity_rps - o.capacity_rps))
                    moves.append((rate, -alt.capacity_rps, dev, alt.variant, alt))
        if not moves:
            break
        _, _, dev, _, alt = min(moves, key=lambda m: m[:4])
        assign[dev] = alt
    # spare capacity: the largest accuracy upgrade that still meets the load, one at a time
    while True:
        moves = []
        for dev, o in assign.items():
            f = o.family
            for alt in _options(prob, group_of[dev]):
                if alt.family == f and alt.accuracy > o.accuracy:
                    after = cap(f) - u * o.capacity_rps + u * alt.capacity_rps
                    if after >= prob.demand[f] - 1e-9:
                        moves.append((alt.accuracy - o.accuracy, alt.capacity_rps, dev, alt))
        if not moves:
            break
        _, _, dev, alt = max(moves, key=lambda m: (m[0], m[1], m[2]))
        assign[dev] = alt
    hosted = _flows(prob, {dev: [o] for dev, o in assign.items()})
    reasons = {f: f"infaas: its variants on {sum(1 for o in assign.values() if o.family == f)} devices give "
                  f"{cap(f):.1f} rps at the {u:.0%} cap" for f in prob.families}
    info = SolverInfo(status="HEURISTIC", time_ms=(time.perf_counter() - t0) * 1000, solver="infaas-greedy")
    return assemble(prob, "infaas", hosted, info, reasons=reasons)


# --- shared helpers -------------------------------------------------------------------------

def _options(prob: Problem, g: Group) -> list[Option]:
    """A group's usable options; these policies have no notion of an average-accuracy floor, so
    one of `value` is applied as a per-variant floor (for a single-variant policy it is the same)."""
    floors = prob.request.accuracy_floor
    return [o for o in g.options if o.family not in floors or o.accuracy >= floors[o.family].value]


def _variants(prob: Problem, family: str) -> list[str]:
    return sorted({o.variant for g in prob.groups for o in _options(prob, g) if o.family == family})


def _accuracy(prob: Problem, family: str, variant: str) -> float:
    return next(o.accuracy for g in prob.groups for o in _options(prob, g) if o.variant == variant)


def _best(prob: Problem, g: Group, family: str, key) -> Option:
    return max((o for o in _options(prob, g) if o.family == family), key=key)


def _share(prob: Problem, families_here: list[str], family: str) -> float:
    """Time share of `family` on a device hosting `families_here`: proportional to demand."""
    total = sum(prob.demand[f] for f in families_here)
    return prob.demand[family] / total if total > 0 else 0.0


def _family_capacity(prob: Problem, family: str, variant: str) -> float:
    """Usable capacity for `family` if every device ran `variant` (best config), time shared with
    the other families in proportion to demand."""
    total = 0.0
    for g in prob.groups:
        opts = [o for o in _options(prob, g) if o.variant == variant]
        if opts:
            fams = sorted({o.family for o in _options(prob, g)})
            total += len(g.devices) * prob.utilisation_cap * max(o.capacity_rps for o in opts) * \
                _share(prob, fams, family)
    return total


def _static_plan(prob: Problem, policy: str, choice: dict[str, str], t0: float, notes: list[str]) -> Plan:
    """Every device hosts the chosen variant of each family (best config; while memory lasts)."""
    hosting: dict[str, list[Option]] = {}
    for g in prob.groups:
        for d in g.devices:
            free, here = g.memory_mb, []
            for f in sorted(choice, key=lambda f: -prob.demand[f]):
                opts = [o for o in _options(prob, g) if o.variant == choice[f]]
                if opts:
                    o = max(opts, key=lambda o: (o.capacity_rps, -o.memory_mb))
                    if o.memory_mb <= free:
                        here.append(o)
                        free -= o.memory_mb
            if here:
                hosting[d.id] = here
    hosted = _flows(prob, hosting)
    reasons = {f: f"{policy} serves {f} with {v} only; its usable capacity is "
                  f"{sum(s for hs in hosted.values() for o, s in hs if o.family == f):.1f} rps"
               for f, v in choice.items()}
    info = SolverInfo(status="HEURISTIC", time_ms=(time.perf_counter() - t0) * 1000, solver=policy)
    return assemble(prob, policy, hosted, info, notes=tuple(notes), reasons=reasons)


def _flows(prob: Problem, hosting: dict[str, list[Option]]) -> dict[str, list[tuple[Option, float]]]:
    """Route each family over its hosts in proportion to usable capacity, up to its demand."""
    u = prob.utilisation_cap
    usable: dict[tuple[str, Option], float] = {}
    for dev, opts in hosting.items():
        fams = sorted({o.family for o in opts})
        for o in opts:
            usable[(dev, o)] = u * o.capacity_rps * _share(prob, fams, o.family)
    out: dict[str, list[tuple[Option, float]]] = {}
    for f in prob.families:
        mine = {k: c for k, c in usable.items() if k[1].family == f}
        total = sum(mine.values())
        served = min(prob.demand[f], total)
        for (dev, o), c in mine.items():
            out.setdefault(dev, []).append((o, served * c / total if total > 0 else 0.0))
    return out
