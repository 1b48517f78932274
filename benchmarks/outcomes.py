"""Every request's outcome (status, latency, variant, device) of a fixed set of seeded simulations,
saved and compared: the check that a refactoring changes no decision by accident.

    python benchmarks/outcomes.py save after.npz
    git worktree add /tmp/base <commit>                       # the code before the change
    PYTHONPATH=/tmp/base python benchmarks/outcomes.py save before.npz
    python benchmarks/outcomes.py compare before.npz after.npz   # exit 1 if any request differs

The cases cover what the data plane decides: a Proteus-scale cluster under a step (accuracy-first
routing over spill routes, processor sharing, noise, re-plans that load and unload), and two CPU
devices under a bursty load with the MILP, the baselines, weighted routing and AIMD batching.
Solves end at their gap, not at a time limit, so that a plan is a function of its request alone.
tests/test_native.py runs the same cases compiled and interpreted and requires equal outcomes.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import numpy as np

FIELDS = ("status", "latency_ms", "variant", "device")
TEXT_FIELDS = ("status", "variant", "device")


def simulate() -> dict[str, object]:
    """Outcomes per case name."""
    from orchestrator import scenarios
    from orchestrator.planner import PlannerOptions
    from orchestrator.simulator import SimConfig, Simulator
    from orchestrator.workloads import FamilyLoad, MarkovModulatedRate, StepRate, generate

    out: dict[str, object] = {}
    config = SimConfig(planner=PlannerOptions(time_limit_s=30.0))
    sc = scenarios.proteus_scale(devices=8)
    loads = [FamilyLoad(f, StepRate((0.6 * d, 1.3 * d), 4.0), sc.slo_ms[f]) for f, d in sc.demand_rps.items()]
    trace = generate(loads, 8.0, seed=2)
    out["proteus"] = Simulator(sc.catalog, sc.cluster, sc.profiles, sc.slo_ms, config).run(trace, "milp").outcomes
    small = scenarios.small_resnet(devices=2, slo_ms=300.0)
    trace = generate([FamilyLoad("resnet", MarkovModulatedRate((8.0, 40.0), (10.0, 5.0)), 300.0)], 60, seed=3)
    slo = {"resnet": 300.0}
    sim = Simulator(small.catalog, small.cluster, small.profiles, slo, config)
    for policy in ("milp", "model-switching", "clipper-ht"):
        out[policy] = sim.run(trace, policy).outcomes
    for name, shim in (("milp-weighted", replace(config.shim, routing="weighted")),
                       ("milp-aimd", replace(config.shim, policy="aimd"))):
        out[name] = Simulator(small.catalog, small.cluster, small.profiles, slo,
                              replace(config, shim=shim)).run(trace, "milp").outcomes
    return out


def arrays(outcomes: dict[str, object]) -> dict[str, np.ndarray]:
    return {f"{case}.{field}": np.asarray(getattr(o, field)).astype(str if field in TEXT_FIELDS else float)
            for case, o in outcomes.items() for field in FIELDS}


def differences(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> list[str]:
    """One line per array that differs (or is missing on one side); empty when all are equal."""
    lines = []
    for key in sorted(before.keys() | after.keys()):
        if key not in before or key not in after:
            lines.append(f"{key}: only in {'after' if key not in before else 'before'}")
            continue
        a, b = before[key], after[key]
        if a.shape != b.shape:
            lines.append(f"{key}: {a.size} requests before, {b.size} after")
        elif not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
            differ = a != b if a.dtype.kind != "f" else ~((a == b) | (np.isnan(a) & np.isnan(b)))
            first = int(np.argmax(differ))
            lines.append(f"{key}: {int(differ.sum())} of {a.size} requests differ (first: request {first}, "
                         f"{a[first]} -> {b[first]})")
    return lines


def load(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("save", help="simulate the cases and save every request's outcome")
    s.add_argument("out", help=".npz file to write")
    c = sub.add_parser("compare", help="compare two saved files request by request")
    c.add_argument("before")
    c.add_argument("after")
    args = p.parse_args(argv)
    if args.command == "save":
        from orchestrator import native
        data = arrays(simulate())
        np.savez(args.out, **data)
        requests = sum(v.size for k, v in data.items() if k.endswith(".status"))
        print(f"{'compiled' if native.compiled() else 'interpreted'}: {requests} requests in "
              f"{len(data) // len(FIELDS)} cases -> {args.out}")
        return 0
    lines = differences(load(args.before), load(args.after))
    print("\n".join(lines) if lines else "every request's outcome is the same")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
