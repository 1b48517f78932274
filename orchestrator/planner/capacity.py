"""The capacity rule: how much one (variant, device class, instance config) can serve within an SLO.

For each (variant, device class, instances, threads) the profiles hold records per batch size.
The usable batch is the **largest batch b whose profiled p99 latency is at most
SLO x latency_fraction** (default 0.5: half the deadline is left for queueing and batching
delay), and not above the variant's `max_batch_size`. The usable throughput is the profiled
throughput at that batch; the plan's batch cap is b. A configuration with no such batch cannot
meet the SLO on that class and is excluded.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.catalog import Catalog, Variant
from orchestrator.profiles import ProfileSet


@dataclass(frozen=True)
class Option:
    """A usable (variant, device class, instance config) with its batch cap and throughput."""

    variant: str
    family: str
    device_class: str
    instances: int
    threads: int
    batch_cap: int
    capacity_rps: float  # profiled throughput at batch_cap (the device serving only this)
    p99_ms: float  # profiled p99 at batch_cap
    accuracy: float
    memory_mb: float  # variant footprint x instances (each Triton instance holds its own session)

    @property
    def config(self) -> tuple[int, int]:
        return (self.instances, self.threads)

    @property
    def key(self) -> tuple[str, int, int]:
        """What a device hosts: the variant and its instance config (a config change is a reload)."""
        return (self.variant, self.instances, self.threads)


def usable_options(catalog: Catalog, profiles: ProfileSet, slo_ms: dict[str, float],
                   latency_fraction: float) -> dict[str, list[Option]]:
    """Usable options per device class, for every variant whose family has an SLO."""
    by_pair: dict[tuple[str, str, int, int], list] = {}
    for r in profiles.records:
        by_pair.setdefault((r.variant, r.device_class, r.instances, r.threads), []).append(r)
    out: dict[str, list[Option]] = {}
    for (vname, cls, inst, thr), records in sorted(by_pair.items()):
        v = catalog.variants.get(vname)
        if v is None or v.family not in slo_ms:
            continue
        opt = best_batch(v, cls, inst, thr, records, slo_ms[v.family] * latency_fraction)
        if opt is not None:
            out.setdefault(cls, []).append(opt)
    return out


def best_batch(v: Variant, device_class: str, instances: int, threads: int, records: list,
               budget_ms: float) -> Option | None:
    """Apply the rule to one configuration's records (any order); None when no batch qualifies."""
    ok = [r for r in records if r.p99_ms <= budget_ms and r.batch_size <= v.max_batch_size
          and r.throughput_rps > 0]
    if not ok:
        return None
    r = max(ok, key=lambda r: r.batch_size)
    return Option(variant=v.name, family=v.family, device_class=device_class, instances=instances,
                  threads=threads, batch_cap=r.batch_size, capacity_rps=r.throughput_rps, p99_ms=r.p99_ms,
                  accuracy=v.accuracy, memory_mb=v.memory_mb * instances)


def fastest_p99(profiles: ProfileSet, variants: list[str]) -> tuple[float, str, str] | None:
    """The lowest profiled p99 (ms) over the given variants and all classes, with where it was seen."""
    best = None
    names = set(variants)
    for r in profiles.records:
        if r.variant in names and (best is None or r.p99_ms < best[0]):
            best = (r.p99_ms, r.variant, r.device_class)
    return best
