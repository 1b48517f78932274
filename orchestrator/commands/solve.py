"""`orchestrator solve`: plan variants, placement and traffic split for an SLO and a demand, and print it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from orchestrator.catalog import Catalog
from orchestrator.cluster import Cluster
from orchestrator.commands.flags import fraction, non_negative_float, parse_slo, positive_float
from orchestrator.errors import UserError
from orchestrator.plan import Plan
from orchestrator.planner import POLICIES, AccuracyFloor, PlannerOptions, PlanRequest, make_plan
from orchestrator.profiles import ProfileSet


def register(sub) -> None:
    p = sub.add_parser("solve", help="plan which variants run where and how traffic is split",
                       description=__doc__ + "\n\nExample: orchestrator solve --cluster cluster.toml "
                       "--profiles profiles.json --slo resnet=300 --demand resnet=120",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cluster", required=True, help="cluster.toml")
    p.add_argument("--profiles", required=True, help="profiles.json (from `orchestrator profile`)")
    p.add_argument("--catalog", help="variants.json or the model repository holding it "
                   "(default: the cluster file's model_repository, else model_repository/)")
    p.add_argument("--slo", action="append", default=[], metavar="FAMILY=MS", help="deadline per family (repeat)")
    p.add_argument("--demand", action="append", default=[], metavar="FAMILY=RPS", help="requests/s per family (repeat)")
    p.add_argument("--policy", choices=list(POLICIES), default="milp", help="default milp")
    p.add_argument("--accuracy-floor", action="append", default=[], metavar="FAMILY=[avg:]PCT",
                   help="never serve FAMILY with a variant below PCT top-1 (avg:PCT: keep its average >= PCT)")
    p.add_argument("--objective", choices=["accuracy", "cost"], default="accuracy",
                   help="accuracy: maximise effective accuracy; cost: cheapest plan meeting the floors")
    p.add_argument("--current", help="the plan now in force (JSON from --json); loads relative to it cost")
    p.add_argument("--drain", action="append", default=[], metavar="DEVICE", help="device that hosts nothing")
    p.add_argument("--reserve", action="append", default=[], metavar="DEVICE",
                   help="device the planner leaves as it is (keeps --current's placements, gets no traffic)")
    p.add_argument("--utilisation-cap", type=fraction, default=0.85, help="max time share of a device (default 0.85)")
    p.add_argument("--latency-fraction", type=fraction, default=0.5,
                   help="a batch qualifies when its p99 <= SLO x this (default 0.5)")
    p.add_argument("--time-limit", type=positive_float, default=2.0,
                   help="solver time limit in s; past it the best plan found is returned with its gap (default 2)")
    p.add_argument("--change-threshold", type=non_negative_float, default=0.5, metavar="POINTS",
                   help="with --current: change placements only to gain more than this many effective-accuracy "
                        "points (default 0.5; 0: any gain that pays its switching costs)")
    p.add_argument("--no-standby", action="store_true",
                   help="milp: do not add standby variants (spill routes) where memory allows")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(run=run)


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise UserError(f"--{what} expects FAMILY=VALUE, not {item!r}")
        out[name.strip()] = value.strip()
    return out


def _numbers(items: list[str], what: str) -> dict[str, float]:
    out = {}
    for name, value in _pairs(items, what).items():
        try:
            out[name] = float(value)
        except ValueError:
            raise UserError(f"--{what} {name}={value}: not a number") from None
    return out


def _floors(items: list[str]) -> dict[str, AccuracyFloor]:
    out = {}
    for name, value in _pairs(items, "accuracy-floor").items():
        kind = "variant"
        if value.startswith("avg:"):
            kind, value = "average", value[4:]
        try:
            out[name] = AccuracyFloor(float(value), kind)
        except ValueError:
            raise UserError(f"--accuracy-floor {name}={value}: not a number") from None
    return out


def run(args) -> int:
    cluster = Cluster.load(args.cluster)
    profiles = ProfileSet.load(args.profiles)
    catalog_path = args.catalog or cluster.model_repository or "model_repository"
    catalog = Catalog.load(catalog_path)
    slo, demand = parse_slo(args.slo), _numbers(args.demand, "demand")
    if not demand:
        raise UserError("give the demand to plan for, e.g. --demand resnet=120")
    current = None
    if args.current:
        try:
            current = Plan.from_dict(json.loads(Path(args.current).read_text()))
        except FileNotFoundError:
            raise UserError(f"{args.current}: plan file not found") from None
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{args.current}: not a plan written by `orchestrator solve --json` ({e})") from None
    options = PlannerOptions(latency_fraction=args.latency_fraction, utilisation_cap=args.utilisation_cap,
                             objective=args.objective, time_limit_s=args.time_limit,
                             change_threshold=args.change_threshold, standby=not args.no_standby)
    request = PlanRequest(catalog=catalog, cluster=cluster, profiles=profiles, slo_ms=slo, demand_rps=demand,
                          current=current, accuracy_floor=_floors(args.accuracy_floor),
                          drained=frozenset(args.drain), reserved=frozenset(args.reserve), options=options)
    plan = make_plan(request, policy=args.policy)
    if args.json:
        print(plan.to_json())
    else:
        print(format_plan(plan, catalog))
    return 0


def _weight_cell(weight: float | None) -> str:
    if weight is None:
        return "-"
    return "spill" if weight <= 0 else f"{weight:.1%}"


def format_plan(plan: Plan, catalog: Catalog) -> str:
    """The plan as a table a person reads, then the predicted figures per family and the solver's."""
    weight = {(r.device_id, r.variant): r.weight for f in plan.families.values() for r in f.routes}
    head = ("device", "variant", "batch", "inst x thr", "time", "weight", "capacity/s", "served/s")
    rows = [head]
    for p in plan.placements:
        share = p.served_rps / p.capacity_rps if p.capacity_rps > 0 else 0.0
        rows.append((p.device_id, p.variant, str(p.batch_cap), f"{p.instances} x {p.threads}", f"{share:.0%}",
                     _weight_cell(weight.get((p.device_id, p.variant))), f"{p.capacity_rps:.1f}",
                     f"{p.served_rps:.1f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [f"plan by {plan.policy}: {len(plan.placements)} placements on "
             f"{len({p.device_id for p in plan.placements})} devices"]
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if j < 4 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines.append("time = share of the device's time (served / capacity); weight = share of the family's traffic "
                 "(spill: a standby that takes only what the weighted routes cannot answer in time)")
    for f in plan.families.values():
        line = (f"{f.family}: SLO {f.slo_ms:g} ms, demand {f.demand_rps:.1f}/s, served {f.served_rps:.1f}/s, "
                f"unserved {f.unserved_rps:.1f}/s, predicted effective accuracy {f.effective_accuracy:.2f} %")
        if f.accuracy_floor is not None:
            line += f" (floor {f.accuracy_floor:g} %)"
        lines.append(line)
        if f.reason:
            lines.append(f"  unserved because: {f.reason}")
    s = plan.solver
    lines.append(f"overall predicted effective accuracy {plan.effective_accuracy:.2f} %")
    lines.append(f"solver: {s.solver} {s.status}, gap {s.gap:.2g}, {s.time_ms:.1f} ms")
    for n in plan.notes:
        lines.append(f"note: {n}")
    return "\n".join(lines)
