"""The REST API, version 1 (docs/openapi.yaml documents every route).

Reads are open; changes (solve with apply, apply, load/unload, settings) need the bearer token.
Telemetry intake is open to the shims on the network (it is validated and only counted).
Errors are JSON `{"error": "..."}` with a 4xx code a client can act on (see app.py).
"""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, jsonify, request

from orchestrator.controlplane.auth import require_token
from orchestrator.controlplane.executor import ApplyBusy
from orchestrator.controlplane.intake import BadTelemetry
from orchestrator.controlplane.metrics import prometheus_text
from orchestrator.controlplane.planning import policies
from orchestrator.controlplane.service import ControlPlane, NotFound
from orchestrator.errors import UserError
from orchestrator.plan import Plan

api = Blueprint("api", __name__, url_prefix="/api/v1")
probes = Blueprint("probes", __name__)


def cp() -> ControlPlane:
    return current_app.config["CONTROL_PLANE"]


def body_object(required: bool = True) -> dict:
    """The JSON object in the request body (empty body: {} unless required)."""
    if not request.data:
        if required:
            raise UserError("the request body must be a JSON object")
        return {}
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise UserError("the request body must be a JSON object (Content-Type: application/json)")
    return data


def int_arg(name: str, default: int, low: int = 0, high: int = 10**12) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(float(raw))
    except ValueError:
        raise UserError(f"query parameter {name!r} must be a number, not {raw!r}") from None
    if not low <= value <= high:
        raise UserError(f"query parameter {name!r} must be in {low}..{high}, not {value}")
    return value


# -- probes and metrics ---------------------------------------------------------------------
@probes.get("/healthz")
def healthz():
    return jsonify(status="ok", uptime_s=round(time.time() - cp().started_at, 1))


@probes.get("/readyz")
def readyz():
    devices = cp().device_health()
    down = [d["id"] for d in devices if not d["live"]]
    if down:
        return jsonify(status="not ready", error=f"Triton does not answer on device(s) {', '.join(down)}"), 503
    return jsonify(status="ready", devices=len(devices), plan_version=cp().plan.version if cp().plan else 0)


@probes.get("/metrics")
def metrics():
    return Response(prometheus_text(cp(), cp().device_health()), mimetype="text/plain; version=0.0.4")


# -- cluster and catalog --------------------------------------------------------------------
@api.get("/cluster")
def cluster():
    devices = cp().device_health()
    return jsonify(name=cp().cluster.name, devices=devices, healthy=all(d["live"] for d in devices))


@api.get("/devices/<device_id>")
def device(device_id: str):
    cp().check_device(device_id)
    return jsonify(next(d for d in cp().device_health() if d["id"] == device_id))


@api.get("/catalog")
def catalog():
    fams = {f: [v.name for v in vs] for f, vs in cp().catalog.families().items()}
    return jsonify(families=fams, variants=[v.to_dict() for v in cp().catalog.variants.values()])


# -- plans ----------------------------------------------------------------------------------
def endpoints() -> dict:
    out = {}
    for dev_id, ep in cp().runtime.endpoints().items():
        out[dev_id] = {**ep, "device_class": cp().cluster.device(dev_id).device_class}
    return out


@api.get("/plan")
def current_plan():
    """What shims poll: the published plan, where each device is, and the catalog."""
    plan = cp().plan
    if plan is None:
        return jsonify(error="no plan has been applied yet", plan=None, endpoints=endpoints()), 503
    return jsonify(plan=plan.to_dict(), endpoints=endpoints(),
                   catalog={"variants": [v.to_dict() for v in cp().catalog.variants.values()]})


@api.get("/plans")
def plans():
    return jsonify(plans=cp().store.plan_history(int_arg("limit", 50, 1, 1000)))


@api.get("/plans/<int:version>")
def plan_version(version: int):
    plan = cp().store.plan(version)
    if plan is None:
        raise NotFound(f"there is no plan v{version}")
    return jsonify(plan=plan.to_dict())


@api.post("/solve")
def solve():
    """Plan for the current (or given) demand and SLOs. dry_run (default true) only previews the diff."""
    body = body_object(required=False)
    unknown = set(body) - {"demand", "slo_ms", "policy", "dry_run"}
    if unknown:
        raise UserError(f"unknown field {sorted(unknown)[0]!r} (allowed: demand, slo_ms, policy, dry_run)")
    dry_run = body.get("dry_run", True)
    if not isinstance(dry_run, bool):
        raise UserError("dry_run must be true or false")
    if not dry_run:
        return _solve_and_apply(body)
    plan = cp().solve(body.get("demand"), body.get("slo_ms"), body.get("policy"))
    return jsonify(plan=plan.to_dict(), diff=cp().diff(plan).to_dict(), summary=cp().diff(plan).summary(),
                   applied=False)


@require_token
def _solve_and_apply(body: dict):
    plan = cp().solve(body.get("demand"), body.get("slo_ms"), body.get("policy"))
    result = cp().apply(plan, reason="operator: solve and apply")
    return jsonify(plan=result.plan.to_dict(), diff=result.diff.to_dict(), summary=result.diff.summary(),
                   applied=True, result=result.to_dict())


@api.post("/apply")
@require_token
def apply():
    """Apply {"plan": <Plan>} (e.g. a solve's preview) or {"version": N} (a stored plan, e.g. to roll back)."""
    body = body_object()
    if ("plan" in body) == ("version" in body):
        raise UserError("send exactly one of 'plan' (a plan object, e.g. from /solve) or 'version' (a stored plan)")
    if "version" in body:
        if isinstance(body["version"], bool) or not isinstance(body["version"], int):
            raise UserError(f"version must be an integer, not {body['version']!r}")
        plan = cp().store.plan(body["version"])
        if plan is None:
            raise NotFound(f"there is no plan v{body['version']}")
        reason = f"operator: re-apply plan v{body['version']}"
    else:
        try:
            plan = Plan.from_dict(body["plan"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise UserError(f"'plan' is not a plan object (missing or bad field {e})") from None
        reason = "operator: apply"
    result = cp().apply(plan, reason=reason)
    return jsonify(plan=result.plan.to_dict(), result=result.to_dict())


# -- manual model control -------------------------------------------------------------------
@api.post("/devices/<device_id>/models/<variant>/load")
@require_token
def load(device_id: str, variant: str):
    body = body_object(required=False)
    return jsonify(cp().load_variant(device_id, variant, instances=body.get("instances", 1),
                                     threads=body.get("threads")))


@api.post("/devices/<device_id>/models/<variant>/unload")
@require_token
def unload(device_id: str, variant: str):
    return jsonify(cp().unload_variant(device_id, variant))


# -- telemetry ------------------------------------------------------------------------------
@api.post("/telemetry")
def telemetry():
    try:
        data = request.get_json(silent=True)
        n = cp().intake.add(data, time.time())
    except BadTelemetry as e:
        raise UserError(str(e)) from None
    cp().counters["telemetry_reports"] += 1
    return jsonify(accepted=n), 202


# -- settings, decisions, history -----------------------------------------------------------
@api.get("/settings")
def settings():
    c = cp().config
    return jsonify(families=cp().family_settings(), drained=cp().drained(),
                   controller={"auto": c.auto, "tick_s": c.tick_s, "dwell_s": c.dwell_s, "hysteresis": c.hysteresis,
                               "estimator": c.estimator, "policy": c.policy, "drain_s": c.drain_s,
                               "miss_rate_trigger": c.miss_rate_trigger})


@api.put("/settings/families/<family>")
@require_token
def update_family(family: str):
    return jsonify(cp().update_family(family, body_object()))


@api.put("/settings/controller")
@require_token
def update_controller():
    body = body_object()
    c = cp().config
    unknown = set(body) - {"auto", "estimator", "policy", "dwell_s", "hysteresis"}
    if unknown:
        raise UserError(f"unknown field {sorted(unknown)[0]!r} (allowed: auto, estimator, policy, dwell_s, hysteresis)")
    if "auto" in body:
        if not isinstance(body["auto"], bool):
            raise UserError("auto must be true or false")
        c.auto = body["auto"]
    if "estimator" in body:
        from orchestrator.controlplane.demand import ESTIMATORS
        if body["estimator"] not in ESTIMATORS:
            raise UserError(f"estimator must be one of {', '.join(ESTIMATORS)}, not {body['estimator']!r}")
        c.estimator = body["estimator"]
    if "policy" in body:
        if body["policy"] not in policies():
            raise UserError(f"policy must be one of {', '.join(policies())}, not {body['policy']!r}")
        c.policy = body["policy"]
    for key in ("dwell_s", "hysteresis"):
        if key in body:
            v = body[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise UserError(f"{key} must be a number >= 0, not {v!r}")
            setattr(c, key, float(v))
    cp().store.record_decision("settings", "controller: " + ", ".join(f"{k}={v}" for k, v in sorted(body.items())))
    cp().wake.set()
    return settings()


@api.get("/decisions")
def decisions():
    return jsonify(decisions=cp().store.decisions(int_arg("limit", 100, 1, 10000)))


@api.get("/history")
def history():
    since = int_arg("since", int(time.time()) - 600)
    fam = request.args.get("family")
    if fam is not None and fam not in cp().catalog.families():
        raise NotFound(f"unknown family {fam!r}; the catalog has {cp().families()}")
    return jsonify(history=cp().store.history(since=since, family=fam))


@api.get("/state")
def state():
    """Everything the dashboard shows, in one call."""
    plan = cp().plan
    now = time.time()
    return jsonify(
        now=now, cluster=cp().cluster.name, devices=cp().device_health(),
        plan=plan.to_dict() if plan else None,
        accuracy={v.name: v.accuracy for v in cp().catalog.variants.values()},
        families=cp().family_settings(), estimates=cp().estimates,
        controller={"auto": cp().config.auto, "estimator": cp().config.estimator, "policy": cp().config.policy,
                    "busy": cp().executor.busy, "clients": cp().intake.active_clients(now)},
        policies=policies(),
        decisions=cp().store.decisions(30),
        history=cp().store.history(since=int_arg("since", int(now) - 300)),
        switches=[d for d in cp().store.decisions(200, since=now - 3600) if d["kind"] in ("apply", "replan", "rollback")],
    )
