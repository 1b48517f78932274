"""Client shim behaviour that needs no model: input checks, unreachable devices, the control-plane source.

Live tests against real tritonserver processes are in tests/test_shim_live.py.
"""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from orchestrator.catalog import Catalog, TensorSpec, Variant
from orchestrator.dataplane.routing import static_plan
from orchestrator.dataplane.transport import FakeTransport
from orchestrator.shim import Client
from orchestrator.shim.inputs import check_inputs
from orchestrator.shim.plan_source import Endpoint, NoPlanYet, parse_endpoints

SPEC_IN = (TensorSpec("input", "FP32", (3, 224, 224)),)
SPEC_OUT = (TensorSpec("logits", "FP32", (1000,)),)


def variant(name: str) -> Variant:
    return Variant(family="resnet", name=name, accuracy=70.0, accuracy_source="test", accuracy_nominal=True,
                   weights="random(seed=0)", params=1, flops=1, onnx_bytes=1, max_batch_size=32,
                   inputs=SPEC_IN, outputs=SPEC_OUT)


CATALOG = Catalog({v: variant(v) for v in ("resnet18", "resnet50")})
IMAGE = np.zeros((3, 224, 224), np.float32)


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dead_client():
    """A client whose two devices both refuse connections."""
    plan = static_plan({"resnet": [("cpu0", "resnet18", 3), ("cpu1", "resnet50", 1)]}, batch_cap=4)
    client = Client(plan, {"cpu0": f"127.0.0.1:{closed_port()}", "cpu1": f"127.0.0.1:{closed_port()}"},
                    catalog=CATALOG)
    yield client
    client.close()


# --- inputs ----------------------------------------------------------------------------------

def test_check_inputs_accepts_one_sample_with_or_without_batch_dim():
    arrays, batched = check_inputs("resnet18", SPEC_IN, IMAGE)
    assert arrays["input"].shape == (3, 224, 224) and not batched
    arrays, batched = check_inputs("resnet18", SPEC_IN, {"input": IMAGE[None]})
    assert arrays["input"].shape == (3, 224, 224) and batched


@pytest.mark.parametrize("inputs, message", [
    (np.zeros((224, 224, 3), np.float32), r"expected shape \(3, 224, 224\) \(or \(1, 3, 224, 224\)\), got \(224, 224, 3\)"),
    (np.zeros((2, 3, 224, 224), np.float32), r"got \(2, 3, 224, 224\)"),
    (np.zeros((3, 224, 224), np.float64), r"expected dtype float32 \(FP32\), got float64"),
    ({"image": IMAGE}, r"expects inputs \['input'\], got \['image'\]"),
    ([1, 2, 3], r"numpy array or a dict"),
])
def test_client_rejects_wrong_inputs_with_expected_and_got(dead_client, inputs, message):
    with pytest.raises(ValueError, match=message):
        dead_client.infer("resnet", inputs)
    assert dead_client.stats()["counts"].get("submitted", 0) == 0  # nothing was queued


def test_a_failed_call_is_retried_on_a_warm_spare_when_only_spill_routes_are_left():
    """The plan routes everything to cpu0 and keeps resnet18 standing by on cpu1 (weight 0):
    when cpu0 lost the model (restarted), its requests are answered by the spare, not errors."""
    plan = static_plan({"resnet": [("cpu0", "resnet18", 1), ("cpu1", "resnet18", 0)]}, batch_cap=4, slo_ms=1000)
    transports = {}

    def transport(key, var):
        transports[key.device_id] = FakeTransport(var.outputs, latency_s=lambda n: 0.01)
        return transports[key.device_id]
    # sent at once (no batching): with a batching policy a lone request waits for a batch until
    # just before its deadline, and under CPU load it came back late, or dropped for lack of time
    client = Client(plan, {"cpu0": "127.0.0.1:1", "cpu1": "127.0.0.1:2"}, catalog=CATALOG, transport=transport,
                    policy="none")
    try:
        transports["cpu0"].fail = RuntimeError("Request for unknown model: 'resnet18' has no available versions")
        results = [client.infer("resnet", IMAGE, deadline_ms=1000) for _ in range(6)]
    finally:
        client.close()
    assert {r.device_id for r in results} == {"cpu1"}, results
    for r in results:  # answered, on time or late as measured
        assert r.status == ("ok" if r.latency_ms <= 1000 else "late"), r
    assert client.stats()["counts"]["retries"] >= 1


def test_unknown_family_and_bad_deadline_are_value_errors(dead_client):
    with pytest.raises(ValueError, match=r"unknown family 'vit'; plan version 1 serves \['resnet'\]"):
        dead_client.infer("vit", IMAGE)
    with pytest.raises(ValueError, match="deadline_ms must be > 0"):
        dead_client.infer("resnet", IMAGE, deadline_ms=0)


def test_plan_needs_endpoints_and_catalog_entries_for_its_routes():
    plan = static_plan({"resnet": [("cpu0", "resnet18", 1), ("cpu9", "resnet152", 1)]})
    with pytest.raises(ValueError, match=r"device\(s\) \['cpu9'\] without an endpoint"):
        Client(plan, {"cpu0": "127.0.0.1:1"}, catalog=CATALOG)
    with pytest.raises(ValueError, match=r"variant\(s\) \['resnet152'\] the catalog lacks"):
        Client(plan, {"cpu0": "127.0.0.1:1", "cpu9": "127.0.0.1:2"}, catalog=CATALOG)


# --- failures --------------------------------------------------------------------------------

def test_unreachable_devices_are_retried_once_then_fail_naming_the_device(dead_client):
    results = [dead_client.infer("resnet", IMAGE) for _ in range(4)]
    for r in results:
        assert r.status == "error" and r.outputs is None
        assert "unreachable" in r.error
        assert r.error.startswith(f"device {r.device_id} at 127.0.0.1:")
        assert "devices tried: " in r.error  # it was retried on the other device first
    counts = dead_client.stats()["counts"]
    assert counts["submitted"] == counts["answered"] == counts["error"] == 4
    assert counts["retries"] == 4
    assert "duplicates" not in counts
    assert dead_client.telemetry.totals()["resnet"]["errors"] == 4


def test_closed_client_refuses_requests(dead_client):
    dead_client.close()
    dead_client.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        dead_client.infer("resnet", IMAGE)


# --- the control-plane source ----------------------------------------------------------------

class FakeControlPlane:
    """A real HTTP server speaking the control plane's two shim endpoints (docs/shim.md)."""

    def __init__(self, body: dict):
        self.body = body
        self.no_plan_for = 0  # answer this many plan fetches as a fresh control plane does (503, no plan yet)
        self.posts: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                data = json.dumps(outer.body).encode()
                status = 200 if self.path == "/api/v1/plan" else 404
                if status == 200 and outer.no_plan_for > 0:
                    outer.no_plan_for -= 1
                    status, data = 503, json.dumps({"error": "no plan has been applied yet", "plan": None}).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                outer.posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_parse_endpoints_takes_strings_and_objects():
    eps = parse_endpoints({"a": "grpc://h:1", "b": {"grpc": "h:2", "http": "h:3", "device_class": "cpu-1t"}})
    assert eps == {"a": Endpoint("h:1"), "b": Endpoint("h:2", "h:3", "cpu-1t")}
    with pytest.raises(ValueError, match="endpoint of device 'c'"):
        parse_endpoints({"c": {"http": "h:3"}})


def test_parse_endpoints_takes_a_remote_grpc_device_without_http():
    # a cluster device given as grpc://host:port is published with "http": null (openapi.yaml allows it)
    assert parse_endpoints({"r": {"grpc": "h:2", "http": None, "device_class": None}}) == {"r": Endpoint("h:2")}


def test_client_follows_the_control_plane_plan_and_posts_telemetry():
    plan1 = static_plan({"resnet": [("cpu0", "resnet18", 1)]}, version=1)
    body = {"plan": plan1.to_dict(), "endpoints": {"cpu0": {"grpc": f"127.0.0.1:{closed_port()}", "http": ""}},
            "catalog": {"variants": [v.to_dict() for v in CATALOG.variants.values()]}}
    cp = FakeControlPlane(body)
    try:
        client = Client(cp.url, poll_s=0.05, telemetry_s=0.05)
        assert client.plan.version == 1
        assert client.infer("resnet", IMAGE).status == "error"  # the device is down: counted, reported
        plan2 = static_plan({"resnet": [("cpu1", "resnet50", 1)]}, version=2)
        cp.body = {**body, "plan": plan2.to_dict(),
                   "endpoints": {"cpu1": {"grpc": f"127.0.0.1:{closed_port()}"}}}
        for _ in range(200):
            if client.plan.version == 2:
                break
            threading.Event().wait(0.02)
        assert client.plan.version == 2
        assert client.infer("resnet", IMAGE).device_id == "cpu1"
        # a plan set by hand lasts until the next poll: the client follows what is published
        client.set_plan(static_plan({"resnet": [("cpu1", "resnet50", 1)]}, version=7))
        for _ in range(200):
            if client.plan.version == 2:
                break
            threading.Event().wait(0.02)
        assert client.plan.version == 2
        client.close()
        seconds = [row for post in cp.posts for row in post["seconds"]]
        assert sum(row["arrivals"] for row in seconds) == 2
        assert sum(row["errors"] for row in seconds) == 2
        assert all(post["client_id"] == client.client_id for post in cp.posts)
    finally:
        cp.close()


def test_unreachable_control_plane_is_a_connection_error():
    with pytest.raises(ConnectionError, match=r"control plane http://127.0.0.1:\d+/api/v1/plan"):
        Client(f"http://127.0.0.1:{closed_port()}", plan_wait_s=0.0)


def test_a_client_waits_for_a_fresh_control_plane_s_first_plan_and_says_why_when_none_comes():
    plan = static_plan({"resnet": [("cpu0", "resnet18", 1)]}, version=1)
    body = {"plan": plan.to_dict(), "endpoints": {"cpu0": {"grpc": f"127.0.0.1:{closed_port()}", "http": None}},
            "catalog": {"variants": [v.to_dict() for v in CATALOG.variants.values()]}}
    cp = FakeControlPlane(body)
    try:
        cp.no_plan_for = 3  # the first plan arrives on the fourth fetch
        client = Client(cp.url, poll_s=0.05, plan_wait_s=10.0)
        assert client.plan.version == 1
        client.close()
        cp.no_plan_for = 10**6
        with pytest.raises(NoPlanYet, match="503 no plan has been applied yet"):
            Client(cp.url, poll_s=0.05, plan_wait_s=0.3)
    finally:
        cp.close()
