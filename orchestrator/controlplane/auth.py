"""Bearer-token check for mutating endpoints: no token -> 401, a wrong one -> 403."""

from __future__ import annotations

import hmac
from functools import wraps

from flask import current_app, jsonify, request


def require_token(view):
    @wraps(view)
    def wrapped(*args, **kwargs):
        expected = current_app.config["CONTROL_PLANE"].config.token
        header = request.headers.get("Authorization", "")
        if not header:
            resp = jsonify(error="this action needs the control plane's token: send 'Authorization: Bearer <token>'")
            resp.status_code = 401
            resp.headers["WWW-Authenticate"] = 'Bearer realm="orchestrator"'
            return resp
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            resp = jsonify(error="the Authorization header must be 'Bearer <token>'")
            resp.status_code = 401
            resp.headers["WWW-Authenticate"] = 'Bearer realm="orchestrator"'
            return resp
        if not expected:
            return jsonify(error="this control plane was started without a token, so it accepts no changes "
                                 "(restart it with --token)"), 403
        if not hmac.compare_digest(given.strip().encode(), expected.encode()):
            return jsonify(error="wrong token"), 403
        return view(*args, **kwargs)

    return wrapped
