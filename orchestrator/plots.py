"""PNG plots of bench and simulation runs (matplotlib, Agg backend: no display needed).

* timeline.png  -- per policy: demand (arrivals/s) vs answered-in-deadline/s, with the served
                   variant mix stacked underneath and plan changes as ticks (Model-Switching Fig. 4,
                   Proteus's timelines);
* accuracy.png  -- effective accuracy over time (10-s windows), one line per policy;
* latency_cdf.png -- CDF of the latency of answered requests, one line per policy;
* machine.png   -- live runs: per policy, the cores each part of the machine used each second
                   (each device's server, the bench process, other processes, stolen time) under
                   the requests that missed their deadline.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from orchestrator.activity import cores_by_part, read_activity  # noqa: E402
from orchestrator.evaluation import Run, per_second, variant_mix  # noqa: E402

WINDOW_S = 10


def _duration(run: Run) -> float:
    return run.duration_s or (float(run.outcomes.arrival_s[-1]) if len(run.outcomes) else 1.0)


MAX_LEGEND_VARIANTS = 8


def plot_timeline(runs: list[Run], path: Path, bin_s: float = 1.0) -> Path:
    """Stacked served variant mix under the demand line. Variants are coloured by accuracy (dark:
    least accurate); with more than MAX_LEGEND_VARIANTS the legend names only demand and goodput."""
    fig, axes = plt.subplots(len(runs), 1, figsize=(10, 2.4 * len(runs) + 0.6), sharex=True, squeeze=False)
    accuracy: dict[str, float] = {}
    for r in runs:
        o = r.outcomes
        for v, a in zip(o.variant[o.answered].tolist(), o.accuracy[o.answered].tolist()):
            accuracy.setdefault(v, a)
    variants = sorted(accuracy, key=lambda v: (accuracy[v], v))
    lo, hi = (min(accuracy.values()), max(accuracy.values())) if accuracy else (0.0, 1.0)
    colors = {v: plt.cm.viridis((accuracy[v] - lo) / (hi - lo) if hi > lo else 0.5) for v in variants}
    few = len(variants) <= MAX_LEGEND_VARIANTS
    for ax, run in zip(axes[:, 0], runs):
        d = _duration(run)
        bins = per_second(run.outcomes, d, bin_s)
        x = np.arange(len(bins["arrivals"])) * bin_s
        mix = variant_mix(run.outcomes, d, bin_s)
        stack = [mix[v] / bin_s for v in variants if v in mix]
        if stack:
            names = [v for v in variants if v in mix]
            ax.stackplot(x, *stack, labels=names if few else (), colors=[colors[v] for v in names], alpha=0.55,
                         step="post")
        ax.step(x, bins["arrivals"] / bin_s, where="post", color="black", lw=1.2, label="demand")
        ax.step(x, bins["met"] / bin_s, where="post", color="tab:red", lw=1.0, ls="--", label="in deadline")
        for p in run.plans[1:]:
            ax.axvline(p.time_s, color="gray", lw=0.6, alpha=0.6)
        ax.set_ylabel("req/s")
        ax.set_xlim(0, d)
        ax.set_title(f"{run.policy} ({run.mode})" + ("" if few else f": {len(mix)} variants served, coloured "
                     f"by accuracy ({lo:.0f} % dark .. {hi:.0f} % light)"), fontsize=10, loc="left")
        ax.legend(fontsize=7, loc="upper right", ncol=4)
    axes[-1, 0].set_xlabel("time (s); gray lines: plan changes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_accuracy(runs: list[Run], path: Path, window_s: int = WINDOW_S) -> Path:
    fig, ax = plt.subplots(figsize=(10, 3.6))
    for run in runs:
        bins = per_second(run.outcomes, _duration(run), 1.0)
        k = np.ones(min(window_s, len(bins["arrivals"])))
        arr = np.convolve(bins["arrivals"], k, mode="valid")
        eff = np.convolve(bins["effective_sum"], k, mode="valid")
        x = np.arange(len(arr)) + len(k)
        ax.plot(x, np.where(arr > 0, eff / np.maximum(arr, 1), np.nan), label=run.policy, lw=1.3)
    ax.set_xlabel(f"time (s), end of a {window_s}-s window")
    ax.set_ylabel("effective accuracy (%)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_latency_cdf(runs: list[Run], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for run in runs:
        lat = np.sort(run.outcomes.latency_ms[run.outcomes.answered])
        if len(lat):
            ax.plot(lat, np.arange(1, len(lat) + 1) / len(lat), label=run.policy, lw=1.3)
    deadlines = sorted(set(np.concatenate([r.outcomes.deadline_ms for r in runs]).tolist()))
    for d in deadlines[:3]:
        ax.axvline(d, color="gray", ls=":", lw=1)
    ax.set_xlabel("latency of answered requests (ms); dotted: deadline")
    ax.set_ylabel("CDF")
    ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_machine(runs: list[Run], path: Path) -> Path | None:
    """Stacked cores used per second by each part of the machine, one panel per live run, with
    the requests that missed their deadline per second on the right axis. None without activity."""
    runs = [r for r in runs if r.activity_csv]
    if not runs:
        return None
    fig, axes = plt.subplots(len(runs), 1, figsize=(10, 2.2 * len(runs) + 0.6), sharex=True, squeeze=False)
    for ax, run in zip(axes[:, 0], runs):
        columns = read_activity(run.activity_csv)
        if not columns:
            continue
        parts = cores_by_part(columns)
        t = columns["t_s"]
        ax.stackplot(t, *parts.values(), labels=list(parts), step="pre", alpha=0.7)
        ax.set_ylabel("cores")
        d = _duration(run)
        ax.set_xlim(0, d)
        bins = per_second(run.outcomes, d, 1.0)
        missed = ax.twinx()
        late = bins["arrivals"] - bins["met"]
        missed.step(np.arange(len(late)) + 1.0, late, where="pre", color="black", lw=0.9, label="missed/s")
        missed.set_ylabel("missed req/s")
        missed.set_ylim(0, max(1.0, 1.1 * float(late.max(initial=0.0))))
        ax.set_title(f"{run.policy}: cores used (stacked) and requests missed", fontsize=10, loc="left")
        ax.legend(fontsize=7, loc="upper left", ncol=len(parts))
        missed.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_runs(runs: list[Run], out_dir: str | Path, prefix: str = "") -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [plot_timeline(runs, out / f"{prefix}timeline.png"), plot_accuracy(runs, out / f"{prefix}accuracy.png"),
             plot_latency_cdf(runs, out / f"{prefix}latency_cdf.png")]
    machine = plot_machine(runs, out / f"{prefix}machine.png")
    return paths + ([machine] if machine is not None else [])
