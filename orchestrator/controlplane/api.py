"""The REST API, version 1 (docs/openapi.yaml documents every route).

Reads are open; changes (solve with apply, apply, load/unload, settings) need the bearer token.
Telemetry intake is open to the shims on the network (it is validated and only counted).
Errors are JSON `{"error": "..."}` with a 4xx code a client can act on (see app.py).
"""

from __future__ import annotations

import json
import math
import re
import time

from flask import Blueprint, Response, current_app, jsonify, request

from orchestrator.controlplane.auth import require_token
from orchestrator.controlplane.intake import BadTelemetry
from orchestrator.controlplane.metrics import prometheus_text
from orchestrator.controlplane.planning import policies
from orchestrator.controlplane.service import ControlPlane, NotFound, parse_number, shown
from orchestrator.errors import UserError
from orchestrator.plan import Plan

api = Blueprint("api", __name__, url_prefix="/api/v1")
probes = Blueprint("probes", __name__)

MAX_DWELL_S = 86400.0  # a day


def cp() -> ControlPlane:
    return current_app.config["CONTROL_PLANE"]


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large")
    return value


def parse_json(data: bytes | str):
    """The one JSON parser for request bodies (app.py's JSON provider uses it too): strict JSON.

    NaN, Infinity and numbers a float cannot hold (1e999) are refused, so nothing non-finite gets
    into settings, plans or telemetry; so is nesting too deep for the parser. UserError (400)
    'malformed JSON: ...' names what is wrong."""
    try:
        return json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise UserError("malformed JSON: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, an integer of over 4300 digits
        raise UserError(f"malformed JSON: {' '.join(str(e).split())}") from None


def body_object(required: bool = True) -> dict:
    """The JSON object in the request body (empty body: {} unless required)."""
    data = request.get_data(cache=True)  # over MAX_CONTENT_LENGTH: 413 (app.py)
    if not data:
        if required:
            raise UserError("the request body must be a JSON object")
        return {}
    if not request.is_json:
        raise UserError(f"the request body must be JSON (Content-Type: application/json), "
                        f"not {shown(request.mimetype or 'no Content-Type')}")
    body = parse_json(data)
    if not isinstance(body, dict):
        raise UserError(f"the request body must be a JSON object, not {type(body).__name__}")
    return body


def refuse_unknown(body: dict, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise UserError(f"unknown field {shown(unknown[0])} (allowed: {', '.join(allowed)})")


_INTEGER = re.compile(r"[+-]?[0-9]{1,19}")


def int_arg(name: str, default: int, low: int = 0, high: int = 10**11) -> int:
    """An integer query parameter in low..high: '1.5', '1e3', 'inf' and the like are 400s."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if not _INTEGER.fullmatch(raw) or not low <= int(raw) <= high:
        raise UserError(f"query parameter {name!r} must be an integer in {low}..{high}, not {shown(raw)}")
    return int(raw)


# -- probes and metrics ---------------------------------------------------------------------
@probes.get("/healthz")
def healthz():
    return jsonify(status="ok", uptime_s=round(time.time() - cp().started_at, 1))


@probes.get("/readyz")
def readyz():
    """Ready while some device's Triton answers (the control plane plans around the others, which
    the body lists); 503 only when none does."""
    devices = cp().device_health()
    down = [d["id"] for d in devices if not d["live"]]
    if devices and len(down) == len(devices):
        return jsonify(status="not ready", error=f"Triton does not answer on any device ({', '.join(down)})",
                       down=down), 503
    return jsonify(status="degraded" if down else "ready", devices=len(devices), down=down,
                   plan_version=cp().plan.version if cp().plan else 0)


@probes.get("/metrics")
def metrics():
    return Response(prometheus_text(cp(), cp().device_health()), mimetype="text/plain; version=0.0.4")


# -- cluster and catalog --------------------------------------------------------------------
@api.get("/cluster")
def cluster():
    devices = cp().device_health()
    pools = cp().discovery.status() if cp().discovery is not None else []
    return jsonify(name=cp().cluster.name, devices=devices, healthy=all(d["live"] for d in devices), pools=pools)


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
    return cp().endpoints()


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
    refuse_unknown(body, ("demand", "slo_ms", "policy", "dry_run"))
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
    refuse_unknown(body, ("plan", "version"))
    if ("plan" in body) == ("version" in body):
        raise UserError("send exactly one of 'plan' (a plan object, e.g. from /solve) or 'version' (a stored plan)")
    if "version" in body:
        version = body["version"]
        if isinstance(version, bool) or not isinstance(version, int):
            raise UserError(f"version must be an integer, not {shown(version)}")
        plan = cp().store.plan(version)
        if plan is None:
            raise NotFound(f"there is no plan v{shown(version)}")
        reason = f"operator: re-apply plan v{version}"
    else:
        raw = body["plan"]
        if not isinstance(raw, dict):
            raise UserError(f"'plan' must be a plan object (e.g. from /solve), not {shown(raw)}")
        for key, kind, what in (("version", int, "an integer"), ("placements", list, "a list"),
                                ("families", dict, "an object"), ("solver", dict, "an object"),
                                ("notes", list, "a list")):  # what Plan.from_dict would coerce
            if key in raw and (not isinstance(raw[key], kind) or isinstance(raw[key], bool)):
                raise UserError(f"plan: {key} must be {what}, not {shown(raw[key])}")
        try:
            plan = Plan.from_dict(raw)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
            raise UserError(f"'plan' is not a plan object (missing or bad field {shown(str(e))})") from None
        cp().check_plan(plan)
        reason = "operator: apply"
    result = cp().apply(plan, reason=reason)
    return jsonify(plan=result.plan.to_dict(), result=result.to_dict())


# -- manual model control -------------------------------------------------------------------
@api.post("/devices/<device_id>/models/<variant>/load")
@require_token
def load(device_id: str, variant: str):
    body = body_object(required=False)
    refuse_unknown(body, ("instances", "threads"))
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
        n = cp().intake.add(body_object(), time.time())
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
    from orchestrator.controlplane.demand import ESTIMATORS, Estimator

    body = body_object()
    refuse_unknown(body, ("auto", "estimator", "policy", "dwell_s", "hysteresis"))
    changes = {}  # checked in full before any is made
    if "auto" in body:
        if not isinstance(body["auto"], bool):
            raise UserError(f"auto must be true or false, not {shown(body['auto'])}")
        changes["auto"] = body["auto"]
    for key, choices in (("estimator", list(ESTIMATORS)), ("policy", policies())):
        if key in body:
            if body[key] not in choices:  # a list: an unhashable value is just not in it
                raise UserError(f"{key} must be one of {', '.join(choices)}, not {shown(body[key])}")
            changes[key] = Estimator(body[key]) if key == "estimator" else body[key]
    if "dwell_s" in body:  # least seconds between two automatic changes of what is loaded
        changes["dwell_s"] = parse_number(body["dwell_s"], "dwell_s (seconds)", 0, MAX_DWELL_S)
    if "hysteresis" in body:  # re-plan when demand leaves planned x (1 +- hysteresis)
        changes["hysteresis"] = parse_number(body["hysteresis"], "hysteresis (a fraction of the planned demand)", 0, 1)
    c = cp().config
    for key, value in changes.items():
        setattr(c, key, value)
    cp().store.record_decision("settings", "controller: " + ", ".join(f"{k}={v}" for k, v in sorted(changes.items())))
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
        raise NotFound(f"unknown family {shown(fam)}; the catalog has {cp().families()}")
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
        clients=cp().intake.client_list(now),
        speed={"planned_with": cp().config.observed_speed, "rows": cp().speed.plan_rows(plan)},
        policies=policies(),
        decisions=cp().store.decisions(30),
        history=cp().store.history(since=int_arg("since", int(now) - 300)),
        switches=[d for d in cp().store.decisions(200, since=now - 3600) if d["kind"] in ("apply", "replan", "rollback")],
    )
