"""`orchestrator bench`: run policies on one trace against the live Triton cluster and compare them."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from orchestrator.catalog import Catalog
from orchestrator.cluster import Cluster
from orchestrator.dataplane.batching import HOLD_FACTOR
from orchestrator.dataplane.config import Batching
from orchestrator.commands.flags import (check_output_folder, check_flag_families, factor, non_negative_float,
                                         parse_demand_floor, parse_slo)
from orchestrator.controlplane.demand import ESTIMATORS
from orchestrator.errors import UserError
from orchestrator.profiles import ProfileSet
from orchestrator.trace import read_trace

DEFAULT_POLICIES = "milp,model-switching,clipper-ha,clipper-ht,infaas"


def parse_policies(text: str) -> list[str]:
    from orchestrator.planner import POLICIES

    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise UserError("--policies is empty")
    for p in names:
        if p not in POLICIES:
            raise UserError(f"--policies: unknown policy {p!r}; choose from {', '.join(POLICIES)}")
    return names


def trace_slo(items: list[str] | None, trace) -> dict[str, float]:
    """--slo family=ms (repeatable) over the default per family: the median deadline of its requests."""
    slo = {f: float(np.median(trace.deadline_ms[trace.family == f])) for f in trace.families()}
    return slo | parse_slo(items)


def add_control_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--estimator", choices=ESTIMATORS, default="peak",
                   help="demand estimator of the controller (default peak)")
    p.add_argument("--dwell", type=non_negative_float, default=10.0,
                   help="least seconds between plan changes (default 10)")
    p.add_argument("--hysteresis", type=non_negative_float, default=0.25,
                   help="re-plan when demand leaves planned x (1 +- h) (default 0.25)")
    p.add_argument("--via", choices=("shim", "gateway"), default="shim",
                   help="send the trace to an in-process shim (default) or to a gateway with stock tritonclient")
    p.add_argument("--batching", choices=Batching.choices(), default="proteus",
                   help="the shim's batching policy (default proteus)")
    p.add_argument("--hold-factor", type=factor, default=HOLD_FACTOR,
                   help=f"proteus: send a held batch while it could run this many times its predicted latency "
                        f"(default {HOLD_FACTOR:g}; 1 = the paper's last-moment hold)")
    p.add_argument("--no-observed-speed", action="store_true",
                   help="the controller plans with the profiles as measured, not scaled by the speed observed in service")
    p.add_argument("--demand-floor", action="append", default=[], metavar="FAMILY=RPS",
                   help="plan FAMILY for at least RPS requests/s, its known peak: the calm is routed to the most "
                        "accurate variants with room, and the first burst meets a plan made for it (repeat)")


def register(sub) -> None:
    p = sub.add_parser("bench", help="compare planner policies live on one trace (results table + plots)",
                       description=__doc__)
    p.add_argument("--trace", required=True, help="trace CSV (orchestrator trace generate)")
    p.add_argument("--policies", default=DEFAULT_POLICIES, help=f"comma-separated (default {DEFAULT_POLICIES})")
    p.add_argument("--cluster", default="cluster.toml", help="cluster file (default cluster.toml)")
    p.add_argument("--profiles", default="profiles.json", help="profiles of the cluster's device classes")
    p.add_argument("--repository", help="model repository (default: the cluster file's)")
    p.add_argument("--slo", action="append", metavar="FAMILY=MS",
                   help="SLO per family (default: the median deadline in the trace)")
    p.add_argument("--out", default="runs/bench", help="output folder (default runs/bench)")
    add_control_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from orchestrator.bench import BenchConfig, run_bench
    from orchestrator.controlplane.service import ControlPlaneConfig
    from orchestrator.evaluation import markdown_table, summarise
    from orchestrator.shim.client import ShimConfig

    policies = parse_policies(args.policies)
    check_output_folder(args.out, "--out")
    cluster = Cluster.load(args.cluster)
    repo = Path(args.repository) if args.repository else cluster.model_repository
    if repo is None:
        raise UserError(f"{args.cluster}: no model_repository; give --repository")
    cluster = replace(cluster, model_repository=repo)
    catalog = Catalog.load(repo)
    profiles = ProfileSet.load(args.profiles)
    trace = read_trace(args.trace, known_families=catalog.families())
    if not len(trace):
        raise UserError(f"{args.trace}: the trace holds no requests")
    slo = trace_slo(args.slo, trace)
    check_flag_families(slo, catalog.families(), repo)
    config = BenchConfig(control=ControlPlaneConfig(estimator=args.estimator, dwell_s=args.dwell,
                                                    hysteresis=args.hysteresis,
                                                    observed_speed=not args.no_observed_speed,
                                                    demand_floor=parse_demand_floor(args.demand_floor)),
                         shim=ShimConfig(policy=args.batching, hold_factor=args.hold_factor), via=args.via)
    check_flag_families(config.control.demand_floor, catalog.families(), repo, "--demand-floor")
    runs = run_bench(trace, cluster, catalog, profiles, policies, slo, args.out, config)
    print()
    print(markdown_table([summarise(r) for r in runs]))
    print(f"results, per-request outcomes and plots in {args.out}/")
    return 0
