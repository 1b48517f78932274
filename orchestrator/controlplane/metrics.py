"""Prometheus metrics of the control plane (GET /metrics, text exposition format 0.0.4)."""

from __future__ import annotations

from orchestrator.controlplane.service import ControlPlane
from orchestrator.prometheus import metric_lines

PREFIX = "orchestrator"


def prometheus_text(cp: ControlPlane, devices: list[dict] | None = None) -> str:
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[dict, float]]) -> None:
        lines.extend(metric_lines(f"{PREFIX}_{name}", kind, help_text, samples))

    plan = cp.plan
    metric("plan_version", "gauge", "Version of the published plan (0: none).", [({}, plan.version if plan else 0)])
    families = plan.families if plan else {}
    metric("planned_demand_rps", "gauge", "Demand the published plan was made for.",
           [({"family": f}, fp.demand_rps) for f, fp in sorted(families.items())])
    metric("planned_capacity_rps", "gauge", "Throughput the published plan routes within the SLO.",
           [({"family": f}, fp.served_rps) for f, fp in sorted(families.items())])
    metric("planned_effective_accuracy_percent", "gauge", "Predicted effective accuracy of the published plan.",
           [({"family": f}, fp.effective_accuracy) for f, fp in sorted(families.items())])
    metric("demand_estimate_rps", "gauge", "The controller's demand estimate.",
           [({"family": f}, v) for f, v in sorted(cp.estimates.items())])
    metric("route_weight", "gauge", "Share of a family's traffic routed to a (device, variant).",
           [({"family": f, "device": r.device_id, "variant": r.variant}, r.weight)
            for f, fp in sorted(families.items()) for r in fp.routes])
    for key, help_text in (("applies", "Plan applies that finished (changed or not)."),
                           ("apply_failures", "Plan applies that failed and were rolled back."),
                           ("replans", "Automatic re-plans by the controller."),
                           ("telemetry_reports", "Telemetry reports received from shims.")):
        metric(f"{key}_total", "counter", help_text, [({}, cp.counters.get(key, 0))])
    if devices is not None:
        metric("device_up", "gauge", "1 when the device's Triton answers.",
               [({"device": d["id"]}, 1 if d["live"] else 0) for d in devices])
        metric("model_ready", "gauge", "1 for each variant a device's Triton has READY.",
               [({"device": d["id"], "variant": m["name"]}, 1) for d in devices for m in d["models"]
                if m["state"] == "READY"])
    return "\n".join(lines) + "\n"
