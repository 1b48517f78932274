"""`orchestrator serve`: run the control plane (REST API, dashboard, controller) for a cluster.

Starts (or attaches to) the cluster's Triton servers, resumes the last plan from the state
database without reloading what is already loaded, and serves http://HOST:PORT/ until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

from orchestrator.cluster import Cluster
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
    p.add_argument("--db", default="state.sqlite", help="SQLite state file (default state.sqlite)")
    p.set_defaults(run=run)


def add_control_plane_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    p.add_argument("--token", default=os.environ.get("ORCHESTRATOR_TOKEN"),
                   help="bearer token for changes (default $ORCHESTRATOR_TOKEN, else a random one, printed)")
    p.add_argument("--slo", action="append", default=[], metavar="FAMILY=MS", help="deadline per family (repeat)")
    p.add_argument("--policy", default="milp", help="planner policy (default milp)")
    p.add_argument("--estimator", choices=ESTIMATORS, default="peak", help="demand estimator (default peak)")
    p.add_argument("--tick", type=float, default=1.0, help="controller period in s (default 1)")
    p.add_argument("--dwell", type=float, default=10.0, help="least seconds between automatic plan changes")
    p.add_argument("--drain", type=float, default=2.0, help="seconds old routes drain before their models unload")
    p.add_argument("--manual", action="store_true", help="the controller does not re-plan by itself")


def parse_slo(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
            if not sep or not name.strip() or out[name.strip()] <= 0:
                raise ValueError
        except ValueError:
            raise UserError(f"--slo expects FAMILY=MS with MS > 0, not {item!r}") from None
    return out


def config_from_args(args, db_path: str) -> ControlPlaneConfig:
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be in 0..65535, not {args.port}")
    for flag in ("tick", "dwell", "drain"):
        if getattr(args, flag) < 0 or (flag == "tick" and args.tick <= 0):
            raise UserError(f"--{flag} must be positive, not {getattr(args, flag)}")
    from orchestrator.controlplane.planning import policies
    if args.policy not in policies():
        raise UserError(f"--policy must be one of {', '.join(policies())}, not {args.policy!r}")
    return ControlPlaneConfig(token=args.token, db_path=db_path, tick_s=args.tick, dwell_s=args.dwell,
                              drain_s=args.drain, estimator=args.estimator, policy=args.policy,
                              slo_ms=parse_slo(args.slo), auto=not args.manual)


def wait_for_interrupt() -> None:
    """Block until Ctrl-C or SIGTERM (both end in KeyboardInterrupt, so `finally` blocks clean up)."""
    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    threading.Event().wait()


def run(args) -> int:
    cluster = Cluster.load(args.cluster)
    profiles_path = Path(args.profiles) if args.profiles else Path(args.cluster).parent / "profiles.json"
    profiles = ProfileSet.load(profiles_path)
    config = config_from_args(args, args.db)
    server = ControlPlaneServer(cluster, profiles, config, host=args.host, port=args.port)
    try:
        server.start(log=lambda msg: print(msg, flush=True))
        print(f"control plane: {server.url}/  (token: {config.token})", flush=True)
        print("press Ctrl-C to stop", flush=True)
        wait_for_interrupt()
    except KeyboardInterrupt:
        print("stopping ...", flush=True)
    finally:
        server.stop()
    return 0
