"""A gateway with its endpoints (HTTP, gRPC, and Prometheus text at /metrics), started and
stopped as one, for `orchestrator gateway`, `serve` and `demo`."""

from __future__ import annotations

from orchestrator.gateway.core import Gateway
from orchestrator.gateway.grpc_server import GrpcEndpoint
from orchestrator.gateway.http_server import HttpEndpoint
from orchestrator.shim.metrics_http import MetricsServer


class GatewayServer:
    """Follows the control plane at `control_plane` and serves KServe v2 on host:http_port and
    host:grpc_port, and its metrics on host:metrics_port (0: free ports; None: no metrics)."""

    def __init__(self, control_plane: str, host: str = "127.0.0.1", http_port: int = 8000, grpc_port: int = 8001,
                 metrics_port: int | None = None, **settings):
        self.gateway = Gateway.follow(control_plane, **settings)
        started: list[HttpEndpoint | GrpcEndpoint] = []
        try:
            self.http = HttpEndpoint(self.gateway, host, http_port)
            started.append(self.http)
            self.grpc = GrpcEndpoint(self.gateway, host, grpc_port)
            started.append(self.grpc)
            self.metrics = (MetricsServer(self.gateway.prometheus_text, metrics_port, host)
                            if metrics_port is not None else None)
        except BaseException:
            for endpoint in reversed(started):
                endpoint.close()
            self.gateway.close()
            raise

    def addresses(self) -> str:
        metrics = f", http://{self.metrics.url}/metrics" if self.metrics is not None else ""
        return f"gateway: http://{self.http.url} (KServe v2 HTTP), {self.grpc.url} (gRPC){metrics}"

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        self.grpc.close()
        self.http.close()
        self.gateway.close()
