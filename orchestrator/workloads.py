"""Workload generators: request arrival times for a model family, reproducible from a seed.

Four arrival patterns, each a typed config with an ``arrivals(duration_s, rng)`` method:

- `ConstantRate`: a Poisson process with a fixed rate.
- `StepRate`: a Poisson process whose rate steps through a list of levels.
- `DiurnalRate`: a Poisson process whose rate follows a sinusoid between a low and a high rate.
- `MarkovModulatedRate`: a Markov-modulated Poisson process (MMPP) - a hidden continuous-time
  Markov chain switches between states, each with its own Poisson rate (the bursty workload of
  Model-Switching and similar MLaaS studies: calm periods interrupted by bursts).

All are exact (no time stepping): piecewise-constant rates draw a Poisson count per segment and
place the arrivals uniformly in it; the diurnal rate uses thinning against its peak.

`generate` turns one `FamilyLoad` per family into a merged `Trace`. Each family draws from its
own random stream derived from (seed, family name), so adding a family leaves the others as
they were.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

from orchestrator.errors import UserError
from orchestrator.trace import Trace


def _check_rate(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise UserError(f"{name} must be a non-negative number of requests/s, not {value!r}")


def _check_positive(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise UserError(f"{name} must be a positive number, not {value!r}")


def _piecewise_poisson(rng: np.random.Generator, starts: np.ndarray, ends: np.ndarray,
                       rates: np.ndarray) -> np.ndarray:
    """Sorted arrivals of a Poisson process with rate `rates[i]` on [starts[i], ends[i])."""
    lengths = ends - starts
    counts = rng.poisson(rates * lengths)
    seg = np.repeat(np.arange(len(starts)), counts)
    times = starts[seg] + rng.random(len(seg)) * lengths[seg]
    return np.sort(times)


@dataclass(frozen=True)
class ConstantRate:
    """Poisson arrivals at `rate` requests/s."""

    rate: float

    def __post_init__(self) -> None:
        _check_rate("rate", self.rate)

    def rate_at(self, t: np.ndarray) -> np.ndarray:
        return np.full_like(np.asarray(t, dtype=np.float64), float(self.rate))

    def mean_rate(self, duration_s: float) -> float:
        return float(self.rate)

    def arrivals(self, duration_s: float, rng: np.random.Generator) -> np.ndarray:
        return _piecewise_poisson(rng, np.array([0.0]), np.array([float(duration_s)]), np.array([float(self.rate)]))


@dataclass(frozen=True)
class StepRate:
    """Poisson arrivals whose rate is `levels[k]` during [k*step_s, (k+1)*step_s); the last level holds on."""

    levels: tuple[float, ...]
    step_s: float

    def __post_init__(self) -> None:
        if not self.levels:
            raise UserError("levels must name at least one rate")
        for i, r in enumerate(self.levels):
            _check_rate(f"levels[{i}]", r)
        _check_positive("step_s", self.step_s)

    def rate_at(self, t: np.ndarray) -> np.ndarray:
        k = np.minimum((np.asarray(t, dtype=np.float64) // self.step_s).astype(np.int64), len(self.levels) - 1)
        return np.asarray(self.levels, dtype=np.float64)[k]

    def _segments(self, duration_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        starts = np.arange(len(self.levels), dtype=np.float64) * self.step_s
        ends = np.append(starts[1:], max(float(duration_s), starts[-1]))
        starts, ends = np.minimum(starts, duration_s), np.minimum(ends, duration_s)
        return starts, ends, np.asarray(self.levels, dtype=np.float64)

    def mean_rate(self, duration_s: float) -> float:
        starts, ends, rates = self._segments(duration_s)
        return float(np.sum(rates * (ends - starts)) / duration_s)

    def arrivals(self, duration_s: float, rng: np.random.Generator) -> np.ndarray:
        return _piecewise_poisson(rng, *self._segments(duration_s))


@dataclass(frozen=True)
class DiurnalRate:
    """Poisson arrivals whose rate swings between `low` and `high` once per `period_s`.

    rate(t) = low + (high - low) * (1 - cos(2 pi (t + phase_s) / period_s)) / 2, so with phase 0
    the trace starts at the trough and peaks at half a period.
    """

    low: float
    high: float
    period_s: float
    phase_s: float = 0.0

    def __post_init__(self) -> None:
        _check_rate("low", self.low)
        _check_rate("high", self.high)
        if self.high < self.low:
            raise UserError(f"high ({self.high}) must not be below low ({self.low})")
        _check_positive("period_s", self.period_s)

    def rate_at(self, t: np.ndarray) -> np.ndarray:
        phase = 2 * np.pi * (np.asarray(t, dtype=np.float64) + self.phase_s) / self.period_s
        return self.low + (self.high - self.low) * (1 - np.cos(phase)) / 2

    def mean_rate(self, duration_s: float) -> float:
        # integral of (1 - cos(w (t + p))) / 2 over [0, D] = D/2 - (sin(w (D + p)) - sin(w p)) / (2 w)
        w = 2 * np.pi / self.period_s
        swing = duration_s / 2 - (math.sin(w * (duration_s + self.phase_s)) - math.sin(w * self.phase_s)) / (2 * w)
        return float(self.low + (self.high - self.low) * swing / duration_s)

    def arrivals(self, duration_s: float, rng: np.random.Generator) -> np.ndarray:
        candidates = _piecewise_poisson(rng, np.array([0.0]), np.array([float(duration_s)]), np.array([float(self.high)]))
        if self.high == 0:
            return candidates
        keep = rng.random(len(candidates)) * self.high < self.rate_at(candidates)
        return candidates[keep]


@dataclass(frozen=True)
class MarkovModulatedRate:
    """A Markov-modulated Poisson process (MMPP).

    The hidden state stays in state i for an exponential time with mean `mean_dwell_s[i]`, then
    moves to state j with probability `switch[i][j]` (rows sum to 1, zero diagonal; default: to
    every other state alike). While in state i, requests arrive as Poisson with `rates[i]`.
    The first state is `initial_state`, or drawn from the stationary distribution when None.
    """

    rates: tuple[float, ...]
    mean_dwell_s: tuple[float, ...]
    switch: tuple[tuple[float, ...], ...] | None = None
    initial_state: int | None = None

    def __post_init__(self) -> None:
        n = len(self.rates)
        if n < 1:
            raise UserError("an MMPP needs at least one state")
        if len(self.mean_dwell_s) != n:
            raise UserError(f"mean_dwell_s has {len(self.mean_dwell_s)} entries but there are {n} states")
        for i in range(n):
            _check_rate(f"rates[{i}]", self.rates[i])
            _check_positive(f"mean_dwell_s[{i}]", self.mean_dwell_s[i])
        if self.switch is not None:
            m = np.asarray(self.switch, dtype=np.float64)
            if m.shape != (n, n):
                raise UserError(f"switch must be a {n}x{n} matrix of probabilities, not shape {m.shape}")
            if n > 1 and (np.any(m < 0) or np.any(np.diag(m) != 0) or not np.allclose(m.sum(axis=1), 1.0)):
                raise UserError("switch rows must be probabilities that sum to 1, with a zero diagonal")
        if self.initial_state is not None and not 0 <= self.initial_state < n:
            raise UserError(f"initial_state must be in 0..{n - 1}, not {self.initial_state}")

    def _jump_matrix(self) -> np.ndarray:
        n = len(self.rates)
        if self.switch is not None:
            return np.asarray(self.switch, dtype=np.float64)
        if n == 1:
            return np.ones((1, 1))
        return (np.ones((n, n)) - np.eye(n)) / (n - 1)

    def stationary(self) -> np.ndarray:
        """Long-run fraction of time spent in each state."""
        p = self._jump_matrix()
        n = len(p)
        # stationary distribution of the jump chain: nu (P - I) = 0, sum(nu) = 1
        a = np.vstack([(p - np.eye(n)).T, np.ones(n)])
        b = np.append(np.zeros(n), 1.0)
        nu = np.linalg.lstsq(a, b, rcond=None)[0]
        time_share = np.clip(nu, 0, None) * np.asarray(self.mean_dwell_s, dtype=np.float64)
        return time_share / time_share.sum()

    def mean_rate(self, duration_s: float | None = None) -> float:
        """The long-run mean rate (a single trace's rate varies around it)."""
        return float(self.stationary() @ np.asarray(self.rates, dtype=np.float64))

    def state_path(self, duration_s: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The hidden state's sojourns: (starts, ends, states), covering [0, duration_s)."""
        p = self._jump_matrix()
        n = len(self.rates)
        state = self.initial_state if self.initial_state is not None else int(rng.choice(n, p=self.stationary()))
        starts, ends, states = [], [], []
        t = 0.0
        while t < duration_s:
            end = min(t + rng.exponential(self.mean_dwell_s[state]), float(duration_s))
            starts.append(t)
            ends.append(end)
            states.append(state)
            t = end
            if n == 2:
                state = 1 - state
            elif n > 2:
                state = int(rng.choice(n, p=p[state]))
        return np.array(starts), np.array(ends), np.array(states, dtype=np.int64)

    def arrivals(self, duration_s: float, rng: np.random.Generator) -> np.ndarray:
        starts, ends, states = self.state_path(duration_s, rng)
        return _piecewise_poisson(rng, starts, ends, np.asarray(self.rates, dtype=np.float64)[states])


Pattern = Union[ConstantRate, StepRate, DiurnalRate, MarkovModulatedRate]


@dataclass(frozen=True)
class FamilyLoad:
    """The requests of one model family: their arrival pattern and deadline."""

    family: str
    pattern: Pattern
    deadline_ms: float

    def __post_init__(self) -> None:
        if not self.family or "," in self.family or self.family != self.family.strip():
            raise UserError(f"family name must be a non-empty word without commas, not {self.family!r}")
        _check_positive("deadline_ms", self.deadline_ms)


def family_rng(seed: int, family: str) -> np.random.Generator:
    """The random stream of one family: depends on the seed and the family's name only."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(family.encode())]))


def generate(loads: Sequence[FamilyLoad], duration_s: float, seed: int = 0) -> Trace:
    """A trace of `duration_s` seconds holding every family's arrivals, merged in time order."""
    _check_positive("duration_s", duration_s)
    names = [load.family for load in loads]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise UserError(f"family {sorted(dup)[0]!r} is given more than once")
    parts = []
    for load in loads:
        t = load.pattern.arrivals(float(duration_s), family_rng(seed, load.family))
        parts.append(Trace(t, np.full(len(t), load.family, dtype=object), np.full(len(t), float(load.deadline_ms))))
    return Trace.merge(*parts)
