"""A client's Prometheus endpoint: its telemetry and gauges of its routes and plan as text at
``http://0.0.0.0:PORT/metrics``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from orchestrator.prometheus import CONTENT_TYPE, metric_lines
from orchestrator.shim.plan_source import Contact
from orchestrator.telemetry import METRIC_PREFIX


def state_text(queued: Mapping[tuple[str, str], int], plan_version: int | None, contact: Contact | None) -> str:
    """Gauges of a client's state: requests queued per (device, variant) route (draining routes
    included), the plan version in force, and whether the control plane answers."""
    p = METRIC_PREFIX
    lines = metric_lines(f"{p}_route_queue_depth", "gauge", "Requests on a route: queued, or in a batch at Triton.",
                        [({"device": d, "variant": v}, n) for (d, v), n in sorted(queued.items())])
    lines += metric_lines(f"{p}_plan_version", "gauge", "The version of the plan in force (0: none yet).",
                         [({}, plan_version or 0)])
    if contact is not None:  # a client that follows a control plane
        lines += metric_lines(f"{p}_control_plane_up", "gauge", "1 while the control plane answers the plan fetches, else 0.",
                             [({"url": contact.url}, int(contact.reachable))])
        lines += metric_lines(f"{p}_control_plane_failing_seconds", "gauge",
                             "Seconds the plan fetches have been failing (0 while they work); the plan in force "
                             "stays meanwhile.", [({"url": contact.url}, round(contact.failing_s, 3))])
    return "\n".join(lines) + "\n"


class MetricsServer:
    """Serves `text()` on `port` (0: any free port, then see `.port`) until `close`."""

    def __init__(self, text: Callable[[], str], port: int, host: str = "0.0.0.0"):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = text().encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self.host = host
        self.port: int = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True).start()

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
