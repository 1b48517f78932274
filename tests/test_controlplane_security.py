"""The control plane's REST hardening (issue 14): bounded telemetry intake, 400s (never 500s) for
malformed or out-of-range input, only finite numbers in and out, security headers, 405's Allow,
and the OpenAPI spec saying what the server enforces.

Flask's test client over a ControlPlane with a StubRuntime (tests/controlplane_helpers.py: it
stands in for Triton, loads are instant), so these run in seconds without a Triton server.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from controlplane_helpers import TOKEN, stub_control_plane  # noqa: E402

from orchestrator.controlplane.app import create_app  # noqa: E402
from orchestrator.controlplane.controller import Controller  # noqa: E402
from orchestrator.controlplane.intake import FamilySecond  # noqa: E402

AUTH = {"Authorization": f"Bearer {TOKEN}"}
SPEC = yaml.safe_load((Path(__file__).parent.parent / "docs" / "openapi.yaml").read_text())
SECURITY_HEADERS = ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy")


@pytest.fixture
def cp():
    return stub_control_plane(auto=False)


@pytest.fixture
def client(cp):
    return create_app(cp).test_client()


def post_raw(client, path: str, data, method: str = "POST", headers=AUTH):
    return client.open(path, method=method, data=data, content_type="application/json", headers=headers)


def row(second: float, **counts) -> dict:
    return {"family": "resnet", "second": second, **counts}


def report(*rows) -> dict:
    return {"client_id": "test", "seconds": list(rows)}


# -- item 3: the telemetry intake is bounded -------------------------------------------------
def test_a_body_over_one_mib_is_413_with_a_json_error(client, cp):
    big = json.dumps(report(row(time.time() - 5, arrivals=1))).encode()[:-1] + b', "pad": "' + b"x" * (2 << 20) + b'"}'
    resp = post_raw(client, "/api/v1/telemetry", big, headers={})
    assert resp.status_code == 413 and "larger than" in resp.get_json()["error"]
    assert cp.intake.pending() == 0


@pytest.mark.parametrize("second, fragment", [
    (lambda now: now + 3600, "not within"),
    (lambda now: now - 7200, "not within"),
    (lambda now: 1e300, "not within"),
    (lambda now: -1e300, "not within"),
    (lambda now: "yesterday", "must be a Unix time"),
])
def test_rows_outside_the_time_window_are_refused_and_nothing_is_kept(client, cp, second, fragment):
    now = time.time()
    good = row(now - 5, arrivals=3, completions=3, met=3)
    resp = client.post("/api/v1/telemetry", json=report(good, row(second(now), arrivals=1)))
    assert resp.status_code == 400
    error = resp.get_json()["error"]
    assert error.startswith("seconds[1].second") and fragment in error
    assert cp.intake.pending() == 0, "a bad row must refuse the whole report, the good row included"


def test_unknown_families_are_refused_naming_the_family_and_the_catalog(client, cp):
    now = time.time()
    for family in ("zzz", "f999", "<script>alert(1)</script>"):
        resp = client.post("/api/v1/telemetry", json=report({"family": family, "second": now - 3, "arrivals": 1}))
        assert resp.status_code == 400
        error = resp.get_json()["error"]
        assert family in error and "resnet" in error
    assert cp.intake.pending() == 0
    assert "zzz" not in cp.estimates


@pytest.mark.parametrize("key", ["served", "served_met"])
def test_variants_must_be_the_familys(client, cp, key):
    resp = client.post("/api/v1/telemetry", json=report(
        row(time.time() - 3, arrivals=2, completions=2, met=2, **{key: {"resnet999": 1}})))
    assert resp.status_code == 400 and "resnet999" in resp.get_json()["error"]
    assert cp.intake.pending() == 0


@pytest.mark.parametrize("counts, fragment", [
    ({"arrivals": 10**30}, "seconds[0].arrivals must be an integer in 0..10000000"),
    ({"arrivals": 1e30}, "seconds[0].arrivals"),
    ({"completions": 10_000_001}, "seconds[0].completions"),
    ({"errors": -1}, "seconds[0].errors"),
    ({"arrivals": 1.5}, "seconds[0].arrivals"),
    ({"arrivals": True}, "seconds[0].arrivals"),
    ({"completions": 2, "met": 3}, "met (3) exceeds completions (2)"),
    ({"completions": 2, "met": 2, "served": {"resnet18": 3}}, "served counts 3 answers, more than completions"),
    ({"completions": 2, "met": 1, "served_met": {"resnet18": 2}}, "served_met counts 2 answers, more than met"),
])
def test_counts_are_bounded_integers_that_add_up(client, cp, counts, fragment):
    resp = client.post("/api/v1/telemetry", json=report(row(time.time() - 3, **counts)))
    assert resp.status_code == 400 and fragment in resp.get_json()["error"]
    assert cp.intake.pending() == 0
    Controller(cp).tick()  # the controller has nothing to choke on


def test_a_report_carries_at_most_1000_rows(client, cp):
    now = int(time.time())
    rows = [row(now - 3, arrivals=1, completions=1, met=1)] * 1001
    resp = client.post("/api/v1/telemetry", json=report(*rows))
    assert resp.status_code == 400 and "at most 1000 rows" in resp.get_json()["error"]
    assert client.post("/api/v1/telemetry", json=report(*rows[:1000])).get_json() == {"accepted": 1000}


def test_a_good_report_reaches_the_history(client, cp):
    now = time.time()
    good = row(int(now) - 4, arrivals=7, completions=6, met=5, deadline_misses=1,
               served={"resnet18": 6}, served_met={"resnet18": 5})
    resp = client.post("/api/v1/telemetry", json=report(good))
    assert resp.status_code == 202 and resp.get_json() == {"accepted": 1}
    Controller(cp).tick()
    history = client.get(f"/api/v1/history?since={int(now) - 10}").get_json()["history"]
    assert [(h["second"], h["arrivals"], h["met"], h["mix"]) for h in history] == [
        (int(now) - 4, 7, 5, {"resnet18": 6})]


def test_quiet_clients_and_stale_sums_are_forgotten(cp):
    now = time.time()
    for i in range(50):
        cp.intake.add({"client_id": f"c{i}", "seconds": [row(now - 5, arrivals=1)]}, now=now)
    assert len(cp.intake.clients) == 50 and cp.intake.pending() == 1
    later = now + 3700  # nobody flushed: an hour on, what the intake held is dropped
    cp.intake.add({"client_id": "late", "seconds": [row(later - 1, arrivals=1)]}, now=later)
    assert list(cp.intake.clients) == ["late"] and cp.intake.pending() == 1


def test_the_controller_tick_survives_whatever_the_intake_holds(cp):
    """Rows that bypass the intake's checks (as a bug or an older intake could leave them)."""
    second = int(time.time()) - 10
    junk = [FamilySecond("resnet", second, arrivals=10**30, completions=10**30, met=10**30,
                         deadline_misses=-5, served={"resnet18": 10**30, "nope": 3}, served_met={"resnet18": "x"}),
            FamilySecond("zzz", second, arrivals=4),
            FamilySecond("resnet", -10**30, arrivals=1)]
    cp.intake._open.update({(fs.family, fs.second): fs for fs in junk})
    Controller(cp).tick()  # must not raise (it did: OverflowError from SQLite)
    [h] = cp.store.history(since=0)
    assert h["second"] == second and h["family"] == "resnet"
    assert 0 < h["arrivals"] < 2**63 and h["misses"] == 0 and h["mix"] == {"resnet18": h["arrivals"]}
    assert cp.intake.pending() == 0


# -- item 4: 400s where 500s were ------------------------------------------------------------
@pytest.mark.parametrize("method, path", [
    ("POST", "/api/v1/telemetry"), ("POST", "/api/v1/solve"), ("PUT", "/api/v1/settings/families/resnet"),
    ("PUT", "/api/v1/settings/controller"), ("POST", "/api/v1/apply"),
])
def test_deeply_nested_json_is_400_malformed(client, method, path):
    resp = post_raw(client, path, "[" * 100_000 + "]" * 100_000, method=method)
    assert resp.status_code == 400 and resp.get_json() == {"error": "malformed JSON: nested too deeply"}


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_non_finite_numbers_are_400_malformed(client, cp, literal):
    body = '{"client_id": "t", "seconds": [{"family": "resnet", "second": %s, "arrivals": 1}]}' % literal
    resp = post_raw(client, "/api/v1/telemetry", body, headers={})
    assert resp.status_code == 400
    error = resp.get_json()["error"]
    assert error.startswith("malformed JSON:") and literal.lstrip("-") in error
    assert cp.intake.pending() == 0


def test_an_integer_of_5000_digits_is_400(client):
    resp = post_raw(client, "/api/v1/apply", '{"version": %s}' % ("9" * 5000))
    assert resp.status_code == 400 and resp.get_json()["error"].startswith("malformed JSON:")


@pytest.mark.parametrize("query", [
    "/api/v1/plans?limit=inf", "/api/v1/plans?limit=1.5", "/api/v1/plans?limit=0", "/api/v1/plans?limit=1001",
    "/api/v1/plans?limit=1e3", "/api/v1/decisions?limit=1e400", "/api/v1/decisions?limit=nan",
    "/api/v1/state?since=inf", "/api/v1/state?since=-1", "/api/v1/history?since=1.5",
    "/api/v1/history?since=99999999999999999999999",
])
def test_query_integers_that_are_not_integers_in_range_are_400(client, query):
    resp = client.get(query)
    name = re.search(r"\?(\w+)=", query).group(1)
    assert resp.status_code == 400 and f"query parameter {name!r} must be an integer in" in resp.get_json()["error"]


def test_plan_versions_beyond_64_bits_are_404(client):
    resp = client.get("/api/v1/plans/99999999999999999999")
    assert resp.status_code == 404 and "99999999999999999999" in resp.get_json()["error"]
    resp = client.post("/api/v1/apply", json={"version": 1180591620717411303424}, headers=AUTH)
    assert resp.status_code == 404 and "v1180591620717411303424" in resp.get_json()["error"]


def test_a_client_plan_is_checked_before_it_is_applied(client, cp):
    preview = client.post("/api/v1/solve", json={"demand": {"resnet": 5}}).get_json()["plan"]

    def mutated(change):
        plan = json.loads(json.dumps(preview))
        change(plan)
        return client.post("/api/v1/apply", json={"plan": plan}, headers=AUTH)

    resp = mutated(lambda p: p["placements"][0].update(capacity_rps=1e308))
    assert resp.status_code == 400 and "placements[0].capacity_rps" in resp.get_json()["error"]
    resp = mutated(lambda p: p["families"]["resnet"]["routes"][0].update(weight=5))
    assert resp.status_code == 400 and "weight" in resp.get_json()["error"]
    resp = mutated(lambda p: p["placements"][0].update(instances="two"))
    assert resp.status_code == 400 and "placements[0].instances" in resp.get_json()["error"]
    resp = mutated(lambda p: p["families"].update(bert=p["families"]["resnet"]))
    assert resp.status_code == 404 and "bert" in resp.get_json()["error"]
    resp = mutated(lambda p: p.update(placements=[]))
    assert resp.status_code == 400 and "do not load" in resp.get_json()["error"]
    resp = client.post("/api/v1/apply", json={"plan": preview, "force": True}, headers=AUTH)
    assert resp.status_code == 400 and "unknown field 'force'" in resp.get_json()["error"]
    assert cp.plan is None and not any(cp.runtime.models.values()), "a refused plan must change nothing"
    resp = client.post("/api/v1/apply", json={"plan": preview}, headers=AUTH)
    assert resp.status_code == 200 and cp.plan.version == 1


# -- item 5: settings are finite, and so is every response -----------------------------------
@pytest.mark.parametrize("path, body", [
    ("/api/v1/settings/families/resnet", '{"demand_override": NaN}'),
    ("/api/v1/settings/families/resnet", '{"slo_ms": Infinity}'),
    ("/api/v1/settings/controller", '{"dwell_s": NaN}'),
    ("/api/v1/settings/controller", '{"hysteresis": Infinity}'),
])
def test_nan_and_infinity_never_reach_the_settings(client, cp, path, body):
    before = client.get("/api/v1/settings").get_data()
    resp = post_raw(client, path, body, method="PUT")
    assert resp.status_code == 400 and resp.get_json()["error"].startswith("malformed JSON:")
    assert client.get("/api/v1/settings").get_data() == before


@pytest.mark.parametrize("path, body, fragment", [
    ("/api/v1/settings/controller", {"hysteresis": 1.5}, "hysteresis (a fraction of the planned demand) must be"),
    ("/api/v1/settings/controller", {"dwell_s": 86401}, "dwell_s (seconds) must be a number in 0..86400"),
    ("/api/v1/settings/controller", {"dwell_s": -1}, "dwell_s"),
    ("/api/v1/settings/families/resnet", {"demand_override": 1e8}, "demand_override of 'resnet'"),
    ("/api/v1/settings/families/resnet", {"slo_ms": 1e9}, "slo_ms of 'resnet'"),
    ("/api/v1/settings/families/resnet", {"accuracy_floor": {"value": 50, "colour": "red"}}, "'colour'"),
])
def test_numeric_settings_have_ranges(client, path, body, fragment):
    resp = client.put(path, json=body, headers=AUTH)
    assert resp.status_code == 400 and fragment in resp.get_json()["error"]


def test_a_bad_field_changes_no_setting(client, cp):
    resp = client.put("/api/v1/settings/families/resnet", json={"slo_ms": 300, "accuracy_floor": 140}, headers=AUTH)
    assert resp.status_code == 400 and "accuracy_floor" in resp.get_json()["error"]
    assert cp.slo_ms()["resnet"] == cp.config.default_slo_ms
    resp = client.put("/api/v1/settings/controller", json={"estimator": "ewma", "dwell_s": -1}, headers=AUTH)
    assert resp.status_code == 400 and cp.config.estimator == "peak"
    resp = client.put("/api/v1/settings/controller", json={"estimator": "ewma", "dwell_s": 30, "hysteresis": 0.5},
                      headers=AUTH)
    assert resp.status_code == 200 and (cp.config.estimator, cp.config.dwell_s, cp.config.hysteresis) == ("ewma", 30, 0.5)


def get_paths() -> list[str]:
    """Every GET path of the spec, with path parameters filled with the stub cluster's names."""
    names = {"device_id": "cpu0", "version": "1", "family": "resnet"}
    return [re.sub(r"{(\w+)}", lambda m: names[m.group(1)], path) for path, ops in SPEC["paths"].items()
            if "get" in ops]


def test_no_response_carries_nan_or_infinity(client, cp, monkeypatch):
    """A store written by an older version holds NaN settings; a solver may report an infinite gap."""
    import orchestrator.controlplane.planning as planning
    from dataclasses import replace

    cp.store.set_setting("demand_override", {"resnet": float("nan")})
    cp.store.set_setting("slo_ms", {"resnet": float("inf")})
    cp.store.set_setting("accuracy_floor", {"resnet": {"value": float("nan"), "kind": "variant"}})
    real = planning.solve_plan
    monkeypatch.setattr(planning, "solve_plan", lambda *a, **k: replace(
        (p := real(*a, **k)), solver=replace(p.solver, gap=math.inf)))
    resp = client.post("/api/v1/solve", json={"demand": {"resnet": 5}, "dry_run": False}, headers=AUTH)
    assert resp.status_code == 200 and resp.get_json()["plan"]["solver"]["gap"] == -1.0
    assert any("no finite gap" in n for n in resp.get_json()["plan"]["notes"])
    client.post("/api/v1/telemetry", json=report(row(int(time.time()) - 4, arrivals=3)))
    Controller(cp).tick()
    for path in get_paths():
        resp = client.get(path)
        assert resp.status_code in (200, 503), path
        text = resp.get_data(as_text=True)
        assert "NaN" not in text and "Infinity" not in text, path
        if resp.mimetype == "application/json":
            json.loads(text, parse_constant=lambda c: pytest.fail(f"{path} sent {c}"))


# -- item 7: security headers, CSP the page can live with, 405's Allow -----------------------
@pytest.mark.parametrize("method, path, status", [
    ("GET", "/", 200), ("GET", "/static/dashboard.js", 200), ("GET", "/api/v1/state", 200),
    ("GET", "/metrics", 200), ("GET", "/api/v1/nothing", 404), ("DELETE", "/api/v1/cluster", 405),
    ("POST", "/api/v1/apply", 401), ("POST", "/api/v1/solve", 400),
])
def test_every_response_carries_the_security_headers(client, method, path, status):
    resp = client.open(path, method=method, data="{" if method == "POST" else None, content_type="application/json")
    assert resp.status_code == status
    assert {h: resp.headers.get(h) for h in SECURITY_HEADERS[1:]} == {
        "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
    csp = dict(d.strip().split(" ", 1) for d in resp.headers["Content-Security-Policy"].split(";"))
    assert csp["default-src"] == "'self'" and csp["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in resp.headers["Content-Security-Policy"]


def test_the_dashboard_needs_nothing_the_policy_refuses(client):
    """No inline script, style or handler, nothing from another origin: `default-src 'self'` holds."""
    html = client.get("/").get_data(as_text=True)
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
    assert "<style" not in html and not re.search(r"\sstyle=", html) and not re.search(r"\son\w+=", html)
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    for name in ("dashboard.js", "charts.js"):
        script = client.get(f"/static/{name}").get_data(as_text=True)
        assert "eval(" not in script and "new Function" not in script and "innerHTML" not in script
        assert 'setAttribute("style"' not in script  # el.style.cssText (CSSOM) is allowed under the policy


def test_405_answers_carry_allow(client):
    resp = client.delete("/api/v1/cluster")
    assert resp.status_code == 405 and "GET" in resp.headers["Allow"]
    assert resp.get_json()["error"] == "method DELETE not allowed on this endpoint (allowed: GET)"
    resp = client.get("/api/v1/apply")
    assert resp.status_code == 405 and "POST" in resp.headers["Allow"] and resp.is_json


# -- the spec says what the server enforces --------------------------------------------------
def _operations():
    for path, ops in SPEC["paths"].items():
        for method, op in ops.items():
            yield path, method, op


def resolve(node):
    while isinstance(node, dict) and "$ref" in node:
        target = SPEC
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = target
    return node


def fill(path: str) -> str:
    return re.sub(r"{(\w+)}", lambda m: {"device_id": "cpu0", "variant": "resnet18", "family": "resnet",
                                         "version": "1"}[m.group(1)], path)


@pytest.mark.parametrize("path, method", [(p, m) for p, m, op in _operations()
                                          if resolve(op.get("requestBody", {}).get("content", {})
                                                     .get("application/json", {}).get("schema", {}))
                                          .get("additionalProperties") is False])
def test_bodies_the_spec_closes_refuse_unknown_fields(client, path, method):
    resp = client.open(fill(path), method=method.upper(), json={"zz_unknown": 1}, headers=AUTH)
    assert resp.status_code == 400 and "'zz_unknown'" in resp.get_json()["error"], resp.get_json()


@pytest.mark.parametrize("path, name, low, high", [
    (p, prm["name"], prm["schema"]["minimum"], prm["schema"]["maximum"]) for p, m, op in _operations()
    for prm in map(resolve, op.get("parameters", [])) if prm["in"] == "query" and prm["schema"]["type"] == "integer"])
def test_integer_query_bounds_are_the_specs(client, path, name, low, high):
    for value, status in ((low, 200), (high, 200), (low - 1, 400), (high + 1, 400), (f"{low}.5", 400)):
        assert client.get(f"{path}?{name}={value}").status_code == status, (name, value)


def test_every_operation_with_a_body_documents_413(client):
    with_body = [(p, m) for p, m, op in _operations() if "requestBody" in op]
    assert len(with_body) == 6
    assert all("413" in SPEC["paths"][p][m]["responses"] for p, m in with_body)


# -- bootstrap (issue 17 #9) ----------------------------------------------------------------
def test_a_fresh_control_plane_makes_its_first_plan_for_the_initial_demand():
    cp = stub_control_plane(initial_demand_rps=2.0)
    assert cp.plan is None
    reason = Controller(cp).tick()
    assert reason and "first plan" in reason and "initial demand" in reason, reason
    assert cp.plan is not None and cp.plan.families["resnet"].demand_rps == 2.0
    assert stub_control_plane().planning_demand() == {}  # without it, nothing to plan for until an operator's plan


def test_an_operator_s_plan_is_not_overridden_from_a_first_partial_second():
    cp = stub_control_plane(dwell_s=10.0, estimator="window")
    cp.apply(cp.solve(demand={"resnet": 12.0}), reason="operator")
    version = cp.plan.version
    controller = Controller(cp)
    now = int(time.time())
    # a client that started late in a second reports 2 of the 12 requests/s it sends
    cp.intake.add(report(row(now - 3, arrivals=2, completions=2, met=2, served={"resnet18": 2},
                             served_met={"resnet18": 2})), now=now)
    assert controller.tick() is None  # falling demand waits out the dwell from the operator's change
    assert cp.plan.version == version
