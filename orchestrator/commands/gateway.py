"""`orchestrator gateway`: serve the KServe v2 inference protocol (as Triton does, HTTP and gRPC)
in front of a control plane's plan, for unchanged Triton clients.

A client asks for a family (`resnet`) and the plan chooses the variant and device; a variant
name (`resnet50`) pins the request to it. The request parameter `deadline_ms` sets the deadline
(default the family's SLO); the response parameters name the variant and device that answered.
"""

from __future__ import annotations

import argparse

from orchestrator.commands.flags import port
from orchestrator.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("gateway", help="serve the Triton (KServe v2) protocol in front of a control plane",
                       description=__doc__ + "\n\nExample: orchestrator gateway --control-plane "
                       "http://127.0.0.1:8080 --http-port 8000 --grpc-port 8001",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--control-plane", required=True, metavar="URL", help="the control plane's URL")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--http-port", type=port, default=8000, help="KServe v2 HTTP port (default 8000)")
    p.add_argument("--grpc-port", type=port, default=8001, help="KServe v2 gRPC port (default 8001)")
    p.add_argument("--metrics-port", type=port, default=8002, help="Prometheus text at /metrics (default 8002)")
    p.set_defaults(run=run)


def add_gateway_arguments(p: argparse.ArgumentParser) -> None:
    """`serve` and `demo` start a gateway beside the control plane unless --no-gateway."""
    p.add_argument("--gateway-http-port", type=port, default=8000, help="the gateway's KServe v2 HTTP port (default 8000)")
    p.add_argument("--gateway-grpc-port", type=port, default=8001, help="the gateway's KServe v2 gRPC port (default 8001)")
    p.add_argument("--gateway-metrics-port", type=port, default=8002,
                   help="the gateway's Prometheus port, /metrics (default 8002)")
    p.add_argument("--no-gateway", action="store_true", help="do not start a gateway")


def start_beside(args, control_plane: str, **settings):
    """The gateway `serve` and `demo` start (None with --no-gateway), on the control plane's host;
    `settings` go to its data plane (shim.Client)."""
    if args.no_gateway:
        return None
    return start(control_plane, args.host, args.gateway_http_port, args.gateway_grpc_port, args.gateway_metrics_port,
                 **settings)


def start(control_plane: str, host: str, http_port: int, grpc_port: int, metrics_port: int, **settings):
    """A running GatewayServer; a port already taken is a UserError naming it."""
    from orchestrator.gateway.server import GatewayServer

    try:
        return GatewayServer(control_plane, host, http_port, grpc_port, metrics_port, **settings)
    except OSError as e:
        raise UserError(f"gateway: cannot listen on {host} (HTTP port {http_port}, gRPC port {grpc_port}, metrics "
                        f"port {metrics_port}): {e.strerror or e}") from None


def run(args) -> int:
    from orchestrator.commands.serve import wait_for_interrupt  # (serve imports this module)

    server = start(args.control_plane, args.host, args.http_port, args.grpc_port, args.metrics_port)
    try:
        print(server.addresses(), flush=True)
        print(f"following the control plane at {args.control_plane}; press Ctrl-C to stop", flush=True)
        wait_for_interrupt()
    except KeyboardInterrupt:
        print("stopping ...", flush=True)
    finally:
        server.close()
    return 0
