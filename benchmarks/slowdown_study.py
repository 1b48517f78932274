"""Devices slower than profiled: every policy, simulated, with and without observed-speed planning.

    .venv/bin/python benchmarks/slowdown_study.py [--seeds 0,1,2] [--slowdowns 1,1.15,1.3] [--traces 7]
                                                  [--demand-floor 40]

The cluster is the repository's two one-core CPU devices (450 MB each) with the `small_resnet`
scenario's profiles (scaled from this machine's measured onnxruntime latencies); the trace is the
5-minute bursty one of docs/results.md (`orchestrator trace generate --kind bursty --rate 10
--peak-factor 4 --duration 300 --deadline-ms 300 --seed 7`; `--traces 7,8,...` runs that
trace's siblings from other seeds too, averages over them, and prints each trace's figures, so
that one trace's luck does not decide a ranking). The simulated devices take
`slowdown` x their profiled time; the planner is not told. Each policy runs with the control
plane's observed speed (it learns the devices' speed from the batches that ran alone, and
re-plans at it: controlplane/speed.py) and without it (`--no-observed-speed`); with
`--demand-floor RPS`, also with observed speed and the workload's peak declared (the control
plane's `--demand-floor resnet=RPS`: it plans for at least that rate; the trace's bursts are
40 req/s). Prints per slowdown and policy the effective accuracy and miss ratio, averaged over
the seeds (the service-time noise), side by side.
"""

from __future__ import annotations

import argparse
import statistics

POLICIES = ("milp", "model-switching", "clipper-ha", "clipper-ht", "infaas")


def main() -> int:
    from orchestrator import scenarios
    from orchestrator.controlplane.service import ControlPlaneConfig
    from orchestrator.evaluation import scaled_profiles, summarise
    from orchestrator.simulator import SimConfig, Simulator
    from orchestrator.workloads import FamilyLoad, MarkovModulatedRate, generate

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2", help="service-time noise seeds (default 0,1,2)")
    ap.add_argument("--slowdowns", default="1,1.15,1.3", help="device time / profiled time (default 1,1.15,1.3)")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--traces", default="7", help="seeds of the bursty trace (default 7: docs/results.md's)")
    ap.add_argument("--demand-floor", type=float, default=None, metavar="RPS",
                    help="also run every policy planning for at least RPS (the workload's declared peak)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    slowdowns = [float(s) for s in args.slowdowns.split(",")]
    policies = args.policies.split(",")
    trace_seeds = [int(s) for s in args.traces.split(",")]

    sc = scenarios.small_resnet(devices=2, memory_mb=450.0)
    # orchestrator trace generate --kind bursty --rate 10 --peak-factor 4 --duration 300 --seed 7
    traces = {t: generate([FamilyLoad("resnet", MarkovModulatedRate((10.0, 40.0), (20.0, 5.0), initial_state=0),
                                      300.0)], 300.0, seed=t) for t in trace_seeds}
    print(f"traces (seeds {trace_seeds}): {', '.join(str(len(t)) for t in traces.values())} requests over 300 s; "
          f"cluster: 2 one-core CPU devices, 450 MB each; service-time seeds {seeds}\n")
    floor = args.demand_floor
    settings = [("observed speed", True, None)] + ([(f"+ demand floor {floor:g} rps", True, floor)] if floor else []) \
        + [("without observed speed", False, None)]
    print("| slowdown | policy | " + " | ".join(f"{name}: eff. acc. % / miss ratio" for name, _, _ in settings) + " |")
    print("|---:|---|" + "---:|" * len(settings))
    per_trace: dict[tuple[float, str, str], list[float]] = {}  # (slowdown, policy, setting) -> per trace
    means: dict[tuple[float, str, str], float] = {}
    for slow in slowdowns:
        service = None if slow == 1.0 else scaled_profiles(sc.profiles, {"cpu-1t": slow})
        for policy in policies:
            cells = []
            for name, observed, rps in settings:
                accs, misses = [], []
                for t, trace in traces.items():
                    trace_accs = []
                    for seed in seeds:
                        control = ControlPlaneConfig(observed_speed=observed,
                                                     demand_floor={"resnet": rps} if rps else {})
                        sim = Simulator(sc.catalog, sc.cluster, sc.profiles, {"resnet": 300.0},
                                        SimConfig(control=control, seed=seed), service_profiles=service)
                        s = summarise(sim.run(trace, policy))
                        trace_accs.append(s.effective_accuracy)
                        misses.append(s.miss_ratio)
                    accs += trace_accs
                    per_trace.setdefault((slow, policy, name), []).append(statistics.mean(trace_accs))
                means[(slow, policy, name)] = statistics.mean(accs)
                cells.append(f"{statistics.mean(accs):.2f} / {statistics.mean(misses):.3f}")
            print(f"| {slow:g} | {policy} | " + " | ".join(cells) + " |", flush=True)
    if len(traces) > 1:
        columns = [(p, "observed speed") for p in policies] + ([("milp", settings[1][0])] if floor and "milp" in policies else [])
        print("\nper trace (eff. acc. %, mean over the service-time seeds; observed speed"
              + (f"; the last column: the MILP with the demand floor of {floor:g} rps" if len(columns) > len(policies) else "")
              + "):\n")
        print("| slowdown | trace seed | " + " | ".join(p for p, _ in columns[:len(policies)])
              + (" | milp + floor" if len(columns) > len(policies) else "") + " |")
        print("|---:|---:|" + "---:|" * len(columns))
        for slow in slowdowns:
            for i, t in enumerate(traces):
                row = [per_trace[(slow, p, name)][i] for p, name in columns]
                best = max(row)
                print(f"| {slow:g} | {t} | " + " | ".join(f"**{a:.2f}**" if a == best else f"{a:.2f}" for a in row) + " |")
    if "milp" in policies and len(policies) > 1:
        print("\nthe MILP against the best baseline, each baseline in its better setting (mean over traces and seeds):")
        for slow in slowdowns:
            for name, _, _ in settings[:-1]:
                best_policy, best_name = max(((p, n) for p in policies if p != "milp" for n, _, _ in settings),
                                             key=lambda pn: means[(slow, *pn)])
                diff = means[(slow, "milp", name)] - means[(slow, best_policy, best_name)]
                leads = sum(per_trace[(slow, "milp", name)][i] >= max(per_trace[(slow, p, n)][i] for p in policies
                                                                      if p != "milp" for n, _, _ in settings)
                            for i in range(len(traces)))
                print(f"  {slow:g} x, milp ({name}): {means[(slow, 'milp', name)]:.2f} vs {best_policy} ({best_name}) "
                      f"{means[(slow, best_policy, best_name)]:.2f}: {diff:+.2f} points; "
                      f"at least every baseline's best on {leads} of {len(traces)} traces")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
