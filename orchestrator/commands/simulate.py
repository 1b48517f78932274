"""`orchestrator simulate`: replay a trace against a modelled cluster, running the same planner,
controller rule, routing and batching code as the live system (orchestrator/simulator.py)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from orchestrator.commands.bench import DEFAULT_POLICIES, add_control_flags, parse_policies, trace_slo
from orchestrator.commands.flags import (check_output_folder, check_flag_families, factor, non_negative_float,
                                         non_negative_int, parse_demand_floor, positive_float, positive_int)
from orchestrator.errors import UserError

SCENARIOS = ("proteus", "small-resnet")


def register(sub) -> None:
    p = sub.add_parser("simulate", help="simulate policies on a trace at any cluster scale (table + plots)",
                       description=__doc__)
    where = p.add_argument_group("the cluster: a scenario, or files")
    where.add_argument("--scenario", choices=SCENARIOS,
                       help="a built-in cluster (orchestrator/scenarios.py): proteus = 4 device classes, "
                            "46 variants in 9 families (synthetic profiles from published GFLOPS)")
    where.add_argument("--devices", type=positive_int, default=40, help="with --scenario: number of devices (default 40)")
    where.add_argument("--cluster", help="cluster file")
    where.add_argument("--profiles", help="profiles of the cluster's device classes")
    where.add_argument("--repository", help="model repository holding variants.json (default: the cluster file's)")
    p.add_argument("--trace", help="trace CSV; with --scenario and no trace, a bursty trace is generated "
                                   "around the scenario's demand")
    p.add_argument("--duration", type=positive_float, default=120.0, help="generated trace: seconds (default 120)")
    p.add_argument("--peak-factor", type=factor, default=3.0,
                   help="generated trace: burst rate / calm rate (default 3)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="trace and service-time noise seed (default 0)")
    p.add_argument("--policies", default=DEFAULT_POLICIES, help=f"comma-separated (default {DEFAULT_POLICIES})")
    p.add_argument("--slo", action="append", metavar="FAMILY=MS", help="SLO per family (default: the trace's)")
    p.add_argument("--load-fixed", type=non_negative_float, default=1.5, help="model load delay: fixed seconds (default 1.5)")
    p.add_argument("--load-per-gb", type=non_negative_float, default=10.0, help="model load delay: seconds per GB (default 10)")
    p.add_argument("--no-noise", action="store_true", help="service time = profiled p50 exactly")
    p.add_argument("--no-replan", action="store_true", help="keep the first plan for the whole trace")
    p.add_argument("--slowdown", type=positive_float, default=1.0, metavar="F",
                   help="what-if: the devices take F times their profiled time (the planner is not told; "
                        "default 1)")
    p.add_argument("--out", default="runs/simulate", help="output folder (default runs/simulate)")
    add_control_flags(p)
    p.set_defaults(run=run)


def bursty_trace(demand: dict[str, float], slo_ms: dict[str, float], duration_s: float, peak_factor: float,
                 seed: int):
    """Per family a 2-state MMPP whose long-run mean is the scenario's demand: calm at r, bursts at
    peak_factor x r (mean burst 5 s every ~20 s, as `orchestrator trace generate --kind bursty`)."""
    from orchestrator.workloads import FamilyLoad, MarkovModulatedRate, generate

    calm_s, burst_s = 20.0, 5.0
    loads = []
    for f, d in sorted(demand.items()):
        share_burst = burst_s / (calm_s + burst_s)
        r = d / (1 - share_burst + share_burst * peak_factor)
        loads.append(FamilyLoad(f, MarkovModulatedRate((r, r * peak_factor), (calm_s, burst_s), initial_state=0),
                                slo_ms[f]))
    return generate(loads, duration_s, seed=seed)


def run(args: argparse.Namespace) -> int:
    from orchestrator import scenarios
    from orchestrator.bench import write_results
    from orchestrator.catalog import Catalog
    from orchestrator.cluster import Cluster
    from orchestrator.controlplane.service import ControlPlaneConfig
    from orchestrator.evaluation import markdown_table, summarise
    from orchestrator.profiles import ProfileSet
    from orchestrator.shim.client import ShimConfig
    from orchestrator.simulator import SimConfig, Simulator
    from orchestrator.trace import read_trace

    policies = parse_policies(args.policies)
    check_output_folder(args.out, "--out")
    default_slo: dict[str, float] = {}
    if args.scenario:
        if args.cluster or args.profiles:
            raise UserError("give either --scenario or --cluster/--profiles, not both")
        sc = (scenarios.proteus_scale(devices=args.devices, seed=args.seed) if args.scenario == "proteus"
              else scenarios.small_resnet(devices=args.devices))
        catalog, cluster, profiles = sc.catalog, sc.cluster, sc.profiles
        default_slo = sc.slo_ms
        if args.trace:
            trace = read_trace(args.trace, known_families=catalog.families())
        else:
            trace = bursty_trace(sc.demand_rps, sc.slo_ms, args.duration, args.peak_factor, args.seed)
    else:
        if not (args.cluster and args.profiles and args.trace):
            raise UserError("give --scenario, or all of --cluster, --profiles and --trace")
        cluster = Cluster.load(args.cluster)
        repo = Path(args.repository) if args.repository else cluster.model_repository
        if repo is None:
            raise UserError(f"{args.cluster}: no model_repository; give --repository")
        catalog = Catalog.load(repo)
        profiles = ProfileSet.load(args.profiles)
        trace = read_trace(args.trace, known_families=catalog.families())
    if not len(trace):
        raise UserError("the trace holds no requests")
    slo = trace_slo(args.slo, trace) if args.slo else {**default_slo, **trace_slo(None, trace)}
    check_flag_families(slo, catalog.families(), f"the {args.scenario} scenario" if args.scenario else repo)
    control = ControlPlaneConfig(estimator=args.estimator, dwell_s=args.dwell, hysteresis=args.hysteresis,
                                 auto=not args.no_replan, observed_speed=not args.no_observed_speed,
                                 demand_floor=parse_demand_floor(args.demand_floor))
    check_flag_families(control.demand_floor, catalog.families(),
                        f"the {args.scenario} scenario" if args.scenario else repo, "--demand-floor")
    config = SimConfig(shim=ShimConfig(policy=args.batching, hold_factor=args.hold_factor), control=control,
                       load_fixed_s=args.load_fixed, load_s_per_gb=args.load_per_gb, noise=not args.no_noise,
                       seed=args.seed)
    service = None
    if args.slowdown != 1.0:  # the devices take this many times their profiled time; the planner is not told
        from orchestrator.evaluation import scaled_profiles
        service = scaled_profiles(profiles, {c: args.slowdown for c in profiles.device_classes()})
    sim = Simulator(catalog, cluster, profiles, slo, config, service_profiles=service)
    print(f"trace: {len(trace)} requests over {trace.duration_s:.0f} s, {len(trace.families())} families; "
          f"cluster: {len(cluster.devices)} devices")
    runs = []
    for policy in policies:
        started = time.perf_counter()
        run_ = sim.run(trace, policy)
        wall = time.perf_counter() - started
        run_.notes.append(f"{len(trace) / wall:,.0f} simulated requests per second of wall time")
        runs.append(run_)
        s = summarise(run_)
        print(f"{policy}: {wall:.1f} s wall; effective accuracy {s.effective_accuracy:.2f} %, "
              f"miss ratio {s.miss_ratio:.3f}, {s.switches} switches")
    write_results(runs, args.out, title="Simulation")
    print()
    print(markdown_table([summarise(r) for r in runs]))
    print(f"results, per-request outcomes and plots in {args.out}/")
    return 0
