"""The Flask app: REST API, probes, metrics and the dashboard, with JSON errors (never a stack trace).

`create_app(control_plane)` builds it; `HttpServer` runs it on a werkzeug server in a thread so
that `serve`, `demo` and the tests can start and stop it cleanly.
"""

from __future__ import annotations

import logging
import threading

from flask import Flask, jsonify, render_template
from werkzeug.exceptions import HTTPException
from werkzeug.serving import make_server

from orchestrator.controlplane.api import api, probes
from orchestrator.controlplane.executor import ApplyBusy, ApplyFailed
from orchestrator.controlplane.service import Conflict, ControlPlane, NotFound
from orchestrator.errors import UserError

log = logging.getLogger("orchestrator.controlplane")


def create_app(control_plane: ControlPlane) -> Flask:
    app = Flask(__name__, static_folder="static", template_folder="templates")
    app.config["CONTROL_PLANE"] = control_plane
    app.config["JSON_SORT_KEYS"] = False
    app.register_blueprint(api)
    app.register_blueprint(probes)

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

    @app.errorhandler(UserError)
    def user_error(e):
        return jsonify(error=str(e)), 400

    @app.errorhandler(HTTPException)
    def http_error(e):
        messages = {404: "no such endpoint (see docs/openapi.yaml)", 405: "method not allowed on this endpoint"}
        return jsonify(error=messages.get(e.code, e.description)), e.code

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
