"""Devices slower than profiled: every policy, simulated, with and without observed-speed planning.

    .venv/bin/python benchmarks/slowdown_study.py [--seeds 0,1,2] [--slowdowns 1,1.15,1.3] [--traces 7]

The cluster is the repository's two one-core CPU devices (450 MB each) with the `small_resnet`
scenario's profiles (scaled from this machine's measured onnxruntime latencies); the trace is the
5-minute bursty one of docs/results.md (`orchestrator trace generate --kind bursty --rate 10
--peak-factor 4 --duration 300 --deadline-ms 300 --seed 7`; `--traces 7,8,...` runs that
trace's siblings from other seeds too, averages over them, and prints each trace's figures, so
that one trace's luck does not decide a ranking). The simulated devices take
`slowdown` x their profiled time; the planner is not told. Each policy runs with the control
plane's observed speed (it learns the devices' speed from the batches that ran alone, and
re-plans at it: controlplane/speed.py) and without it (`--no-observed-speed`). Prints per
slowdown and policy the effective accuracy and miss ratio, averaged over the seeds (the
service-time noise), side by side.
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
    print("| slowdown | policy | observed speed: eff. acc. % / miss ratio | without: eff. acc. % / miss ratio |")
    print("|---:|---|---:|---:|")
    per_trace: dict[tuple[float, str], list[float]] = {}  # (slowdown, policy) -> per trace, observed speed
    for slow in slowdowns:
        service = None if slow == 1.0 else scaled_profiles(sc.profiles, {"cpu-1t": slow})
        for policy in policies:
            cells = []
            for observed in (True, False):
                accs, misses = [], []
                for t, trace in traces.items():
                    trace_accs = []
                    for seed in seeds:
                        config = SimConfig(control=ControlPlaneConfig(observed_speed=observed), seed=seed)
                        sim = Simulator(sc.catalog, sc.cluster, sc.profiles, {"resnet": 300.0}, config,
                                        service_profiles=service)
                        s = summarise(sim.run(trace, policy))
                        trace_accs.append(s.effective_accuracy)
                        misses.append(s.miss_ratio)
                    accs += trace_accs
                    if observed:
                        per_trace.setdefault((slow, policy), []).append(statistics.mean(trace_accs))
                cells.append(f"{statistics.mean(accs):.2f} / {statistics.mean(misses):.3f}")
            print(f"| {slow:g} | {policy} | {cells[0]} | {cells[1]} |", flush=True)
    if len(traces) > 1:
        print("\nper trace, observed speed (eff. acc. %, mean over the service-time seeds):\n")
        print("| slowdown | trace seed | " + " | ".join(policies) + " |")
        print("|---:|---:|" + "---:|" * len(policies))
        for slow in slowdowns:
            for i, t in enumerate(traces):
                row = [per_trace[(slow, p)][i] for p in policies]
                best = max(row)
                print(f"| {slow:g} | {t} | " + " | ".join(f"**{a:.2f}**" if a == best else f"{a:.2f}" for a in row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
