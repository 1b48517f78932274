"""The data plane's settings (`ShimConfig`): one object for the shim and the simulator, checked
where it is built, and the enums of its names."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.dataplane.batching import HOLD_FACTOR
from orchestrator.names import Choice


class Batching(Choice):
    """A route's batching policy (dataplane/batching.py `make_policy`)."""

    PROTEUS = "proteus"  # deadline-aware adaptive batching
    AIMD = "aimd"  # Clipper's additive-increase, multiplicative-decrease batch size
    NONE = "none"  # one request per call


class Routing(Choice):
    """How a family's requests are spread over its routes (dataplane/routing.py)."""

    ACCURACY_FIRST = "accuracy-first"  # most accurate route with room, spilling when it would be late
    WEIGHTED = "weighted"  # the plan's split, smooth weighted round-robin


class Percentile(Choice):
    """Which profiled latency a batching policy plans with."""

    P50 = "p50"
    P95 = "p95"
    P99 = "p99"


@dataclass(frozen=True)
class ShimConfig:
    """How requests are batched, routed and sent: the shim's settings (the simulator reads the
    batching, routing and pipeline ones; the rest are the live shim's)."""

    policy: Batching = Batching.PROTEUS
    percentile: Percentile = Percentile.P95
    slack_ms: float = 2.0  # margin for RPC overhead the profiles do not include
    max_hold_ms: float | None = None  # proteus: hold a queue at most this long (None: as the deadline allows)
    hold_factor: float = HOLD_FACTOR  # proteus: send a held batch while it could run this many times slower
    routing: Routing = Routing.ACCURACY_FIRST
    pipeline: int = 1  # batches waiting at Triton per route beyond its instances (0: none)
    call_timeout_s: float = 30.0  # a Triton call taking longer fails (and may be retried)
    deadline_margin_ms: float = 20.0  # a call is cut this long after the last deadline of its batch (serve_late: not)
    health_cooldown_s: float = 2.0  # a failed device is skipped this long
    poll_s: float = 1.0  # control-plane source: how often to fetch the plan
    plan_wait_s: float = 30.0  # control-plane source: how long `Client(url)` waits for a first plan
    telemetry_s: float = 1.0  # control-plane source: how often to post telemetry
    client_id: str = ""  # names this client in telemetry; default: its kind and a random id
    client_kind: str = "shim"  # what it is in telemetry and on the dashboard: "shim" or "gateway"
    metrics_port: int | None = None  # serve Prometheus text at http://0.0.0.0:PORT/metrics

    def __post_init__(self) -> None:
        """Names are checked (and made enums) where the config is built, so every driver (the
        shim, the simulator) refuses the same typo."""
        for name, kind in (("policy", Batching), ("percentile", Percentile), ("routing", Routing)):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, kind(value))
            except ValueError:
                raise ValueError(f"ShimConfig.{name} must be one of {', '.join(kind.choices())}, "
                                 f"not {value!r}") from None
        if self.client_kind not in ("shim", "gateway"):
            raise ValueError(f"ShimConfig.client_kind must be shim or gateway, not {self.client_kind!r}")
