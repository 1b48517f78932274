"""The data plane's settings (`ShimConfig`): one object for the shim and the simulator, checked
where it is built."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.batching import HOLD_FACTOR, PERCENTILES
from orchestrator.batching import POLICIES as BATCHING_POLICIES  # the planner has POLICIES too
from orchestrator.routing import ROUTINGS


@dataclass(frozen=True)
class ShimConfig:
    """How requests are batched, routed and sent: the shim's settings (the simulator reads the
    batching, routing and pipeline ones; the rest are the live shim's)."""

    policy: str = "proteus"  # proteus | aimd | none (batching.py)
    percentile: str = "p95"  # which profiled latency the policy plans with
    slack_ms: float = 2.0  # margin for RPC overhead the profiles do not include
    max_hold_ms: float | None = None  # proteus: hold a queue at most this long (None: as the deadline allows)
    hold_factor: float = HOLD_FACTOR  # proteus: send a held batch while it could run this many times slower
    routing: str = "accuracy-first"  # accuracy-first | weighted (routing.py)
    pipeline: int = 1  # batches waiting at Triton per route beyond its instances (0: none)
    call_timeout_s: float = 30.0  # a Triton call taking longer fails (and may be retried)
    health_cooldown_s: float = 2.0  # a failed device is skipped this long
    poll_s: float = 1.0  # control-plane source: how often to fetch the plan
    telemetry_s: float = 1.0  # control-plane source: how often to post telemetry
    client_id: str = ""  # names this client in telemetry; default: a random id
    metrics_port: int | None = None  # serve Prometheus text at http://0.0.0.0:PORT/metrics

    def __post_init__(self) -> None:
        """Names are checked where the config is built, so every driver (the shim, the simulator)
        refuses the same typo."""
        for name, value, choices in (("policy", self.policy, BATCHING_POLICIES),
                                     ("percentile", self.percentile, PERCENTILES),
                                     ("routing", self.routing, ROUTINGS)):
            if value not in choices:
                raise ValueError(f"ShimConfig.{name} must be one of {', '.join(choices)}, not {value!r}")
