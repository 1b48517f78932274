"""Planner solve times per instance size: prints p50 / p95 / max over seeds, the solver status
counts, and the predicted effective accuracy, for the MILP (exact, and with fewer shared slots),
a re-plan against a current plan, and the baselines.

    .venv/bin/python benchmarks/planner_bench.py            # all sizes
    .venv/bin/python benchmarks/planner_bench.py --quick    # fewer seeds

Targets (issue 4): Proteus scale (40 devices, 46 variants, 9 families) < 100 ms, 1,000 devices
< 2 s on the 2-core development machine. Times are wall-clock of `make_plan` (build + solve +
assignment); other processes on the machine inflate them, so the CPU time of this process (SCIP
is single-threaded and in-process) is printed beside it: on a quiet machine the two agree.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections import Counter

from orchestrator.planner import PlannerOptions, make_plan
from orchestrator.scenarios import proteus_scale, small_resnet, thousand_devices


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def run(label: str, cases, policy: str = "milp") -> None:
    times, cpu, status, acc, gaps = [], [], Counter(), [], []
    for request in cases:
        t0, c0 = time.perf_counter(), time.process_time()
        plan = make_plan(request, policy=policy)
        times.append(1000 * (time.perf_counter() - t0))
        cpu.append(1000 * (time.process_time() - c0))
        status[plan.solver.status] += 1
        acc.append(plan.effective_accuracy)
        gaps.append(plan.solver.gap)
    print(f"{label:<44} n={len(times):<3} p50 {statistics.median(times):8.1f} ms  p95 {pct(times, 0.95):8.1f} ms  "
          f"max {max(times):8.1f} ms | cpu p50 {statistics.median(cpu):7.1f} p95 {pct(cpu, 0.95):7.1f} ms | {dict(status)}  max gap {max(gaps):.1e}  eff.acc {statistics.mean(acc):.2f} %",
          flush=True)


def replans(scenario_fn, seeds, noise=(0.95, 1.05, 3.0)):
    for seed in seeds:
        s = scenario_fn(seed=seed)
        base = make_plan(s.request())
        for n in noise:
            yield s.request(demand_rps={f: d * n for f, d in s.demand_rps.items()}, current=base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer seeds")
    args = ap.parse_args()
    n_small, n_proteus, n_big = (5, 5, 2) if args.quick else (20, 20, 5)
    print("instance                                     runs  solve time (make_plan wall clock)")
    run("small: 2 cpu devices, 5 resnets", (small_resnet(devices=2, seed=s, demand_rps=5 + s).request() for s in range(n_small)))
    run("proteus: 40 dev, 46 var, 9 fam (exact)", (proteus_scale(seed=s).request() for s in range(n_proteus)))
    one = PlannerOptions(shared_devices=1)
    run("proteus, shared_devices=1", (proteus_scale(seed=s).request(options=one) for s in range(n_proteus)))
    run("1000 devices (exact)", (thousand_devices(seed=s).request() for s in range(n_big)))
    run("1000 devices, shared_devices=1", (thousand_devices(seed=s).request(options=one) for s in range(n_big)))
    run("proteus re-plan vs current, x0.95/1.05/3", replans(proteus_scale, range(2 if args.quick else 4)))
    run("proteus re-plan, shared_devices=1",
        (dataclasses.replace(r, options=one) for r in replans(proteus_scale, range(2 if args.quick else 4))))
    for policy in ("model-switching", "clipper-ha", "clipper-ht", "infaas"):
        run(f"proteus, baseline {policy}", (proteus_scale(seed=s).request() for s in range(n_proteus)), policy)


if __name__ == "__main__":
    main()
