"""One data plane, two drivers: the same plan installed in the shim (route workers over a fake
transport) and in the simulator builds the same routes (batch caps, policies, hold bounds,
lanes, latency models, spill routes) and makes the same routing decisions, across a plan change
that keeps some routes and adds others. No Triton: dataplane/transport.py's FakeTransport."""

import numpy as np
import pytest

from orchestrator import scenarios
from orchestrator.controlplane.planning import solve_plan
from orchestrator.dataplane.config import ShimConfig
from orchestrator.dataplane.routes import RouteSpec, batch_cap, plan_routes
from orchestrator.dataplane.routing import BudgetUseOf
from orchestrator.dataplane.status import Status
from orchestrator.dataplane.transport import FakeTransport
from orchestrator.plan import Placement
from orchestrator.dataplane.routing import static_plan
from orchestrator.shim import Client
from orchestrator.simulation.driver import Simulation
from orchestrator.simulator import SimConfig, Simulator
from orchestrator.trace import Trace

SLO_MS = 300.0
SC = scenarios.small_resnet(devices=2, slo_ms=SLO_MS)
CLASSES = {d.id: d.device_class for d in SC.cluster.devices}


def plan_for(demand_rps: float, current=None):
    return solve_plan(SC.catalog, SC.cluster, SC.profiles, slo_ms={"resnet": SLO_MS},
                      demand_rps={"resnet": demand_rps}, current=current, policy="milp")


def shim_driver(routing: str, transports: dict):
    def transport(key, variant):
        transports[(key.device_id, key.variant)] = FakeTransport(variant.outputs)
        return transports[(key.device_id, key.variant)]
    return Client(plan_for(5.0), {d: f"fake-{d}:1" for d in CLASSES}, catalog=SC.catalog, profiles=SC.profiles,
                  device_classes=CLASSES, transport=transport, config=ShimConfig(routing=routing))


def sim_driver(routing: str) -> Simulation:
    sim = Simulator(SC.catalog, SC.cluster, SC.profiles, {"resnet": SLO_MS}, SimConfig(shim=ShimConfig(routing=routing)))
    trace = Trace(np.array([0.0]), np.array(["resnet"], dtype=object), np.array([SLO_MS]))
    return Simulation(sim, trace, "milp", None, None)


def described(policy, model, cap: int, lanes: int, max_in_flight: int, spill: bool) -> dict:
    return {"policy": type(policy).__name__, "batch_cap": getattr(policy, "batch_cap", None), "cap": cap,
            "max_hold_s": getattr(policy, "max_hold_s", None), "slo_s": getattr(policy, "slo_s", None),
            "lanes": lanes, "max_in_flight": max_in_flight, "spill": spill,
            "latency_s": [round(model.seconds(b), 9) for b in range(1, cap + 1)]}


def shim_routes(client: Client) -> dict:
    return {pair: described(w.policy, w.model, w.batch_cap, w.instances, w.max_in_flight, w.spec.spill)
            for pair, w in client._routes.workers.items()}


def sim_routes(run: Simulation) -> dict:
    return {pair: described(r.policy, r.model, r.batch_cap, r.lanes, r.max_in_flight,
                            pair not in run.plan.routed_pairs())
            for pair, r in run.routes.items()}


def picks(route_of, n: int = 400) -> list:
    """n picks at 10 ms spacing, every route predicted on time at a tenth of its budget."""
    return [route_of(i * 0.01) for i in range(n)]


@pytest.mark.parametrize("routing", ["accuracy-first", "weighted"])
def test_the_shim_and_the_simulator_build_the_same_routes_and_route_alike(routing):
    transports: dict = {}
    client = shim_driver(routing, transports)
    run = sim_driver(routing)
    try:
        for step, demand in enumerate((5.0, 30.0, 30.0)):  # a first plan, a bigger one, a re-publish
            plan = plan_for(demand, current=client.plan if step else None)
            client.set_plan(plan)
            run._install(plan, 0.0, None, 0, 0, "test")
            shim, sim = shim_routes(client), sim_routes(run)
            assert shim == sim, f"plan {step}: the drivers built different routes"
            if routing == "accuracy-first" and step == 1:
                assert any(r["spill"] for r in shim.values()), "the test needs a plan with a spill route"
            table = client._routes.table
            shim_picks = picks(lambda t: (lambda r: (r.device_id, r.variant))(
                table.pick("resnet", now=t, budget_use=lambda route: 0.1)))
            picker, live, _ = run.pickers["resnet"]
            sim_picks = picks(lambda t: live[picker.pick_at(t, None, BudgetUseOf(lambda k: 0.1))].key)
            assert shim_picks == sim_picks, f"plan {step}: the drivers routed differently"
    finally:
        client.close()


def test_requests_through_the_fake_transport_are_answered_once_on_the_routes_picked():
    transports: dict = {}
    client = shim_driver("accuracy-first", transports)
    image = np.zeros((3, 224, 224), np.float32)
    try:
        results = [client.infer_async("resnet", image, deadline_ms=5000.0) for _ in range(40)]
        answered = [f.result(timeout=30) for f in results]
    finally:
        client.close()
    assert all(r.status is Status.OK and r.output.shape == (1000,) for r in answered)
    sent = {pair: sum(t.batches) for pair, t in transports.items()}
    served = {}
    for r in answered:
        served[(r.device_id, r.variant)] = served.get((r.device_id, r.variant), 0) + 1
    assert {p: n for p, n in sent.items() if n} == served  # every request went out once, on its route


def test_a_request_late_on_every_route_is_answered_dropped_at_once_unless_it_asks_to_be_served_late():
    """Load shedding (routing.py): a deadline no route can meet by its predicted answer time (5 ms,
    where the profiles give ResNet-18 tens of ms) is answered dropped at once and sent nowhere;
    with serve_late it is sent to the route that would answer soonest."""
    transports: dict = {}
    client = shim_driver("accuracy-first", transports)
    image = np.zeros((3, 224, 224), np.float32)
    try:
        shed = client.infer("resnet", image, deadline_ms=5.0)
        sent_before = sum(sum(t.batches) for t in transports.values())
        served = client.infer_async("resnet", image, deadline_ms=5.0, serve_late=True).result(timeout=30)
        counts = client.stats()["counts"]
    finally:
        client.close()
    assert shed.status is Status.DROPPED and not shed.outputs and shed.variant == ""
    assert "would answer after the 5 ms deadline" in shed.error and shed.latency_ms == 0.0
    assert sent_before == 0  # nothing went to a device
    assert served.status in (Status.OK, Status.LATE) and served.variant == "resnet18"  # the fastest route
    assert sum(sum(t.batches) for t in transports.values()) == 1
    assert counts["dropped"] == 1 and counts["answered"] == 2


def test_a_failed_batch_is_an_error_result_not_a_hang():
    transports: dict = {}
    plan = static_plan({"resnet": [("cpu0", "resnet18", 1)]}, batch_cap=4)

    def transport(key, variant):
        t = transports[key.device_id] = FakeTransport(variant.outputs)
        t.fail = RuntimeError("device gone")
        return t
    client = Client(plan, {"cpu0": "fake:1"}, catalog=SC.catalog, transport=transport)
    try:
        result = client.infer("resnet", np.zeros((3, 224, 224), np.float32))
    finally:
        client.close()
    assert result.status is Status.ERROR and "device gone" in result.error


def test_a_call_that_outlives_its_deadline_is_cut_there_and_answered_as_a_miss():
    # a hung device answers after 3 s; the request's 200-ms deadline ends the call at 200 ms + the margin
    plan = static_plan({"resnet": [("cpu0", "resnet18", 1)]}, batch_cap=4)
    client = Client(plan, {"cpu0": "fake:1"}, catalog=SC.catalog,
                    transport=lambda key, variant: FakeTransport(variant.outputs, latency_s=lambda n: 3.0))
    try:
        cut = client.infer("resnet", np.zeros((3, 224, 224), np.float32), deadline_ms=200.0)
        late = client.infer_async("resnet", np.zeros((3, 224, 224), np.float32), deadline_ms=200.0, serve_late=True)
        served_late = late.result(timeout=10)
    finally:
        client.close()
    assert cut.status is Status.DROPPED and "Deadline Exceeded" in cut.error  # a missed deadline
    assert cut.latency_ms < 1500  # not the 3 s the device took
    assert served_late.status is Status.LATE and served_late.latency_ms >= 3000  # asked to be served late: not cut


def test_route_specs_cover_caps_spill_and_unknown_names():
    plan = plan_for(30.0)
    specs = plan_routes(plan, SC.catalog, "accuracy-first")
    weighted_only = plan_routes(plan, SC.catalog, "weighted")
    assert set(weighted_only) == plan.routed_pairs() and set(weighted_only) <= set(specs)
    assert all(s.spill == (k not in plan.routed_pairs()) for k, s in specs.items())
    v = SC.catalog.variants["resnet18"]
    assert batch_cap(None, v) == (v.max_batch_size or 8)
    assert batch_cap(Placement("cpu0", "resnet18", 10_000), v) == v.max_batch_size
    spec = RouteSpec("cpu0", "resnet18", Placement("cpu0", "resnet18", 4, instances=2), 4, SLO_MS, False)
    assert spec.keeps(Placement("cpu0", "resnet18", 8, instances=2)) and not spec.keeps(Placement("cpu0", "resnet18", 4))
    with pytest.raises(ValueError, match=r"device\(s\) \['cpu0'\] without an endpoint"):
        plan_routes(plan, SC.catalog, "weighted", endpoints={"cpu1"})
