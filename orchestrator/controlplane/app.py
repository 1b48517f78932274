"""The Flask app: REST API, probes, metrics and the dashboard, with JSON errors (never a stack trace).

`create_app(control_plane)` builds it; `HttpServer` runs it on a werkzeug server in a thread so
that `serve`, `demo` and the tests can start and stop it cleanly.
"""

from __future__ import annotations

import logging
import threading

from flask import Flask, jsonify, render_template, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException
from werkzeug.serving import make_server

from orchestrator.controlplane.api import api, parse_json, probes
from orchestrator.controlplane.executor import ApplyBusy, ApplyFailed
from orchestrator.controlplane.service import Conflict, ControlPlane, LoadFailed, NotFound
from orchestrator.errors import UserError

log = logging.getLogger("orchestrator.controlplane")

MAX_BODY_BYTES = 1 << 20  # 1 MiB: a shim's report of a second is a few hundred bytes per family
# The dashboard is one page with its script and style sheet from /static (no inline script or
# style, no other origin); the favicon is the empty data: URL, so that the page asks for none.
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                           "form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class StrictJSONProvider(DefaultJSONProvider):
    """Strict JSON both ways: bodies are parsed by api.parse_json (no NaN or Infinity, no nesting
    too deep), and a response holding a non-finite number fails loudly (a logged 500) instead of
    sending `NaN`, which is not JSON and which the dashboard cannot read."""

    def loads(self, s, **kwargs):
        return parse_json(s)

    def dumps(self, obj, **kwargs):
        return super().dumps(obj, allow_nan=False, **kwargs)


def create_app(control_plane: ControlPlane) -> Flask:
    app = Flask(__name__, static_folder="static", template_folder="templates")
    app.json = StrictJSONProvider(app)
    app.config["CONTROL_PLANE"] = control_plane
    app.config["JSON_SORT_KEYS"] = False
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.register_blueprint(api)
    app.register_blueprint(probes)

    @app.after_request
    def security_headers(response):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.get("/")
    def dashboard():
        return render_template("dashboard.html", cluster=control_plane.cluster.name)

    @app.errorhandler(NotFound)
    def not_found(e):
        return jsonify(error=str(e)), 404

    @app.errorhandler(Conflict)
    def conflict(e):
        return jsonify(error=str(e)), 409

    @app.errorhandler(ApplyBusy)
    def busy(e):
        return jsonify(error=str(e)), 409

    @app.errorhandler(ApplyFailed)
    def failed(e):
        # a server-side load failed and was rolled back: the request was fine, Triton was not
        return jsonify(error=f"apply failed: {e}"), 502

    @app.errorhandler(LoadFailed)
    def load_failed(e):
        return jsonify(error=f"load failed: {e}"), 502

    @app.errorhandler(UserError)
    def user_error(e):
        return jsonify(error=str(e)), 400

    @app.errorhandler(HTTPException)
    def http_error(e):
        allowed = ", ".join(m for m in getattr(e, "valid_methods", None) or () if m not in ("HEAD", "OPTIONS"))
        messages = {404: "no such endpoint (see docs/openapi.yaml)",
                    405: f"method {request.method} not allowed on this endpoint (allowed: {allowed})",
                    413: f"the request body is larger than {MAX_BODY_BYTES // 1024} KiB"}
        resp = jsonify(error=messages.get(e.code, " ".join(str(e.description).split())))
        resp.status_code = e.code or 500
        for name, value in e.get_headers():  # 405's Allow, 401's WWW-Authenticate, ...
            if name.lower() != "content-type":
                resp.headers[name] = value
        return resp

    @app.errorhandler(Exception)
    def internal(e):
        log.exception("internal error")
        return jsonify(error=f"internal error ({type(e).__name__}); the control plane's log has the details"), 500

    return app


class HttpServer:
    """The app on a threaded werkzeug server in a daemon thread."""

    def __init__(self, app: Flask, host: str = "127.0.0.1", port: int = 8080):
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        try:
            self._server = make_server(host, port, app, threaded=True)
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        self.host = host
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "HttpServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
