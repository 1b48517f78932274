"""A gateway with its endpoints (HTTP and gRPC, and the Prometheus text of its data plane),
started and stopped as one, for `orchestrator gateway`, `serve` and `demo`."""

from __future__ import annotations

from orchestrator.gateway.core import Gateway
from orchestrator.gateway.grpc_server import GrpcEndpoint
from orchestrator.gateway.http_server import HttpEndpoint


class GatewayServer:
    """Follows the control plane at `control_plane` and serves KServe v2 on host:http_port and
    host:grpc_port (0: free ports). `metrics_port` serves the data plane's Prometheus text."""

    def __init__(self, control_plane: str, host: str = "127.0.0.1", http_port: int = 8000, grpc_port: int = 8001,
                 metrics_port: int | None = None, **settings):
        self.gateway = Gateway.follow(control_plane, metrics_port=metrics_port, **settings)
        try:
            self.http = HttpEndpoint(self.gateway, host, http_port)
            try:
                self.grpc = GrpcEndpoint(self.gateway, host, grpc_port)
            except BaseException:
                self.http.close()
                raise
        except BaseException:
            self.gateway.close()
            raise

    def addresses(self) -> str:
        return f"gateway: http://{self.http.url} (KServe v2 HTTP), {self.grpc.url} (gRPC)"

    def close(self) -> None:
        self.grpc.close()
        self.http.close()
        self.gateway.close()
