"""Devices slower than profiled: every policy, simulated, with and without observed-speed planning.

    .venv/bin/python benchmarks/slowdown_study.py [--seeds 0,1,2] [--slowdowns 1,1.15,1.3]

The cluster is the repository's two one-core CPU devices (450 MB each) with the `small_resnet`
scenario's profiles (scaled from this machine's measured onnxruntime latencies); the trace is the
5-minute bursty one of docs/results.md (`orchestrator trace generate --kind bursty --rate 10
--peak-factor 4 --duration 300 --deadline-ms 300 --seed 7`). The simulated devices take
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
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    slowdowns = [float(s) for s in args.slowdowns.split(",")]
    policies = args.policies.split(",")

    sc = scenarios.small_resnet(devices=2, memory_mb=450.0)
    # orchestrator trace generate --kind bursty --rate 10 --peak-factor 4 --duration 300 --seed 7
    trace = generate([FamilyLoad("resnet", MarkovModulatedRate((10.0, 40.0), (20.0, 5.0), initial_state=0), 300.0)],
                     300.0, seed=7)
    print(f"trace: {len(trace)} requests over 300 s; cluster: 2 one-core CPU devices, 450 MB each; "
          f"seeds {seeds}\n")
    print("| slowdown | policy | observed speed: eff. acc. % / miss ratio | without: eff. acc. % / miss ratio |")
    print("|---:|---|---:|---:|")
    for slow in slowdowns:
        service = None if slow == 1.0 else scaled_profiles(sc.profiles, {"cpu-1t": slow})
        for policy in policies:
            cells = []
            for observed in (True, False):
                accs, misses = [], []
                for seed in seeds:
                    config = SimConfig(control=ControlPlaneConfig(observed_speed=observed), seed=seed)
                    sim = Simulator(sc.catalog, sc.cluster, sc.profiles, {"resnet": 300.0}, config,
                                    service_profiles=service)
                    s = summarise(sim.run(trace, policy))
                    accs.append(s.effective_accuracy)
                    misses.append(s.miss_ratio)
                cells.append(f"{statistics.mean(accs):.2f} / {statistics.mean(misses):.3f}")
            print(f"| {slow:g} | {policy} | {cells[0]} | {cells[1]} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
