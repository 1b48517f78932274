"""The gateway's KServe v2 HTTP/REST endpoint, as Triton serves it: health, server and model
metadata, model config and ready, and `POST /v2/models/<name>[/versions/<v>]/infer` (JSON, and
the binary tensor data extension tritonclient.http uses). Errors are `{"error": "..."}` with
the status Triton gives for the same kind of error (core.Code).
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from orchestrator.gateway.core import VERSION, Code, Gateway, GatewayError
from orchestrator.gateway.tensors import HEADER_LENGTH, http_response, parse_http, requested_outputs

log = logging.getLogger(__name__)

MAX_BODY = 256 << 20  # bytes
_MODEL_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/config|/infer)?$")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address, handler, gateway: Gateway):
        self.gateway = gateway
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as tritonclient.http expects
    server: _Server

    def setup(self) -> None:
        super().setup()
        # headers and body go out as two writes; with Nagle's algorithm and the client's delayed
        # ACK the second waits ~40 ms on a kept-alive connection
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._answer("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._answer("POST")

    def _answer(self, method: str) -> None:
        try:
            status, body, headers = self._route(method)
        except GatewayError as e:
            status, body, headers = e.code.http, json.dumps({"error": e.message}).encode(), {}
        except Exception as e:  # never a stack trace to the client, never a hang
            log.exception("gateway: %s %s failed", method, self.path)
            status, body, headers = 500, json.dumps({"error": f"internal error: {type(e).__name__}"}).encode(), {}
        self.send_response(status)
        headers.setdefault("Content-Type", "application/json")
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self, method: str) -> tuple[int, bytes, dict[str, str]]:
        gateway = self.server.gateway
        path = self.path.split("?", 1)[0]
        if method == "POST" and not path.endswith("/infer"):
            self._body()  # read what was sent, so that the connection stays usable
        if path == "/v2/health/live" and method == "GET":
            return 200, b"", {}
        if path == "/v2/health/ready" and method == "GET":  # the body: the plan and the control plane's state
            return (200 if gateway.ready() else 503), json.dumps(gateway.health()).encode(), {}
        if path == "/v2" and method == "GET":
            return 200, json.dumps({"name": "orchestrator", "version": VERSION, "extensions": ["binary_tensor_data"]}
                                   ).encode(), {}
        m = _MODEL_PATH.match(path)
        if m is None:
            raise GatewayError(Code.NOT_FOUND, f"no endpoint {method} {path}")
        name, version, action = m.group(1), m.group(2) or "", m.group(3) or ""
        if action == "/infer":
            if method != "POST":
                raise GatewayError(Code.NOT_FOUND, f"no endpoint {method} {path}: infer takes POST")
            return self._infer(gateway, name, version)
        if method != "GET":
            raise GatewayError(Code.NOT_FOUND, f"no endpoint {method} {path}")
        if action == "/ready":
            if gateway.model_ready(name, version):
                return 200, b"", {}
            gateway.resolve(name, version)  # raises the reason
        if action == "/config":
            return 200, json.dumps(gateway.config(name, version)).encode(), {}
        return 200, json.dumps(gateway.metadata(name, version)).encode(), {}

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True  # what follows on the connection cannot be told apart
            raise GatewayError(Code.INVALID_ARGUMENT, "a request body needs a Content-Length")
        n = int(length)
        if n > MAX_BODY:
            self.close_connection = True
            raise GatewayError(Code.INVALID_ARGUMENT, f"request body of {n} bytes is over the {MAX_BODY}-byte limit")
        return self.rfile.read(n)

    def _infer(self, gateway: Gateway, name: str, version: str) -> tuple[int, bytes, dict[str, str]]:
        with gateway.metrics.request(name, version, "http") as outcome:
            request, inputs = parse_http(self._body(), self.headers.get(HEADER_LENGTH))
            outputs, binary, classes = requested_outputs(request)
            params = request.get("parameters") if isinstance(request.get("parameters"), dict) else {}
            answer = outcome.answer = gateway.infer(name, inputs, outputs, deadline_ms=params.get("deadline_ms"),
                                                    version=version, serve_late=params.get("serve_late") is True,
                                                    classification=classes)
        body, headers = http_response(answer, request.get("id"), binary)
        return 200, body, headers


class HttpEndpoint:
    """Serves `gateway` over HTTP at host:port (0: a free port, then `.port`) until `close`."""

    def __init__(self, gateway: Gateway, host: str = "127.0.0.1", port: int = 8000):
        self._server = _Server((host, port), _Handler, gateway)
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="gateway-http", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
