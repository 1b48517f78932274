"""How fast the simulator runs: simulated requests per second of wall time (goal: >= 250,000 at
proteus-40 with the planner counted).

    .venv/bin/python benchmarks/simulator_bench.py [--duration 20] [--devices 40] [--repeats 2]

Two cases, each with the planner, controller rule, routing and Proteus batching code running:
  proteus-40   Proteus-scale cluster (40 devices, 4 classes, 46 variants in 9 families), constant
               Poisson load at the scenario's demand (~39k req/s), noise on;
  small-2      two one-core CPU devices (ResNets), bursty load; at ~15 req/s the per-second
               controller work weighs more per request than at proteus-40.
Each case runs twice, side by side in this one invocation, each in a fresh process: from the
sources (ORCHESTRATOR_INTERPRETED=1) and from the mypyc build (`make compile`,
orchestrator/native.py; skipped, and said so, without a current build). Both must give the same
effective accuracy and miss ratio (they run the same code; tests/test_native.py checks it request
by request). Per case and form it prints two rates: over the whole wall time (planning included:
the initial MILP solve and every re-plan the controller asks for; each solve takes the planner's
wall time, up to its 2-s limit, whichever form runs the simulator) and over the wall time outside
the planner (the simulator's own work: events, routing, batching, controller ticks). A re-plan
request equal to an earlier one in the same run reuses that plan when it was proven optimal
(orchestrator/simulation/driver.py `Simulation.solve`); nothing carries over between runs. Best of
`--repeats` runs (each a full run from scratch). Not a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

TARGET_RPS = 250_000  # with the planner counted
FORMS = ("interpreted", "compiled")


def measure(name: str, sim, trace, repeats: int) -> dict:
    from orchestrator.evaluation import summarise

    best = None  # (wall, stats, run) of the fastest run
    for _ in range(repeats):
        started = time.perf_counter()
        run = sim.run(trace, "milp")
        wall = time.perf_counter() - started
        if best is None or wall < best[0]:
            best = (wall, sim.last_stats, run)
    wall, stats, run = best
    s = summarise(run)
    return {"case": name, "requests": len(trace), "wall_s": wall, "planner_s": stats.solve_s,
            "solves": stats.solves, "reused": stats.reused, "time_limited": stats.time_limited,
            "events": stats.events, "batches": stats.batches, "time_limit_s": sim.config.planner.time_limit_s,
            "effective_accuracy": round(s.effective_accuracy, 2), "miss_ratio": round(s.miss_ratio, 3)}


def run_cases(duration: float, devices: int, repeats: int) -> None:
    """In the child process: both cases, one JSON line each."""
    from orchestrator import native, scenarios
    from orchestrator.simulator import SimConfig, Simulator
    from orchestrator.workloads import ConstantRate, FamilyLoad, MarkovModulatedRate, generate

    form = "compiled" if native.compiled() else "interpreted"
    sc = scenarios.proteus_scale(devices=devices)
    loads = [FamilyLoad(f, ConstantRate(d), sc.slo_ms[f]) for f, d in sc.demand_rps.items()]
    trace = generate(loads, duration, seed=1)
    sim = Simulator(sc.catalog, sc.cluster, sc.profiles, sc.slo_ms, SimConfig())
    print(json.dumps(dict(measure(f"proteus-{devices}", sim, trace, repeats), form=form)), flush=True)

    small = scenarios.small_resnet(devices=2, slo_ms=300.0)
    trace = generate([FamilyLoad("resnet", MarkovModulatedRate((10.0, 40.0), (20.0, 5.0)), 300.0)],
                     duration * 200, seed=1)
    sim = Simulator(small.catalog, small.cluster, small.profiles, {"resnet": 300.0}, SimConfig())
    print(json.dumps(dict(measure("small-2", sim, trace, repeats), form=form)), flush=True)


def run_form(form: str, args) -> list[dict]:
    env = dict(os.environ)
    env.pop("ORCHESTRATOR_INTERPRETED", None)
    if form == "interpreted":
        env["ORCHESTRATOR_INTERPRETED"] = "1"
    cmd = [sys.executable, __file__, "--child", "--duration", str(args.duration), "--devices", str(args.devices),
           "--repeats", str(args.repeats)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the {form} run failed:\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if any(r["form"] != form for r in rows):
        sys.exit(f"asked for the {form} form, but the child ran {rows[0]['form']}")
    return rows


def rate(r: dict, planner: bool) -> float:
    return r["requests"] / max(r["wall_s"] - (0.0 if planner else r["planner_s"]), 1e-9)


def verdict(r: dict) -> str:
    """The goal is for proteus-40 (the small case's per-second controller work weighs more)."""
    if not r["case"].startswith("proteus"):
        return ""
    return f" ({'meets' if rate(r, True) >= TARGET_RPS else 'below'} the {TARGET_RPS:,d} goal)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=20.0, help="simulated seconds (default 20)")
    ap.add_argument("--devices", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2, help="runs per case and form; the fastest counts (default 2)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_cases(args.duration, args.devices, args.repeats)
        return

    from orchestrator import native

    forms = list(FORMS)
    if not native.built_files() or native.stale_sources():
        print("no current mypyc build (`make compile`): the sources only")
        forms = ["interpreted"]
    results = {form: run_form(form, args) for form in forms}
    for i, base in enumerate(results["interpreted"]):
        print(f"{base['case']}: {base['requests']:,d} requests, {base['events']:,d} events, {base['batches']:,d} batches; "
              f"planner: {base['solves']} plans ({base['solves'] - base['reused']} solved, {base['time_limited']} "
              f"stopped at the {base['time_limit_s']:g}-s limit, {base['reused']} reused)")
        for form in forms:
            r = results[form][i]
            print(f"  {form:11s} wall {r['wall_s']:6.2f} s, planner {r['planner_s']:5.2f} s | simulated req/s: "
                  f"with the planner {rate(r, True):>9,.0f}{verdict(r)}, "
                  f"without {rate(r, False):>9,.0f} | "
                  f"effective accuracy {r['effective_accuracy']:.2f} %, miss ratio {r['miss_ratio']:.3f}")
        if "compiled" in results:
            c = results["compiled"][i]
            same = (c["effective_accuracy"], c["miss_ratio"]) == (base["effective_accuracy"], base["miss_ratio"])
            print(f"  compiled / interpreted, without the planner: {rate(c, False) / rate(base, False):.2f}x; "
                  f"with it: {rate(c, True) / rate(base, True):.2f}x; results "
                  f"{'the same' if same else 'DIFFER (a bug: they run the same code)'}")


if __name__ == "__main__":
    main()
