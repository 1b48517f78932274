"""Every REST endpoint of the control plane against real embedded Triton servers: success paths,
auth (401/403), bad payloads (400 with a message), unknown names (404), conflicts (409)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from controlplane_helpers import call, running_control_plane  # noqa: E402


@pytest.fixture(scope="module")
def server(model_repo):
    with running_control_plane(model_repo, controller=False) as s:
        yield s


@pytest.fixture
def url(server):
    return server.url


def test_probes_and_metrics(url):
    assert call(url + "/healthz")[0] == 200
    status, body = call(url + "/readyz")
    assert status == 200 and body["devices"] == 2
    status, body = call(url + "/metrics")
    assert status == 200
    assert "orchestrator_plan_version" in body["text"] and 'orchestrator_device_up{device="cpu0"} 1' in body["text"]


def test_cluster_devices_and_catalog(url):
    status, body = call(url + "/api/v1/cluster")
    assert status == 200 and [d["id"] for d in body["devices"]] == ["cpu0", "cpu1"]
    assert all(d["live"] and d["kind"] == "cpu" for d in body["devices"])
    assert call(url + "/api/v1/devices/cpu1")[1]["id"] == "cpu1"
    status, body = call(url + "/api/v1/devices/gpu9")
    assert status == 404 and "gpu9" in body["error"] and "cpu0" in body["error"]
    status, body = call(url + "/api/v1/catalog")
    assert status == 200 and body["families"]["resnet"][0] == "resnet18"


def test_no_plan_yet_is_503_for_shims(server, model_repo):
    # a control plane of its own (fresh store, so no plan to resume) over the module's Triton servers:
    # whatever the other tests applied, this one has no plan
    with running_control_plane(model_repo, runtime=server.runtime, controller=False) as fresh:
        assert fresh.cp.plan is None
        status, body = call(fresh.url + "/api/v1/plan", token=None)
    assert status == 503 and "no plan" in body["error"]
    assert set(body["endpoints"]) == {"cpu0", "cpu1"}


def loaded_now(server) -> dict[str, dict[str, str]]:
    return {d: dict(server.runtime.control(d).loaded()) for d in ("cpu0", "cpu1")}


def test_solve_dry_run_previews_without_changing_anything(server, url):
    loaded, plan = loaded_now(server), server.cp.plan
    stored, decisions = call(url + "/api/v1/plans")[1]["plans"], call(url + "/api/v1/decisions")[1]["decisions"]
    status, body = call(url + "/api/v1/solve", "POST", {"demand": {"resnet": 5}}, token=None)
    assert status == 200 and body["applied"] is False
    assert body["plan"]["families"]["resnet"]["demand_rps"] == 5
    # the preview's diff is against what the servers have: it loads exactly what they lack
    pairs = {(p["device_id"], p["variant"]) for p in body["plan"]["placements"]}
    assert {(p["device_id"], p["variant"]) for p in body["diff"]["load"]} == \
        pairs - {(d, v) for d, names in loaded.items() for v in names}
    # ... and the dry run loaded, unloaded, published and recorded nothing
    assert loaded_now(server) == loaded and server.cp.plan is plan
    assert call(url + "/api/v1/plans")[1]["plans"] == stored
    assert call(url + "/api/v1/decisions")[1]["decisions"] == decisions


@pytest.mark.parametrize("body, fragment", [
    ({"demand": {"resnet": -3}}, "demand of 'resnet'"),
    ({"demand": {"resnet": "many"}}, "demand of 'resnet'"),
    ({"slo_ms": {"resnet": 0}}, "slo_ms of 'resnet'"),
    ({"policy": "coin-flip"}, "unknown policy"),
    ({"dry_run": "yes"}, "dry_run"),
    ({"demnd": {"resnet": 3}}, "unknown field 'demnd'"),
])
def test_solve_bad_payloads_are_400_with_a_message(url, body, fragment):
    status, answer = call(url + "/api/v1/solve", "POST", body)
    assert status == 400 and fragment in answer["error"]


def test_solve_unknown_family_is_404(url):
    status, body = call(url + "/api/v1/solve", "POST", {"demand": {"bert": 3}})
    assert status == 404 and "bert" in body["error"]


def test_not_json_is_400(url):
    status, body = call(url + "/api/v1/apply", "POST", raw=b"{not json")
    assert status == 400 and "JSON" in body["error"]


@pytest.mark.parametrize("method, path", [
    ("POST", "/api/v1/apply"),
    ("POST", "/api/v1/devices/cpu0/models/resnet18/load"),
    ("POST", "/api/v1/devices/cpu0/models/resnet18/unload"),
    ("PUT", "/api/v1/settings/families/resnet"),
    ("PUT", "/api/v1/settings/controller"),
])
def test_mutations_need_the_token(url, method, path):
    status, body = call(url + path, method, {"x": 1}, token=None)
    assert status == 401 and "token" in body["error"]
    status, body = call(url + path, method, {"x": 1}, token="not-the-token")
    assert status == 403 and body["error"] == "wrong token"


def test_solve_and_apply_needs_the_token(url):
    status, _ = call(url + "/api/v1/solve", "POST", {"dry_run": False}, token=None)
    assert status == 401


def test_apply_payload_errors(url):
    assert call(url + "/api/v1/apply", "POST", {})[0] == 400
    status, body = call(url + "/api/v1/apply", "POST", {"version": 999})
    assert status == 404 and "v999" in body["error"]
    status, body = call(url + "/api/v1/apply", "POST", {"plan": {"version": 1}})
    assert status == 400 and "not a plan" in body["error"]


def test_apply_of_a_plan_naming_an_unknown_device_is_404(url):
    _, preview = call(url + "/api/v1/solve", "POST", {"demand": {"resnet": 5}})
    plan = preview["plan"]
    plan["placements"][0]["device_id"] = "tpu7"
    status, body = call(url + "/api/v1/apply", "POST", {"plan": plan})
    assert status == 404 and "tpu7" in body["error"]


def test_apply_publishes_for_shims_then_reapply_is_a_no_op(server, url):
    status, body = call(url + "/api/v1/solve", "POST", {"demand": {"resnet": 6}, "dry_run": False})
    assert status == 200 and body["applied"] and body["result"]["changed"]
    version = body["plan"]["version"]
    loaded = {d: set(server.runtime.control(d).loaded()) for d in ("cpu0", "cpu1")}
    for p in body["plan"]["placements"]:
        assert p["variant"] in loaded[p["device_id"]]

    status, published = call(url + "/api/v1/plan", token=None)
    assert status == 200 and published["plan"]["version"] == version
    assert set(published["endpoints"]) == {"cpu0", "cpu1"} and published["endpoints"]["cpu0"]["grpc"]
    assert published["catalog"]["variants"]

    status, again = call(url + "/api/v1/apply", "POST", {"version": version})
    assert status == 200 and again["result"]["changed"] is False and again["plan"]["version"] == version
    assert {d: set(server.runtime.control(d).loaded()) for d in ("cpu0", "cpu1")} == loaded
    assert call(url + "/api/v1/plans")[1]["plans"][0]["version"] == version
    assert call(url + f"/api/v1/plans/{version}")[1]["plan"]["version"] == version
    kinds = [d["kind"] for d in call(url + "/api/v1/decisions")[1]["decisions"]]
    assert kinds[:2] == ["hold", "apply"]


def test_manual_load_and_unload(server, url):
    free = next(d for d in ("cpu1", "cpu0") if "resnet50" not in server.runtime.control(d).loaded())
    assert call(url + f"/api/v1/devices/{free}/models/resnet99/load", "POST", {})[0] == 404
    assert call(url + "/api/v1/devices/cpu7/models/resnet50/load", "POST", {})[0] == 404
    status, body = call(url + f"/api/v1/devices/{free}/models/resnet50/load", "POST", {"instances": 0})
    assert status == 400 and "instances" in body["error"]
    status, body = call(url + f"/api/v1/devices/{free}/models/resnet50/load", "POST", {"instances": 1})
    assert status == 200 and body["ready"] is True
    assert "resnet50" in server.runtime.control(free).loaded()
    status, body = call(url + f"/api/v1/devices/{free}/models/resnet50/unload", "POST")
    assert status == 200 and "resnet50" not in server.runtime.control(free).loaded()
    status, body = call(url + f"/api/v1/devices/{free}/models/resnet50/unload", "POST")
    assert status == 404 and "not loaded" in body["error"]


def test_unloading_a_variant_that_carries_traffic_is_409(server, url):
    plan = server.cp.plan or pytest.fail("needs the plan applied above")
    route = next(r for f in plan.families.values() for r in f.routes)
    status, body = call(url + f"/api/v1/devices/{route.device_id}/models/{route.variant}/unload", "POST")
    assert status == 409 and "carries traffic" in body["error"]


def test_concurrent_apply_is_refused_with_409(server, url):
    server.cp.executor.drain_s = 4.0  # the first apply holds the lock while old routes drain
    try:
        # a policy whose plan hosts other models than the plan in force, so the first apply loads,
        # unloads and drains (a demand change alone may be absorbed by routing weights)
        hosted = {p.variant for p in server.cp.plan.placements}
        policy = "clipper-ht" if hosted != {"resnet18"} else "clipper-ha"
        results = {}
        first = threading.Thread(target=lambda: results.setdefault(
            "first", call(url + "/api/v1/solve", "POST", {"policy": policy, "dry_run": False})))
        first.start()
        deadline = time.monotonic() + 60
        while not server.cp.executor.busy and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.cp.executor.busy
        status, body = call(url + "/api/v1/apply", "POST", {"version": server.cp.plan.version})
        assert status == 409 and "in progress" in body["error"]
        first.join()
        assert results["first"][0] == 200 and results["first"][1]["result"]["diff"]["unload"]
    finally:
        server.cp.executor.drain_s = 0.2


def test_telemetry_intake(server, url):
    now = int(time.time())
    good = {"client_id": "t", "seconds": [{"family": "resnet", "second": now - 5, "arrivals": 4, "completions": 4,
                                           "met": 4, "deadline_misses": 0, "served": {"resnet18": 4}}]}
    status, body = call(url + "/api/v1/telemetry", "POST", good, token=None)
    assert status == 202 and body["accepted"] == 1
    bad = {"seconds": [{"family": "resnet", "second": now, "arrivals": -1}]}
    status, body = call(url + "/api/v1/telemetry", "POST", bad, token=None)
    assert status == 400 and "seconds[0].arrivals" in body["error"]
    status, body = call(url + "/api/v1/telemetry", "POST", [1, 2], token=None)
    assert status == 400


def test_family_settings(url):
    status, body = call(url + "/api/v1/settings/families/resnet", "PUT",
                        {"slo_ms": 450, "accuracy_floor": {"value": 70, "kind": "variant"}, "demand_override": 12})
    assert status == 200 and body == {"slo_ms": 450.0, "accuracy_floor": {"value": 70.0, "kind": "variant"},
                                      "demand_override": 12.0, "demand_floor": None}
    assert call(url + "/api/v1/settings")[1]["families"]["resnet"]["slo_ms"] == 450.0
    _, preview = call(url + "/api/v1/solve", "POST", {})
    assert preview["plan"]["families"]["resnet"]["demand_rps"] == 12.0
    assert all(r["variant"] != "resnet18" for r in preview["plan"]["families"]["resnet"]["routes"])  # floor 70 %
    status, body = call(url + "/api/v1/settings/families/resnet", "PUT",
                        {"slo_ms": 500, "accuracy_floor": None, "demand_override": None})
    assert status == 200 and body["accuracy_floor"] is None and body["demand_override"] is None
    assert call(url + "/api/v1/settings/families/bert", "PUT", {"slo_ms": 100})[0] == 404
    for bad in ({"slo_ms": -1}, {"accuracy_floor": 140}, {"demand_override": "lots"}, {"colour": "red"}):
        status, body = call(url + "/api/v1/settings/families/resnet", "PUT", bad)
        assert status == 400 and body["error"]


def test_demand_floor_raises_the_planned_demand_and_an_override_still_fixes_it(url):
    """`demand_floor` (the family's known peak): the planning demand is at least it; a demand
    override is not raised; null removes it; a bad value is a 400 naming the field and stores nothing."""
    status, body = call(url + "/api/v1/settings/families/resnet", "PUT", {"demand_floor": 25})
    assert status == 200 and body["demand_floor"] == 25.0 and body["demand_override"] is None
    assert call(url + "/api/v1/settings")[1]["families"]["resnet"]["demand_floor"] == 25.0
    _, preview = call(url + "/api/v1/solve", "POST", {})
    assert preview["plan"]["families"]["resnet"]["demand_rps"] == 25.0
    call(url + "/api/v1/settings/families/resnet", "PUT", {"demand_override": 5})
    _, preview = call(url + "/api/v1/solve", "POST", {})
    assert preview["plan"]["families"]["resnet"]["demand_rps"] == 5.0  # the operator's fixed demand wins
    for bad in (-1, "lots", 1e8, True):
        status, body = call(url + "/api/v1/settings/families/resnet", "PUT", {"demand_floor": bad, "slo_ms": 900})
        assert status == 400 and "demand_floor of 'resnet'" in body["error"], (bad, body)
    settings = call(url + "/api/v1/settings")[1]["families"]["resnet"]
    assert settings["demand_floor"] == 25.0 and settings["slo_ms"] != 900  # nothing half-stored
    status, body = call(url + "/api/v1/settings/families/resnet", "PUT", {"demand_floor": None, "demand_override": None})
    assert status == 200 and body["demand_floor"] is None and body["demand_override"] is None
    reasons = [d["reason"] for d in call(url + "/api/v1/decisions")[1]["decisions"]]
    assert any("plan for at least 25 rps" in r for r in reasons) and any("no demand floor" in r for r in reasons)


def test_controller_settings(url):
    status, body = call(url + "/api/v1/settings/controller", "PUT", {"auto": False, "estimator": "ewma"})
    assert status == 200 and body["controller"]["auto"] is False and body["controller"]["estimator"] == "ewma"
    status, body = call(url + "/api/v1/settings/controller", "PUT", {"estimator": "crystal-ball"})
    assert status == 400 and "estimator" in body["error"]


def test_history_decisions_and_state(url):
    assert call(url + "/api/v1/history?since=0")[0] == 200
    status, body = call(url + "/api/v1/history?since=yesterday")
    assert status == 400 and "since" in body["error"]
    assert call(url + "/api/v1/history?family=bert")[0] == 404
    status, body = call(url + "/api/v1/state")
    assert status == 200 and {"devices", "plan", "history", "decisions", "policies"} <= set(body)


def test_unknown_endpoint_and_method_answer_json(url):
    status, body = call(url + "/api/v1/nothing-here")
    assert status == 404 and "no such endpoint" in body["error"]
    status, body = call(url + "/api/v1/cluster", "DELETE")
    assert status == 405 and "not allowed" in body["error"]


def test_openapi_documents_every_route(server):
    import re

    import yaml

    from orchestrator.controlplane.app import create_app

    spec = yaml.safe_load((Path(__file__).parent.parent / "docs" / "openapi.yaml").read_text())
    app = create_app(server.cp)
    routes = {(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", r.rule), m.lower()) for r in app.url_map.iter_rules()
              for m in r.methods - {"HEAD", "OPTIONS"} if r.endpoint not in ("static", "dashboard")}
    documented = {(path, m) for path, ops in spec["paths"].items() for m in ops}
    assert routes == documented
