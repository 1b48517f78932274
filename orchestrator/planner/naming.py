"""From a solved model to named devices: which device hosts what and serves how much.

* Fluid blocks are *poured*: the block's options, in a fixed order, are laid end to end on a line
  of device time and cut into equal pieces, one per device in use: every device runs at the same
  utilisation (the balance term priced exactly that), and only devices at a cut host two options.
* Kind blocks: slots are named already; pool counts go to the kind's pool devices in id order (all
  of them host the same options now, so which ones makes no difference to loads).
* Every device also keeps what it hosts now, serving nothing, where that still fits beside what it
  serves (no load, no unload: a re-plan changes only what it must) and costs nothing: an idle device
  keeps its models only when devices carry no cost in the objective.
"""

from __future__ import annotations

from orchestrator.planner.capacity import Option
from orchestrator.planner.model import FluidBlock, KindBlock, Model
from orchestrator.planner.problem import Group, Problem

EPS = 1e-9


def name_devices(prob: Problem, model: Model) -> dict[str, list[tuple[Option, float]]]:
    """device id -> [(option, served rps)] from the model's current solution."""
    return keep_current(prob, model.w, flows_by_device(model))


def flows_by_device(model: Model) -> dict[str, dict[Option, float]]:
    """device id -> {option: rps} for every device of every block (empty: idle)."""
    out: dict[str, dict[Option, float]] = {}
    for block in model.blocks:
        if isinstance(block, FluidBlock):
            _pour(block, out)
        else:
            _kind(block, out)
    return out


def keep_current(prob: Problem, w, flows: dict[str, dict[Option, float]]) -> dict[str, list[tuple[Option, float]]]:
    """What each device hosts: the options it serves, and what it hosts now (serving nothing) where
    that still fits beside them and the device is used or costs nothing."""
    group_of: dict[str, Group] = {d.id: g for g in prob.groups for d in g.devices}
    hosted: dict[str, list[tuple[Option, float]]] = {}
    for dev, cell in flows.items():
        g = group_of[dev]
        serving = {o: rps for o, rps in cell.items() if rps > EPS}
        kept = {o for o in g.options if o.key in prob.current.get(dev, set())}
        extra = [o for o in kept if o not in serving]
        if extra and (serving or w.device_cost(g) == 0):
            together = list(serving) + extra
            if (len({o.variant for o in together}) == len(together)
                    and sum(o.memory_mb for o in together) <= g.memory_mb + EPS):
                serving.update({o: 0.0 for o in extra})
        if serving:
            hosted[dev] = list(serving.items())
    return hosted


def _pour(block: FluidBlock, out: dict[str, dict[Option, float]]) -> None:
    """Lay the options' device time end to end on [0, T] and give device i the piece
    [i T/n, (i+1) T/n]; a sliver of an option under 1e-9 of a piece (rounding) joins its largest part."""
    flows = [(o, x.solution_value()) for o, x in block.x.items()]
    flows = [(o, rps) for o, rps in sorted(flows, key=lambda t: (t[0].family, -t[0].accuracy, t[0].key))
             if rps > EPS]
    n = len(block.devices) if block.used is None else int(round(block.used.solution_value()))
    devices = block.devices[:max(0, min(n, len(block.devices)))]
    for d in block.devices:
        out.setdefault(d.id, {})
    total = sum(rps / o.capacity_rps for o, rps in flows)
    if not devices or total <= 0:
        return
    piece = total / len(devices)
    start = 0.0
    for o, t in ((o, rps / o.capacity_rps) for o, rps in flows):
        end = start + t
        parts = {}
        for i in range(min(len(devices) - 1, int(start / piece)), len(devices)):
            lo = max(start, i * piece)
            hi = end if i == len(devices) - 1 else min(end, (i + 1) * piece)
            if hi > lo:
                parts[i] = hi - lo
            if hi >= end:
                break
        big = max(parts, key=parts.get)
        for i in [i for i, v in parts.items() if v < 1e-9 * piece and i != big]:
            parts[big] += parts.pop(i)
        scale = t / sum(parts.values())
        for i, v in parts.items():
            cell = out[devices[i].id]
            cell[o] = cell.get(o, 0.0) + v * scale * o.capacity_rps
        start = end


def _kind(block: KindBlock, out: dict[str, dict[Option, float]]) -> None:
    for d, slot in zip(block.slot_devices, block.slots):
        cell = out.setdefault(d.id, {})
        for o, (y, x) in slot.items():
            if y is None or y.solution_value() > 0.5:
                cell[o] = max(0.0, x.solution_value())
    free = [d.id for d in block.pool_devices]
    for d in free:
        out.setdefault(d, {})
    for o, (n, x) in block.pool.items():
        k = int(round(n.solution_value()))
        if k <= 0:
            continue
        per = max(0.0, x.solution_value()) / k
        for d in free[:k]:
            out[d][o] = per
        free = free[k:]
