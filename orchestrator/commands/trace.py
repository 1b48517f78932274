"""`orchestrator trace`: generate request traces, merge them, and summarise a trace file."""

from __future__ import annotations

import argparse
import math

import numpy as np

from orchestrator.commands.flags import check_output_file, factor, non_negative_int, positive_float, positive_int
from orchestrator.errors import UserError
from orchestrator.names import check_name
from orchestrator.trace import Trace, read_trace, write_trace
from orchestrator.workloads import (ConstantRate, DiurnalRate, FamilyLoad, MarkovModulatedRate, Pattern,
                                    StepRate, generate)

KINDS = ("constant", "step", "diurnal", "bursty")
SPARK = " .:-=+*#%@"  # ASCII ramp, lowest to highest


def register(sub) -> None:
    p = sub.add_parser("trace", help="generate, merge and summarise request traces (CSV)", description=__doc__)
    tsub = p.add_subparsers(dest="trace_command", required=True, metavar="ACTION")

    g = tsub.add_parser("generate", help="write a synthetic trace for one family",
                        description="Write a synthetic trace for one model family. --rate is the base rate; "
                                    "step, diurnal and bursty rise to rate x --peak-factor.")
    g.add_argument("--kind", choices=KINDS, default="constant",
                   help="constant Poisson; step (base, peak, base in thirds); diurnal (sinusoid, trough at 0); "
                        "bursty (2-state MMPP: calm at the base rate, bursts at the peak rate)")
    g.add_argument("--rate", type=positive_float, required=True, help="base arrival rate, requests/s")
    g.add_argument("--duration", type=positive_float, required=True, help="seconds")
    g.add_argument("--family", required=True, help="model family the requests are for (e.g. resnet)")
    g.add_argument("--deadline-ms", type=positive_float, default=300.0,
                   help="deadline of every request (default 300)")
    g.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    g.add_argument("--peak-factor", type=factor, default=3.0, help="peak rate / base rate (default 3)")
    g.add_argument("--period", type=positive_float, help="diurnal: seconds per cycle (default: the duration)")
    g.add_argument("--burst-s", type=positive_float, default=5.0, help="bursty: mean burst length, s (default 5)")
    g.add_argument("--calm-s", type=positive_float, default=20.0, help="bursty: mean time between bursts, s (default 20)")
    g.add_argument("--out", required=True, help="trace CSV to write")
    g.set_defaults(run=run_generate)

    m = tsub.add_parser("merge", help="merge trace files (e.g. one per family) into one, in time order")
    m.add_argument("traces", nargs="+", help="trace CSV files")
    m.add_argument("--out", required=True, help="trace CSV to write")
    m.set_defaults(run=run_merge)

    s = tsub.add_parser("show", help="summarise a trace: requests, duration, mean/peak rate per family")
    s.add_argument("trace", help="trace CSV")
    s.add_argument("--window", type=positive_float, default=1.0, help="window for rates, s (default 1)")
    s.add_argument("--families", help="comma-separated known families: any other family is an error")
    s.add_argument("--width", type=positive_int, default=60, help="sparkline width in characters (default 60)")
    s.set_defaults(run=run_show)


def pattern_for(args: argparse.Namespace) -> Pattern:
    """The arrival pattern the `generate` flags describe (their argparse types keep them finite
    and in range: inf would never end)."""
    base, peak = args.rate, args.rate * args.peak_factor
    if args.kind == "constant":
        return ConstantRate(base)
    if args.kind == "step":
        return StepRate(levels=(base, peak, base), step_s=args.duration / 3)
    if args.kind == "diurnal":
        period = args.period if args.period is not None else args.duration
        if not (math.isfinite(period) and period > 0):
            raise UserError(f"--period must be positive and finite, not {period}")
        return DiurnalRate(low=base, high=peak, period_s=period)
    if not all(math.isfinite(v) and v > 0 for v in (args.burst_s, args.calm_s)):
        raise UserError(f"--burst-s and --calm-s must be positive and finite, not {args.burst_s} and {args.calm_s}")
    return MarkovModulatedRate(rates=(base, peak), mean_dwell_s=(args.calm_s, args.burst_s), initial_state=0)


def run_generate(args: argparse.Namespace) -> int:
    check_output_file(args.out, "--out")
    load = FamilyLoad(check_name(args.family, "--family"), pattern_for(args), args.deadline_ms)
    trace = generate([load], args.duration, seed=args.seed)
    write_trace(args.out, trace)
    print(f"wrote {len(trace)} requests over {args.duration:g} s "
          f"({len(trace) / args.duration:.1f} req/s; expected {load.pattern.mean_rate(args.duration):.1f}) to {args.out}")
    return 0


def run_merge(args: argparse.Namespace) -> int:
    check_output_file(args.out, "--out")
    trace = Trace.merge(*(read_trace(path) for path in args.traces))
    write_trace(args.out, trace)
    print(f"wrote {len(trace)} requests of {len(trace.families())} families to {args.out}")
    return 0


def sparkline(rates: np.ndarray, width: int, top: float) -> str:
    """`rates` squeezed into `width` characters (column = mean of its windows), scaled to `top`."""
    if len(rates) == 0:
        return ""
    cols = np.array_split(rates, min(width, len(rates)))
    levels = [float(c.mean()) for c in cols]
    steps = len(SPARK) - 1
    return "".join(SPARK[min(steps, math.ceil(v / top * steps))] if top > 0 else SPARK[0] for v in levels)


def summary_lines(trace: Trace, window_s: float = 1.0, width: int = 60) -> list[str]:
    """The text `trace show` prints."""
    if not (math.isfinite(window_s) and window_s > 0):
        raise UserError(f"--window must be positive and finite, not {window_s}")
    if width < 1:
        raise UserError(f"--width must be at least 1, not {width}")
    duration = trace.duration_s
    fams = trace.families()
    lines = [f"{len(trace)} requests over {duration:.1f} s, {len(fams)} "
             f"{'family' if len(fams) == 1 else 'families'}"]
    if not len(trace):
        return lines
    rows = [(fam, trace.for_family(fam)) for fam in fams]
    if len(fams) > 1:
        rows.append(("all", trace))
    w = f"peak req/s ({window_s:g} s)"
    name_w = max(6, *(len(name) for name, _ in rows))
    lines.append(f"{'family':<{name_w}} {'requests':>9} {'mean req/s':>10} {w:>18} {'deadline ms':>12}")
    series = {}
    for name, tr in rows:
        rates = tr.window_counts(window_s, duration) / window_s
        series[name] = rates
        mean = len(tr) / duration if duration > 0 else float("nan")
        lo, hi = float(tr.deadline_ms.min()), float(tr.deadline_ms.max())
        deadline = f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"
        lines.append(f"{name:<{name_w}} {len(tr):>9} {mean:>10.1f} {rates.max():>18.1f} {deadline:>12}")
    top = max(float(r.max()) for r in series.values())
    lines.append(f"rate over time ({window_s:g} s windows, 0-{duration:.0f} s; '{SPARK[-1]}' = {top:.0f} req/s):")
    for name, rates in series.items():
        lines.append(f"{name:<{name_w}} |{sparkline(rates, width, top)}|")
    return lines


def run_show(args: argparse.Namespace) -> int:
    known = [f.strip() for f in args.families.split(",") if f.strip()] if args.families else None
    trace = read_trace(args.trace, known_families=known)
    print(f"{args.trace}: " + "\n".join(summary_lines(trace, args.window, args.width)))
    return 0
