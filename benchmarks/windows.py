"""Several runs side by side, window by window: where one policy or run loses to another.

    .venv/bin/python benchmarks/windows.py runs/live-5min-15:milp runs/live-5min-15:infaas
    .venv/bin/python benchmarks/windows.py runs/live-5min-15:milp runs/simulate:milp --window 5 --from 80 --to 100

Each argument is a run's folder and a policy (`orchestrator bench` and `orchestrator simulate`
write `<policy>.requests.csv` there). Per window of arrival time: the requests (of the first
run), then per run the requests missed (late, dropped or unanswered) and the window's effective
accuracy (percent, a miss counting 0). The last line is the whole run's. With `--changed`, only
the windows where the runs differ (in misses or accuracy) are shown.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.errors import UserError  # noqa: E402
from orchestrator.evaluation import Outcomes, per_second  # noqa: E402


def load(spec: str) -> tuple[str, Outcomes]:
    """`folder:policy` -> (label, outcomes)."""
    folder, sep, policy = spec.rpartition(":")
    if not sep or not folder or not policy:
        raise UserError(f"{spec!r}: give a run as FOLDER:POLICY, e.g. runs/live-5min-15:milp")
    path = Path(folder) / f"{policy}.requests.csv"
    if not path.is_file():
        raise UserError(f"{path}: no such file (is {policy!r} one of the run's policies?)")
    return f"{Path(folder).name}:{policy}", Outcomes.read_csv(path)


def table(runs: list[tuple[str, Outcomes]], window_s: float, start_s: float = 0.0,
          end_s: float = math.inf, changed: bool = False) -> list[str]:
    """The comparison as text lines (a header, one line per window, the totals)."""
    duration = max((float(o.arrival_s[-1]) for _, o in runs if len(o)), default=0.0) + 1e-9
    bins = [per_second(o, duration, window_s) for _, o in runs]
    width = max(16, *(len(label) for label, _ in runs))
    lines = [f"{'window s':>12} {'requests':>8}  " + "  ".join(f"{label:>{width}}" for label, _ in runs),
             f"{'':>12} {'':>8}  " + "  ".join(f"{'missed  eff. %':>{width}}" for _ in runs)]
    for i in range(len(bins[0]["arrivals"])):
        lo = i * window_s
        if lo + window_s <= start_s or lo >= end_s:
            continue
        cells = []  # (requests, missed, effective accuracy) per run: every run has the same bins
        for b in bins:
            n = b["arrivals"][i]
            cells.append((int(n), int(n - b["met"][i]), b["effective_sum"][i] / n if n else 0.0))
        if changed and len({(c[1], round(c[2], 2)) for c in cells}) == 1:
            continue
        lines.append(f"{lo:5.0f}-{lo + window_s:<6.0f} {cells[0][0]:8d}  "
                     + "  ".join(f"{f'{m:6d}  {e:6.2f}':>{width}}" for _, m, e in cells))
    totals = []
    for _, o in runs:
        n = len(o)
        totals.append(f"{f'{int(n - o.met.sum()):6d}  {o.effective.sum() / n if n else 0.0:6.2f}':>{width}}")
    lines.append(f"{'whole run':>12} {len(runs[0][1]):8d}  " + "  ".join(totals))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="FOLDER:POLICY, e.g. runs/live-5min-15:milp")
    ap.add_argument("--window", type=float, default=10.0, help="window length, seconds (default 10)")
    ap.add_argument("--from", dest="start", type=float, default=0.0, help="first second shown")
    ap.add_argument("--to", dest="end", type=float, default=math.inf, help="last second shown")
    ap.add_argument("--changed", action="store_true", help="only windows where the runs differ")
    args = ap.parse_args(argv)
    try:
        if not args.window > 0:
            raise UserError(f"--window must be above 0 seconds, not {args.window:g}")
        runs = [load(spec) for spec in args.runs]
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(table(runs, args.window, args.start, args.end, args.changed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
