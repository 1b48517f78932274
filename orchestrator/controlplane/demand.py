"""Demand estimators: from a per-second arrival series to the request rate the planner should plan for.

Four, pluggable by name (`make_estimator`):
  window    windowed mean rate over the last `window_s` seconds (Model-Switching's monitor);
  ewma      exponentially weighted moving average (Proteus's demand estimate);
  forecast  linear trend over the recent window, projected `horizon_s` ahead, where the horizon is
            how long a plan change takes (MArk's look-ahead), so that planning leads a rising spike
            instead of trailing it. It never plans below the current windowed rate;
  peak      the highest short-term (`smooth_s`) mean rate seen over the last `window_s` seconds:
            plans for the bursts the recent past had rather than the mean between them (MArk's
            provisioning for the burst, not the average), so a burst shorter than the control
            loop's reaction time (seconds: telemetry, re-plan, model loads) meets capacity that
            is already there. It costs little accuracy between bursts when the shims route
            accuracy-first (routing.py), and decays once the window holds no burst. The window
            is 5 minutes, the default scale-down stabilisation window of Kubernetes' autoscaler:
            with 30 s, the first live run scaled down between bursts 40-90 s apart and met
            each next burst with a plan for the calm (docs/results.md).
Each estimator sees one family's series: `observe(second, arrivals)` for every second (missing
seconds count as zero arrivals), `estimate()` for the rate.
"""

from __future__ import annotations

from collections import deque

from orchestrator.names import Choice


class Estimator(Choice):
    """A demand estimator's name (`make_estimator`)."""

    WINDOW = "window"
    EWMA = "ewma"
    FORECAST = "forecast"
    PEAK = "peak"


ESTIMATORS = Estimator.choices()  # for argparse choices and error messages


class WindowedRate:
    name = "window"

    def __init__(self, window_s: int = 5):
        self.window_s = window_s
        self.samples: deque[tuple[int, float]] = deque(maxlen=max(window_s, 2))

    def observe(self, second: int, arrivals: float) -> None:
        self.samples.append((second, float(arrivals)))

    def estimate(self) -> float:
        if not self.samples:
            return 0.0
        recent = list(self.samples)[-self.window_s:]
        return sum(a for _, a in recent) / len(recent)


class Ewma:
    name = "ewma"

    def __init__(self, alpha: float = 0.3):
        self.alpha = alpha
        self.value: float | None = None

    def observe(self, second: int, arrivals: float) -> None:
        self.value = float(arrivals) if self.value is None else self.alpha * arrivals + (1 - self.alpha) * self.value

    def estimate(self) -> float:
        return self.value or 0.0


class LinearForecast:
    """Least-squares trend over the window, projected `horizon_s` ahead (at most MAX_HORIZON_S),
    never below the last 3 s' rate nor above MAX_GROWTH x the window's peak."""

    name = "forecast"
    MAX_HORIZON_S = 5.0
    MAX_GROWTH = 1.5

    def __init__(self, window_s: int = 8, horizon_s: float = 3.0):
        self.window_s = window_s
        self.horizon_s = horizon_s  # updated by the controller to the measured plan-change time
        self.samples: deque[tuple[int, float]] = deque(maxlen=window_s)

    def observe(self, second: int, arrivals: float) -> None:
        self.samples.append((second, float(arrivals)))

    def estimate(self) -> float:
        n = len(self.samples)
        if n == 0:
            return 0.0
        xs = [s for s, _ in self.samples]
        ys = [a for _, a in self.samples]
        mean_y = sum(ys) / n
        # the last few seconds' rate: the floor of the forecast (a falling trend does not under-plan)
        recent = sum(ys[-3:]) / len(ys[-3:])
        if n < 3:
            return recent
        mean_x = sum(xs) / n
        sxx = sum((x - mean_x) ** 2 for x in xs)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
        projected = mean_y + slope * (xs[-1] - mean_x + min(self.horizon_s, self.MAX_HORIZON_S))
        projected = min(projected, self.MAX_GROWTH * max(ys))
        return max(0.0, projected, recent) if slope > 0 else max(0.0, recent)


class RecentPeak:
    """Highest `smooth_s`-second mean rate among the last `window_s` seconds.

    Kept up to date as samples come (a sliding-window maximum over the `smooth_s`-second sums:
    a deque of those sums, decreasing, whose front is the answer), so an estimate costs O(1)
    amortised, not a scan of the window: the controller asks every family every tick."""

    name = "peak"

    def __init__(self, window_s: int = 300, smooth_s: int = 3):
        self.smooth_s = smooth_s
        self.samples: deque[tuple[int, float]] = deque(maxlen=window_s)
        self._count = 0  # samples observed, ever (the index of the newest)
        self._sums: deque[tuple[int, float]] = deque()  # (index of its last sample, smooth_s-second sum), decreasing

    def observe(self, second: int, arrivals: float) -> None:
        self.samples.append((second, float(arrivals)))
        self._count += 1
        k = self.smooth_s
        if len(self.samples) < k:
            return
        total = 0.0
        for i in range(len(self.samples) - k, len(self.samples)):
            total += self.samples[i][1]
        sums = self._sums
        while sums and sums[-1][1] <= total:
            sums.pop()
        sums.append((self._count, total))
        oldest_end = self._count - len(self.samples) + k  # the earliest window still wholly in the samples
        while sums[0][0] < oldest_end:
            sums.popleft()

    def estimate(self) -> float:
        n = len(self.samples)
        if n == 0:
            return 0.0
        if n < self.smooth_s:
            return sum(a for _, a in self.samples) / n
        return self._sums[0][1] / self.smooth_s


def make_estimator(name: str):
    if name == "window":
        return WindowedRate()
    if name == "ewma":
        return Ewma()
    if name == "forecast":
        return LinearForecast()
    if name == "peak":
        return RecentPeak()
    raise ValueError(f"unknown demand estimator {name!r} (choose from {', '.join(ESTIMATORS)})")


class DemandTracker:
    """One estimator per family, fed second by second (gaps filled with zero arrivals)."""

    def __init__(self, estimator: str = "peak"):
        make_estimator(estimator)  # reject a bad name now
        self.estimator = estimator
        self._per_family: dict[str, object] = {}
        self._last_second: dict[str, int] = {}

    def observe(self, family: str, second: int, arrivals: float) -> None:
        est = self._per_family.get(family)
        if est is None:
            est = self._per_family[family] = make_estimator(self.estimator)
        last = self._last_second.get(family)
        if last is not None:
            if second <= last:
                return  # a late second already accounted as zero: ignore rather than rewrite the past
            for gap in range(last + 1, min(second, last + 60)):
                est.observe(gap, 0.0)
        est.observe(second, arrivals)
        self._last_second[family] = second

    def set_horizon(self, seconds: float) -> None:
        for est in self._per_family.values():
            if isinstance(est, LinearForecast):
                est.horizon_s = seconds

    def families(self) -> list[str]:
        return sorted(self._per_family)

    def estimate(self, family: str) -> float | None:
        est = self._per_family.get(family)
        return None if est is None else est.estimate()

    def estimates(self) -> dict[str, float]:
        return {f: round(e.estimate(), 3) for f, e in sorted(self._per_family.items())}
