"""End to end: two embedded Triton servers, the control plane with its controller, a gateway
following it, and a demand step low -> high -> low sent to the gateway with stock tritonclient.
The controller must move traffic to cheaper variants during the high phase and back to accurate
ones after it, and no request may be lost across either switch (every request answered exactly
once, none with an error)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from controlplane_helpers import running_control_plane, synthetic_profiles  # noqa: E402

from orchestrator.catalog import Catalog  # noqa: E402
from orchestrator.controlplane.loadgen import BurstyLoad  # noqa: E402
from orchestrator.gateway.core import wait_ready  # noqa: E402
from orchestrator.gateway.server import GatewayServer  # noqa: E402

LOW_RPS, HIGH_RPS = 3.0, 28.0
LOW_S, HIGH_S = 20.0, 25.0


def routed_accuracy(plan, catalog: Catalog) -> float:
    """Accuracy of the plan's routes, weighted by traffic share."""
    fam = plan.families["resnet"]
    return sum(r.weight * catalog.variants[r.variant].accuracy for r in fam.routes)


def test_demand_step_moves_to_cheaper_variants_and_back_without_losing_requests(model_repo):
    catalog = Catalog.load(model_repo)
    # the forecast estimator follows the step down within seconds; the default (peak) would keep
    # the spike's capacity for its 5-minute window first (tests/test_controlplane_demand.py)
    with running_control_plane(model_repo, controller=True, dwell_s=3.0, drain_s=1.0, estimator="forecast") as server:
        cp = server.cp
        cp.apply(cp.solve(demand={"resnet": LOW_RPS}), reason="test: first plan")
        calm_accuracy = routed_accuracy(cp.plan, catalog)
        assert calm_accuracy > 76.0  # at low demand the planner serves with the accurate variants
        published: list[tuple[float, int, float]] = []  # (seconds into the run, version, routed accuracy)
        gateway = GatewayServer(server.url, http_port=0, grpc_port=0, profiles=synthetic_profiles(catalog), poll_s=0.5)
        load = BurstyLoad(gateway.grpc.url, "resnet", LOW_RPS, HIGH_RPS, low_s=LOW_S, high_s=HIGH_S, seed=3)
        try:
            assert wait_ready(gateway.gateway, 30.0), gateway.gateway.readiness()
            load.start()
            end = LOW_S + HIGH_S + LOW_S + 5.0
            while (elapsed := time.monotonic() - load.started) < end:
                plan = cp.plan
                if not published or published[-1][1] != plan.version:
                    published.append((elapsed, plan.version, routed_accuracy(plan, catalog)))
                time.sleep(0.2)
        finally:
            load.stop(wait_s=30)
            stats = gateway.gateway.client.stats()["counts"]
            gateway.close()
        during_spike = [acc for t, _, acc in published if LOW_S <= t < LOW_S + HIGH_S]
        # the calm after the spike: the load generator cycles, and its next spike starts at
        # 2 x LOW_S + HIGH_S, inside the last 5 s of the run
        after_spike = [acc for t, _, acc in published if LOW_S + HIGH_S <= t < 2 * LOW_S + HIGH_S]
        assert during_spike and min(during_spike) < calm_accuracy - 3, published  # cheaper variants under the spike
        assert after_spike and after_spike[-1] > min(during_spike) + 3, published  # and back after it
        # no request lost across the switches: every one answered exactly once, none failed
        assert load.sent > 0 and load.answered() == load.sent, (load.sent, dict(load.answers))
        assert load.answers["error"] == 0, dict(load.answers)
        assert stats.get("submitted") == load.sent
        kinds = [d["kind"] for d in cp.store.decisions(200)]
        assert kinds.count("replan") >= 2
