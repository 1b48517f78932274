"""Batch latency of one (variant, device class) from its profiles: what a batching policy
predicts with, and what the simulator's device model draws service times from."""

from __future__ import annotations

from collections.abc import Iterable

from orchestrator.profiles import ProfileRecord

PERCENTILES = ("p50", "p95", "p99")  # the profiled latencies a model can be built from (config.Percentile)


class LatencyModel:
    """Batch latency of one (variant, device class): batch size -> milliseconds.

    Linear interpolation between measured batch sizes; below the smallest measured size the
    smallest's latency; above the largest, the slope of the last two points (one point: latency
    proportional to batch size). A model with ``learn=True`` updates its points from observed
    batch latencies (exponentially weighted), for routes without profiles. A model with no
    points is *unknown*: `ProteusPolicy` then sends at once instead of holding.
    """

    def __init__(self, points_ms: dict[int, float] | None = None, *, learn: bool = False, alpha: float = 0.2):
        self.points_ms: dict[int, float] = dict(points_ms or {})
        self.learn = learn
        self.alpha = alpha
        self._sorted: list[tuple[int, float]] = sorted(self.points_ms.items())
        self.revision = 0  # bumped whenever the points change (users may cache predictions per revision)
        self._seconds: list[float] = []  # [batch size] -> seconds(batch size), for this revision (-1: not yet)

    @property
    def known(self) -> bool:
        return bool(self._sorted)

    def ms(self, batch_size: int) -> float:
        """Predicted latency in ms of a batch (0.0 when the model is unknown)."""
        pts = self._sorted
        if not pts:
            return 0.0
        if batch_size <= pts[0][0]:
            return pts[0][1]
        if len(pts) == 1:
            return pts[0][1] * batch_size / pts[0][0]
        for (b0, y0), (b1, y1) in zip(pts, pts[1:]):
            if batch_size <= b1:
                return y0 + (y1 - y0) * (batch_size - b0) / (b1 - b0)
        (b0, y0), (b1, y1) = pts[-2], pts[-1]
        slope = max(0.0, (y1 - y0) / (b1 - b0))
        return y1 + slope * (batch_size - b1)

    def seconds(self, batch_size: int) -> float:
        """`ms` in seconds, cached per batch size (asked per request by the on-time prediction)."""
        if batch_size < 0:
            return self.ms(batch_size) / 1000.0
        cache = self._seconds
        if batch_size < len(cache):
            s = cache[batch_size]
            if s >= 0.0:
                return s
        else:
            cache.extend([-1.0] * (batch_size + 1 - len(cache)))
        s = cache[batch_size] = self.ms(batch_size) / 1000.0
        return s

    def observe(self, batch_size: int, latency_ms: float) -> None:
        """Fold in one observed batch latency (only when the model learns)."""
        if not self.learn:
            return
        old = self.points_ms.get(batch_size)
        self.points_ms[batch_size] = latency_ms if old is None else old + self.alpha * (latency_ms - old)
        self._sorted = sorted(self.points_ms.items())
        self.revision += 1
        self._seconds = []

    @classmethod
    def learned(cls) -> "LatencyModel":
        return cls(learn=True)

    @classmethod
    def from_profiles(cls, records: Iterable[ProfileRecord], percentile: str = "p95", *,
                      instances: int | None = None, threads: int | None = None) -> "LatencyModel":
        """Model from the profile records of one (variant, device class).

        When records were measured under several (instances, threads) configurations, the one
        matching `instances`/`threads` is used if present, otherwise the most measured one.
        """
        if percentile not in PERCENTILES:
            raise ValueError(f"percentile must be one of {PERCENTILES}, got {percentile!r}")
        records = list(records)
        if not records:
            return cls()
        configs: dict[tuple[int, int], list[ProfileRecord]] = {}
        for r in records:
            configs.setdefault((r.instances, r.threads), []).append(r)
        wanted = (instances, threads)
        chosen = configs.get(wanted) or max(configs.values(), key=len)  # type: ignore[arg-type]
        return cls({r.batch_size: getattr(r, f"{percentile}_ms") for r in chosen})

