"""The request turned into what every policy works on: groups of interchangeable devices, the
usable options on each, what each device hosts now, and why a family has no option at all.

Devices are *interchangeable* when they share class, memory and cost: same profiles, same packing,
same price. A `Group` holds such devices. With a plan in force, devices of a group that host the same
usable options now are interchangeable too (same loads for any new hosting): a `Kind`. The MILP
counts devices per kind instead of naming them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.cluster import Device
from orchestrator.planner.capacity import Option, fastest_p99, usable_options
from orchestrator.planner.request import PlanRequest

HostKey = tuple[str, int, int]  # (variant, instances, threads)


@dataclass
class Group:
    device_class: str
    memory_mb: float
    cost_per_hour: float
    devices: list[Device]
    options: list[Option] = field(default_factory=list)  # usable here: SLO met, fits memory, floors passed

    @property
    def name(self) -> str:
        return f"{self.device_class}/{self.memory_mb:g}MB"

    @property
    def roomy(self) -> bool:
        """Every usable option fits on one device together with all the others, and no variant has
        two usable instance configs: any set of options can share a device (memory never binds)."""
        return (len({o.variant for o in self.options}) == len(self.options)
                and sum(o.memory_mb for o in self.options) <= self.memory_mb)

    @property
    def shareable(self) -> bool:
        """Some device of the group can host two options of different variants (else a device
        serves one option at most and the group needs no shared slots)."""
        smallest: dict[str, float] = {}
        for o in self.options:
            smallest[o.variant] = min(o.memory_mb, smallest.get(o.variant, o.memory_mb))
        two = sorted(smallest.values())[:2]
        return len(two) == 2 and sum(two) <= self.memory_mb


@dataclass
class Kind:
    """Devices of one group that host the same usable options now (`hosted`, empty without a plan
    in force): loading an option costs the same on each of them."""

    group: Group
    hosted: frozenset[tuple[str, int, int]]
    devices: list[Device]


@dataclass
class Problem:
    request: PlanRequest
    families: list[str]  # families with positive demand
    groups: list[Group]
    current: dict[str, set[HostKey]]  # device id -> what it hosts now (plannable devices only)
    no_option_reason: dict[str, str]  # family -> why no (device, variant) can serve it

    @property
    def demand(self) -> dict[str, float]:
        return {f: float(self.request.demand_rps[f]) for f in self.families}

    @property
    def utilisation_cap(self) -> float:
        return self.request.options.utilisation_cap

    def options_of(self, family: str) -> list[tuple[Group, Option]]:
        return [(g, o) for g in self.groups for o in g.options if o.family == family]

    def kinds(self) -> list[Kind]:
        """Each group's devices split by the usable options they host now (one kind per group
        without a plan in force), in a fixed order."""
        out: list[Kind] = []
        for g in self.groups:
            usable = {o.key for o in g.options}
            by_hosted: dict[frozenset, list[Device]] = {}
            for d in g.devices:
                by_hosted.setdefault(frozenset(self.current.get(d.id, set()) & usable), []).append(d)
            out += [Kind(g, h, devs) for h, devs in sorted(by_hosted.items(), key=lambda kv: (sorted(kv[0]), kv[1][0].id))]
        return out


def build_problem(req: PlanRequest) -> Problem:
    families = req.active_families()
    opts = req.options
    by_class = usable_options(req.catalog, req.profiles, {f: req.slo_ms[f] for f in families},
                              opts.latency_fraction)
    groups: dict[tuple, Group] = {}
    for d in req.plannable_devices():
        key = (d.device_class, d.memory_mb, d.cost_per_hour)
        if key not in groups:
            groups[key] = Group(d.device_class, d.memory_mb, d.cost_per_hour, [])
        groups[key].devices.append(d)
    for g in groups.values():
        g.devices.sort(key=lambda d: d.id)
        for o in by_class.get(g.device_class, []):
            floor = req.accuracy_floor.get(o.family)
            if floor is not None and floor.kind == "variant" and o.accuracy < floor.value:
                continue
            if o.memory_mb <= g.memory_mb:
                g.options.append(o)
    current: dict[str, set[HostKey]] = {}
    plannable = {d.id for d in req.plannable_devices()}
    if req.current is not None:
        for p in req.current.placements:
            if p.device_id in plannable:
                current.setdefault(p.device_id, set()).add((p.variant, p.instances, p.threads))
    prob = Problem(req, families, sorted(groups.values(), key=lambda g: g.name), current, {})
    for f in families:
        if not prob.options_of(f):
            prob.no_option_reason[f] = _why_no_option(req, f, by_class)
    return prob


def _why_no_option(req: PlanRequest, family: str, by_class: dict[str, list[Option]]) -> str:
    variants = [v.name for v in req.catalog.families()[family]]
    if not req.plannable_devices():
        return "no device is available (all are drained or reserved)"
    classes = {d.device_class for d in req.plannable_devices()}
    profiled = [r for r in req.profiles.records if r.variant in variants and r.device_class in classes]
    if not profiled:
        return (f"no profile records for any variant of {family!r} on the available device classes "
                f"{sorted(classes)}; run `orchestrator profile`")
    budget = req.slo_ms[family] * req.options.latency_fraction
    usable = [o for c in classes for o in by_class.get(c, []) if o.family == family]
    if not usable:
        best = fastest_p99(req.profiles, variants)
        return (f"no variant meets the SLO: the fastest profiled p99 is {best[0]:.1f} ms ({best[1]} on "
                f"{best[2]}), above {req.options.latency_fraction:g} x SLO {req.slo_ms[family]:g} ms = "
                f"{budget:.1f} ms")
    floor = req.accuracy_floor.get(family)
    if floor is not None and floor.kind == "variant" and all(o.accuracy < floor.value for o in usable):
        return (f"accuracy floor {floor.value:g} % excludes every variant that meets the SLO "
                f"(best usable: {max(o.accuracy for o in usable):g} %)")
    return "no variant that meets the SLO fits in any available device's memory"
