"""`orchestrator demo`: the whole system on this machine, watched from a web page.

1. exports the ResNet variants into the cluster's model repository (if not there yet);
2. starts one embedded Triton server per device of cluster.toml (two 1-core CPU devices);
3. profiles each variant on the device class (or reuses profiles.json beside the cluster file);
4. starts the control plane (REST API, dashboard, controller) and applies a first plan;
5. drives a bursty load through the client shim: calm, spike, calm, ... so the page shows the
   controller moving traffic to cheaper variants under each spike and back after it.
Prints the dashboard URL; Ctrl-C stops everything it started.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from orchestrator.catalog import Catalog
from orchestrator.cluster import Cluster
from orchestrator.commands.flags import check_flag_families, non_negative_float, positive_float
from orchestrator.commands.gateway import start_beside
from orchestrator.commands.serve import (add_control_plane_arguments, check_state_file, config_from_args,
                                         resolve_token, wait_for_interrupt)
from orchestrator.errors import UserError
from orchestrator.profiles import ProfileSet

DEMO_VARIANTS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
FAMILY = "resnet"
DEFAULT_DB = "runs/demo/state.sqlite"


def register(sub) -> None:
    p = sub.add_parser("demo", help="the whole system with a bursty load and the dashboard (Ctrl-C stops)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_control_plane_arguments(p)
    p.add_argument("--cluster", default="cluster.toml", help="cluster file (default ./cluster.toml)")
    p.add_argument("--profiles", help="profiles.json (default: beside the cluster file; measured when missing)")
    p.add_argument("--db", default=DEFAULT_DB,
                   help=f"state file, started fresh, in a directory that exists (default {DEFAULT_DB}, "
                        f"whose directory is made)")
    p.add_argument("--low", type=positive_float,
                   help="calm request rate (default: from the profiles, ~10%% of capacity)")
    p.add_argument("--high", type=positive_float,
                   help="spike request rate (default: from the profiles, ~55%% of capacity)")
    p.add_argument("--calm-s", type=positive_float, default=45.0, help="seconds of calm between spikes (default 45)")
    p.add_argument("--spike-s", type=positive_float, default=35.0, help="seconds a spike lasts (default 35)")
    p.add_argument("--duration", type=non_negative_float, default=0.0,
                   help="stop after this many seconds (default: run until Ctrl-C)")
    p.set_defaults(run=run, dwell=8.0)


def ensure_exported(repo: Path) -> Catalog:
    catalog_path = repo / "variants.json"
    have = set(Catalog.load(repo).variants) if catalog_path.is_file() else set()
    missing = [v for v in DEMO_VARIANTS if v not in have or not (repo / v / "1" / "model.onnx").is_file()]
    if missing:
        print(f"[1/5] exporting {', '.join(missing)} into {repo} (once; a minute or two) ...", flush=True)
        from exporters.repository import export_variants
        export_variants(missing, repo, log=lambda msg: print("      " + msg, flush=True))
    else:
        print(f"[1/5] model repository {repo}: all variants exported", flush=True)
    return Catalog.load(repo)


def ensure_profiles(runtime, catalog: Catalog, path: Path) -> ProfileSet:
    from orchestrator.profiler import ProfileSettings, profile_cluster

    profiles = ProfileSet.load_or_empty(path)
    classes = {d.device_class for d in runtime.cluster.devices}
    if classes <= profiles.device_classes() and set(DEMO_VARIANTS) <= profiles.variants():
        print(f"[3/5] reusing profiles {path}", flush=True)
        return profiles
    print(f"[3/5] profiling each variant on {', '.join(sorted(classes))} -> {path} (once; a few minutes) ...", flush=True)
    settings = ProfileSettings(batch_sizes=(1, 2, 4, 8), min_samples=30, max_seconds=5.0, all_devices=True)
    return profile_cluster(runtime, catalog, DEMO_VARIANTS, path, settings,
                           progress=lambda msg: print("      " + msg, flush=True))


def default_rates(catalog: Catalog, cluster: Cluster, profiles: ProfileSet, slo_ms: float) -> tuple[float, float]:
    """Calm and spike rates from what the cluster can serve with its fastest variant within the SLO."""
    from orchestrator.planner import usable_options

    options = usable_options(catalog, profiles, {FAMILY: slo_ms}, 0.5)
    fastest = {cls: max((o.capacity_rps for o in opts), default=0.0) for cls, opts in options.items()}
    capacity = sum(fastest.get(d.device_class, 0.0) * 0.85 for d in cluster.devices)
    if capacity <= 0:
        raise UserError(f"no variant meets a {slo_ms:g} ms SLO on this cluster's devices; give a larger --slo {FAMILY}=MS")
    return round(max(1.0, 0.10 * capacity), 1), round(0.55 * capacity, 1)


def run(args) -> int:
    from orchestrator.controlplane.loadgen import BurstyLoad
    from orchestrator.controlplane.server import ControlPlaneServer
    from orchestrator.gateway.core import wait_ready
    from orchestrator.shim.client import Client
    from orchestrator.triton.runtime import ClusterRuntime

    cluster = Cluster.load(args.cluster)
    if cluster.model_repository is None:
        raise UserError(f"{args.cluster}: set model_repository")
    repo = cluster.model_repository
    profiles_path = Path(args.profiles) if args.profiles else Path(args.cluster).parent / "profiles.json"
    if args.db == DEFAULT_DB:
        Path(DEFAULT_DB).parent.mkdir(parents=True, exist_ok=True)
    check_state_file(args.db)
    if not args.slo:
        args.slo = [f"{FAMILY}=600"]
    token, token_note = resolve_token(args)
    config = config_from_args(args, args.db, token)
    config.initial_demand_rps = None  # the demo applies its own first plan, for its calm rate
    slo = config.slo_ms.get(FAMILY, config.default_slo_ms)
    db = Path(args.db)
    for stale in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        stale.unlink(missing_ok=True)  # a fresh story each run

    catalog = ensure_exported(repo)
    check_flag_families(config.slo_ms, catalog.families(), repo)
    runtime = ClusterRuntime(cluster, repo)
    server = client = load = gateway = None
    try:
        print(f"[2/5] starting {len(cluster.devices)} embedded Triton servers ...", flush=True)
        runtime.start()
        profiles = ensure_profiles(runtime, catalog, profiles_path)
        low, high = default_rates(catalog, cluster, profiles, slo)
        low, high = args.low or low, args.high or high
        print("[4/5] starting the control plane ...", flush=True)
        server = ControlPlaneServer(cluster, profiles, config, model_repository=repo, runtime=runtime,
                                    host=args.host, port=args.port, catalog=catalog)
        server.start(log=lambda msg: print("      " + msg, flush=True))
        first = server.cp.solve(demand={FAMILY: low})
        server.cp.apply(first, reason="demo: first plan for the calm rate")
        gateway = start_beside(args, server.url, profiles=profiles)
        if gateway is not None:  # the load goes to it with stock tritonclient, as an application's would
            if not wait_ready(gateway.gateway, 60.0):
                raise UserError(f"the gateway did not get the first plan: {gateway.gateway.readiness()}")
            target: str | Client = gateway.grpc.url
            via = f"the gateway ({gateway.grpc.url}, tritonclient.grpc)"
        else:
            client = Client(server.url, profiles=profiles)
            target, via = client, "an in-process shim (--no-gateway)"
        print(f"[5/5] bursty load through {via}: {low:g} req/s calm ({args.calm_s:g} s), "
              f"{high:g} req/s spikes ({args.spike_s:g} s), SLO {slo:g} ms", flush=True)
        load = BurstyLoad(target, FAMILY, low, high, args.calm_s, args.spike_s).start()
        print(f"\n  dashboard: {server.url}/   (token for changes: {token_note})", flush=True)
        if gateway is not None:
            print(f"  {gateway.addresses()}", flush=True)
        print("", flush=True)
        print("press Ctrl-C to stop", flush=True)
        if args.duration > 0:
            end = time.monotonic() + args.duration
            while time.monotonic() < end:
                time.sleep(min(5.0, end - time.monotonic()))
        else:
            wait_for_interrupt()
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    finally:
        if load is not None:
            load.stop(wait_s=10)
        if client is not None:
            client.close(timeout_s=10)
        if gateway is not None:
            gateway.close()
        if server is not None:
            server.stop()
        runtime.stop()
    if load is not None:
        mix = ", ".join(f"{v} {n}" for v, n in sorted(load.variants.items()))
        print(f"sent {load.sent} requests; answers: {dict(load.answers)}; served by: {mix}", flush=True)
    return 0
