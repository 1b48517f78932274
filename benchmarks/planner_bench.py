"""Planner speed and quality per instance, with the goal beside each figure.

    .venv/bin/python benchmarks/planner_bench.py                       # this tree
    .venv/bin/python benchmarks/planner_bench.py --baseline 8c85bf7    # and a commit's planner, side by side
    .venv/bin/python benchmarks/planner_bench.py --quick               # fewer seeds

Rows (docs/planner.md, "Measured"): cold Proteus scale (40 devices, 46 variants, 9 families;
goal p95 <= 50 ms, optimal); re-plans against the plan in force with the switching term (noise,
x0.95, x1.05; and a x3 spike; goal p95 <= 100 ms, proven optimal: relative gap <= 1e-6); 1,000
devices cold (<= 500 ms, optimal) and re-planned (<= 1 s, optimal); Proteus's own table
(scenarios.proteus_table) at 1x, 2x and 4x the trace's peak: served, unserved and the gap of
each stage (served first, exactly; then the rest on its own scale).

Each planner runs in a worker process of its own (the baseline's from `git archive` of the commit),
both fed the same instances, alternating which goes first; the scenarios are this tree's. Times
are the worker's CPU time of `make_plan` (SCIP and GLOP are single-threaded and in-process: what a
quiet machine's wall clock shows) and its wall clock; other processes on a shared machine inflate
the wall clock only. Not a test: the goals are printed, not asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


# --- the worker: one planner, fed instance specs on stdin, one JSON line per plan --------------

def worker(tree: str) -> None:
    sys.path.insert(0, tree)
    import dataclasses
    import importlib.util
    import random
    import time

    from orchestrator.planner import PlannerOptions, make_plan

    spec = importlib.util.spec_from_file_location("bench_scenarios", ROOT / "orchestrator" / "scenarios.py")
    scenarios = importlib.util.module_from_spec(spec)
    sys.modules["bench_scenarios"] = scenarios  # dataclasses look their module up
    spec.loader.exec_module(scenarios)
    known = {f.name for f in dataclasses.fields(PlannerOptions)}
    bases = {}

    def scenario(name: str, seed: int):
        if name == "proteus":
            return scenarios.proteus_scale(seed=seed)
        if name == "thousand":
            return scenarios.thousand_devices(seed=seed)
        if name == "small":
            return scenarios.small_resnet(devices=2, seed=seed, demand_rps=5 + seed)
        return scenarios.proteus_table(float(name.split(":")[1]))

    for line in sys.stdin:
        job = json.loads(line)
        s = scenario(job["scenario"], job["seed"])
        options = PlannerOptions(**{k: v for k, v in job.get("options", {}).items() if k in known})
        demand = dict(s.demand_rps)
        current = None
        if job.get("replan"):
            key = (job["scenario"], job["seed"])
            if key not in bases:
                bases[key] = make_plan(s.request())  # the plan in force, as served (standbys included)
            current = bases[key]
            rng = random.Random(job["seed"] * 1000 + job.get("draw", 0))
            factor = job["replan"]
            demand = {f: d * (rng.uniform(0.95, 1.05) if factor == "noise" else factor) for f, d in demand.items()}
        request = s.request(demand_rps=demand, current=current, options=options)
        c0, t0 = time.process_time(), time.perf_counter()
        plan = make_plan(request, policy=job.get("policy", "milp"))
        cpu, wall = 1000 * (time.process_time() - c0), 1000 * (time.perf_counter() - t0)
        old = {(p.device_id, p.variant, p.instances, p.threads) for p in current.placements} if current else set()
        new = {(p.device_id, p.variant, p.instances, p.threads) for p in plan.placements}
        stages = [n for n in plan.notes if "served " in n and " gap " in n]
        print(json.dumps({"cpu": cpu, "wall": wall, "status": plan.solver.status, "gap": plan.solver.gap,
                          "acc": plan.effective_accuracy, "demand": sum(f.demand_rps for f in plan.families.values()),
                          "unserved": sum(f.unserved_rps for f in plan.families.values()),
                          "loads": len(new - old) if current else 0, "stages": stages[:1]}), flush=True)


# --- the parent: instances, alternation, the table ----------------------------------------------

class Planner:
    def __init__(self, name: str, tree: Path):
        self.name = name
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", str(tree)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT)

    def run(self, job: dict) -> dict:
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            sys.exit(f"the {self.name} planner's worker died on {job}")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def rows(quick: bool) -> list[tuple[str, list[dict], str, float | None, bool]]:
    """(label, jobs, goal text, p95 goal in ms or None, optimality required)."""
    n_p, n_t, n_r = (5, 2, 2) if quick else (20, 5, 4)
    return [
        ("small: 2 CPU devices, 5 ResNets, cold", [{"scenario": "small", "seed": s} for s in range(n_p)], "", None, True),
        ("Proteus-40 cold", [{"scenario": "proteus", "seed": s} for s in range(n_p)],
         "p95 <= 50 ms, optimal", 50.0, True),
        ("Proteus-40 re-plan: noise +-5 %, x0.95, x1.05",
         [{"scenario": "proteus", "seed": s, "replan": r, "draw": d} for s in range(n_r)
          for r, d in (("noise", 0), ("noise", 1), (0.95, 0), (1.05, 0))],
         "p95 <= 100 ms, gap <= 1e-6", 100.0, True),
        ("Proteus-40 re-plan: x3 spike", [{"scenario": "proteus", "seed": s, "replan": 3.0} for s in range(n_r)],
         "p95 <= 100 ms, gap <= 1e-6", 100.0, True),
        ("1,000 devices cold", [{"scenario": "thousand", "seed": s} for s in range(n_t)],
         "p95 <= 500 ms, optimal", 500.0, True),
        ("1,000 devices re-plan: noise, x1.05, x3",
         [{"scenario": "thousand", "seed": s, "replan": r} for s in range(min(n_t, 3)) for r in ("noise", 1.05, 3.0)],
         "p95 <= 1000 ms, optimal", 1000.0, True),
        ("Proteus table x1 (trace peak), cold", [{"scenario": "table:1", "seed": 0}], "served first, stage gaps", None, False),
        ("Proteus table x2 (overload), cold", [{"scenario": "table:2", "seed": 0}], "served first, stage gaps", None, False),
        ("Proteus table x4 (overload), cold", [{"scenario": "table:4", "seed": 0}], "served first, stage gaps", None, False),
    ] + [(f"Proteus-40 baseline {p}", [{"scenario": "proteus", "seed": s, "policy": p} for s in range(n_p)], "", None, False)
         for p in ("model-switching", "clipper-ha", "clipper-ht", "infaas")]


def summary(results: list[dict]) -> dict:
    statuses: dict[str, int] = {}
    for r in results:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    return {"n": len(results), "cpu50": statistics.median(r["cpu"] for r in results),
            "cpu95": pct([r["cpu"] for r in results], 0.95), "wall50": statistics.median(r["wall"] for r in results),
            "wall95": pct([r["wall"] for r in results], 0.95), "status": statuses,
            "gap": max(r["gap"] for r in results), "acc": statistics.mean(r["acc"] for r in results),
            "unserved": max(r["unserved"] for r in results), "demand": max(r["demand"] for r in results),
            "loads": max(r["loads"] for r in results), "stages": results[-1]["stages"]}


def verdict(s: dict, p95_goal: float | None, optimal: bool) -> str:
    if p95_goal is None and not optimal:
        return ""
    ok = (p95_goal is None or s["cpu95"] <= p95_goal) and (not optimal or set(s["status"]) == {"OPTIMAL"})
    return "meets" if ok else "MISSES"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer seeds")
    ap.add_argument("--baseline", metavar="COMMIT", help="also run this commit's planner (git archive), side by side")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker)
        return
    planners = [Planner("new", ROOT)]
    tmp = None
    if args.baseline:
        tmp = tempfile.TemporaryDirectory()
        archive = subprocess.run(["git", "archive", args.baseline, "orchestrator"], cwd=ROOT, capture_output=True)
        if archive.returncode != 0:
            sys.exit(f"git archive {args.baseline}: {archive.stderr.decode().strip()}")
        tar = Path(tmp.name) / "old.tar"
        tar.write_bytes(archive.stdout)
        with tarfile.open(tar) as t:
            t.extractall(tmp.name)
        planners.insert(0, Planner(f"old ({args.baseline})", Path(tmp.name)))
    print(f"{'instance':<46}{'planner':<16}{'n':>3} {'cpu p50':>9} {'cpu p95':>9} {'wall p95':>9}  "
          f"{'status':<22}{'max gap':>8} {'eff.acc':>7} {'unserved':>9} {'loads':>5}  goal", flush=True)
    for label, jobs, goal, p95_goal, optimal in rows(args.quick):
        results = {p.name: [] for p in planners}
        for i, job in enumerate(jobs):
            order = planners if i % 2 == 0 else planners[::-1]
            for p in order:
                results[p.name].append(p.run(job))
        sums = {name: summary(rs) for name, rs in results.items()}
        for name, s in sums.items():
            status = " ".join(f"{k} {v}" for k, v in sorted(s["status"].items()))
            mark = verdict(s, p95_goal, optimal)
            print(f"{label:<46}{name:<16}{s['n']:>3} {s['cpu50']:>7.1f}ms {s['cpu95']:>7.1f}ms {s['wall95']:>7.1f}ms  "
                  f"{status:<22}{s['gap']:>8.1e} {s['acc']:>6.2f}% {s['unserved']:>9.1f} {s['loads']:>5}  "
                  f"{goal}{' -> ' + mark if mark else ''}", flush=True)
            label = ""
        if len(sums) == 2:
            old, new = sums.values()
            print(f"{'':<46}{'old / new':<16}    {old['cpu50'] / new['cpu50']:>7.1f}x  {old['cpu95'] / new['cpu95']:>7.1f}x "
                  f"{old['wall95'] / new['wall95']:>7.1f}x", flush=True)
        if jobs[0]["scenario"].startswith("table"):
            for name, s in sums.items():
                print(f"{'':<46}{name:<16} of {s['demand']:.0f} rps; {'; '.join(s['stages'])[:150]}", flush=True)
    for p in planners:
        p.close()
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
