"""`orchestrator serve`: run the control plane (REST API, dashboard, controller) for a cluster.

Starts (or attaches to) the cluster's Triton servers, resumes the last plan from the state
database without reloading what is already loaded, and serves http://HOST:PORT/ until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import threading
from pathlib import Path

from orchestrator.catalog import Catalog
from orchestrator.cluster import Cluster
from orchestrator.commands.flags import (check_output_file, check_flag_families, non_negative_float, parse_demand_floor,
                                         parse_slo, port,
                                         positive_float)
from orchestrator.commands.gateway import add_gateway_arguments, start_beside
from orchestrator.controlplane.demand import ESTIMATORS
from orchestrator.controlplane.server import ControlPlaneServer
from orchestrator.controlplane.service import ControlPlaneConfig
from orchestrator.errors import UserError
from orchestrator.profiles import ProfileSet


def register(sub) -> None:
    p = sub.add_parser("serve", help="run the control plane: REST API, dashboard and controller",
                       description=__doc__ + "\n\nExample: orchestrator serve --cluster cluster.toml "
                       "--profiles profiles.json --token s3cret --slo resnet=500",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_control_plane_arguments(p)
    p.add_argument("--cluster", required=True, help="cluster.toml")
    p.add_argument("--profiles", help="profiles.json (default: profiles.json beside the cluster file)")
    p.add_argument("--db", default="state.sqlite",
                   help="SQLite state file, in a directory that exists (default state.sqlite)")
    p.set_defaults(run=run)


def add_control_plane_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=port, default=8080, help="HTTP port (default 8080)")
    p.add_argument("--token", help="bearer token for changes (default $ORCHESTRATOR_TOKEN, else a random one, "
                                   "printed at start-up only then)")
    p.add_argument("--slo", action="append", default=[], metavar="FAMILY=MS", help="deadline per family (repeat)")
    p.add_argument("--policy", default="milp", help="planner policy (default milp)")
    p.add_argument("--estimator", choices=ESTIMATORS, default="peak", help="demand estimator (default peak)")
    p.add_argument("--tick", type=positive_float, default=1.0, help="controller period in s (default 1)")
    p.add_argument("--dwell", type=non_negative_float, default=10.0,
                   help="least seconds between automatic plan changes")
    p.add_argument("--drain", type=non_negative_float, default=2.0,
                   help="seconds old routes drain before their models unload")
    p.add_argument("--manual", action="store_true", help="the controller does not re-plan by itself")
    p.add_argument("--load-timeout", type=positive_float, default=120.0, metavar="S",
                   help="a model load Triton has not finished within S seconds fails and the apply rolls back "
                        "(default 120)")
    p.add_argument("--initial-demand", type=non_negative_float, default=1.0, metavar="RPS",
                   help="with no stored plan, the controller's first plan serves this many requests/s per family, so "
                        "that clients can start (default 1; 0: wait for an operator's plan)")
    p.add_argument("--no-observed-speed", action="store_true",
                   help="plan with the profiles as measured, not scaled by the speed observed in service")
    p.add_argument("--demand-floor", action="append", default=[], metavar="FAMILY=RPS",
                   help="plan FAMILY for at least RPS requests/s, its known peak: the calm is routed to the most "
                        "accurate variants with room, and the first burst meets a plan made for it (repeat)")
    add_gateway_arguments(p)


def resolve_token(args) -> tuple[str, str]:
    """The bearer token (--token, else $ORCHESTRATOR_TOKEN, else a random one) and what start-up
    prints about it: the token itself only when it was made here, so a given secret stays off
    the screen and out of logs."""
    if args.token is not None:
        if not args.token.strip():
            raise UserError("--token is empty; give a token, or leave the flag out for a random one")
        return args.token, "from --token"
    from_env = os.environ.get("ORCHESTRATOR_TOKEN", "")
    if from_env.strip():
        return from_env, "from $ORCHESTRATOR_TOKEN"
    token = secrets.token_urlsafe(12)
    return token, token


def check_state_file(db: str) -> None:
    """--db: a file (":memory:" for none) in a directory that exists, checked before any server starts."""
    if db != ":memory:":
        check_output_file(db, "--db")


def config_from_args(args, db_path: str, token: str) -> ControlPlaneConfig:
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be in 0..65535, not {args.port}")
    from orchestrator.controlplane.planning import policies
    if args.policy not in policies():
        raise UserError(f"--policy must be one of {', '.join(policies())}, not {args.policy!r}")
    return ControlPlaneConfig(token=token, db_path=db_path, tick_s=args.tick, dwell_s=args.dwell,
                              drain_s=args.drain, estimator=args.estimator, policy=args.policy,
                              slo_ms=parse_slo(args.slo), auto=not args.manual,
                              initial_demand_rps=args.initial_demand or None, load_timeout_s=args.load_timeout,
                              observed_speed=not args.no_observed_speed,
                              demand_floor=parse_demand_floor(args.demand_floor))


def load_catalog(cluster: Cluster, where: str) -> tuple[Path, Catalog]:
    """The cluster's model repository and its catalog (the control plane serves what it holds)."""
    if cluster.model_repository is None:
        raise UserError(f"{where}: set model_repository (the model repository the control plane serves)")
    return cluster.model_repository, Catalog.load(cluster.model_repository)


def wait_for_interrupt() -> None:
    """Block until Ctrl-C or SIGTERM (both end in KeyboardInterrupt, so `finally` blocks clean up)."""
    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    threading.Event().wait()


def run(args) -> int:
    # Every check of the input comes before the server is made: it starts the Triton servers.
    cluster = Cluster.load(args.cluster)
    check_state_file(args.db)
    profiles_path = Path(args.profiles) if args.profiles else Path(args.cluster).parent / "profiles.json"
    profiles = ProfileSet.load(profiles_path)
    for pool in cluster.pools:  # its devices come later, from DNS: their class must be profiled now
        if pool.device_class not in profiles.device_classes():
            raise UserError(f"{args.cluster}: pool {pool.name!r}: {profiles_path} has no profiles for device class "
                            f"{pool.device_class!r} (it has {sorted(profiles.device_classes())}); "
                            f"run `orchestrator profile --cluster {args.cluster}`")
    token, token_note = resolve_token(args)
    config = config_from_args(args, args.db, token)
    repo, catalog = load_catalog(cluster, args.cluster)
    check_flag_families(config.slo_ms, catalog.families(), repo)
    check_flag_families(config.demand_floor, catalog.families(), repo, "--demand-floor")
    server = ControlPlaneServer(cluster, profiles, config, model_repository=repo, host=args.host, port=args.port,
                                catalog=catalog)
    gateway = None
    try:
        server.start(log=lambda msg: print(msg, flush=True))
        print(f"control plane: {server.url}/  (token: {token_note})", flush=True)
        gateway = start_beside(args, server.url)
        if gateway is not None:
            print(gateway.addresses(), flush=True)
        print("press Ctrl-C to stop", flush=True)
        wait_for_interrupt()
    except KeyboardInterrupt:
        print("stopping ...", flush=True)
    finally:
        if gateway is not None:
            gateway.close()
        server.stop()
    return 0
