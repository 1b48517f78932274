"""The bursty load generator's in-process path (a shim `Client`; the gateway path, stock
tritonclient to a gateway, is tests/test_controlplane_e2e.py): every request sent is counted
once by its status and the variant that answered. No Triton: a FakeTransport answers."""

import time

from orchestrator import scenarios
from orchestrator.controlplane.loadgen import BurstyLoad
from orchestrator.controlplane.planning import solve_plan
from orchestrator.dataplane.transport import FakeTransport
from orchestrator.shim import Client

SC = scenarios.small_resnet(devices=2, slo_ms=300.0)


def test_bursty_load_through_a_shim_counts_every_answer_once():
    plan = solve_plan(SC.catalog, SC.cluster, SC.profiles, slo_ms={"resnet": 300.0}, demand_rps={"resnet": 5.0}, current=None,
                      policy="milp")
    client = Client(plan, {d.id: f"fake-{d.id}:1" for d in SC.cluster.devices}, catalog=SC.catalog,
                    profiles=SC.profiles, device_classes={d.id: d.device_class for d in SC.cluster.devices},
                    transport=lambda key, variant: FakeTransport(variant.outputs))
    load = BurstyLoad(client, "resnet", low_rps=100.0, high_rps=0.0, low_s=1.0, high_s=1.0, seed=1).start()
    time.sleep(1.5)  # the calm second, then half a second without arrivals
    load.stop(wait_s=10)
    client.close()
    assert load.sent > 20 and load.answered() == load.sent
    assert load.answers["ok"] + load.answers["late"] == load.sent, dict(load.answers)
    routed = {r.variant for r in plan.families["resnet"].routes}
    assert set(load.variants) <= routed and sum(load.variants.values()) == load.sent
