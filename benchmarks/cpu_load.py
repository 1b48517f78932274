"""Keep each core partly busy, as other jobs on a shared machine do, for a bounded time.

    python benchmarks/cpu_load.py --busy 0.3 --seconds 1800 &   # one process per core, 30 % busy
    CI=true bash .ci/run                                          # the suite under that load
    python benchmarks/cpu_load.py --busy 0.8 --on-s 5 --off-s 10 &   # load that comes and goes

With `--on-s`/`--off-s`, each process is busy for on-s seconds, then idle for off-s, and again
(other jobs that come and go, which a run's median slowdown hides).

One process per core (pinned), each spinning until it has used `busy` x 100 ms of CPU time in
every 100 ms and sleeping the rest; it stops by itself after `--seconds` (and with its parent's SIGTERM / Ctrl-C). Prints the
busy fraction each process really achieved when it ends.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import sys
import time

PERIOD_S = 0.1


def spin(core: int, busy: float, seconds: float, on_s: float, off_s: float, out) -> None:
    os.sched_setaffinity(0, {core})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    start = time.monotonic()
    cpu0 = time.process_time()
    try:
        while time.monotonic() - start < seconds:
            if off_s > 0 and (time.monotonic() - start) % (on_s + off_s) >= on_s:
                time.sleep(PERIOD_S)  # an idle phase
                continue
            t0, c0 = time.monotonic(), time.process_time()
            # spin until this process has had its share of CPU time (not wall time: on a busy
            # core the scheduler shares the core, and the load should still be there)
            while time.process_time() - c0 < busy * PERIOD_S and time.monotonic() - t0 < PERIOD_S:
                pass
            time.sleep(max(0.0, PERIOD_S - (time.monotonic() - t0)))
    finally:
        wall = time.monotonic() - start
        out.put((core, (time.process_time() - cpu0) / wall if wall else 0.0))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--busy", type=float, default=0.3, help="fraction of each 100 ms a core is busy (default 0.3)")
    p.add_argument("--seconds", type=float, default=600.0, help="stop after this long (default 600)")
    p.add_argument("--on-s", type=float, default=0.0, help="busy phases of this many seconds (with --off-s)")
    p.add_argument("--off-s", type=float, default=0.0, help="idle phases of this many seconds between them")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="processes, one per core (default all)")
    args = p.parse_args(argv)
    if not 0 < args.busy < 1 or not 0 < args.seconds <= 24 * 3600 or not 1 <= args.cores <= (os.cpu_count() or 1):
        print("error: --busy must be in (0, 1), --seconds in (0, 86400], --cores in 1..cpu count", file=sys.stderr)
        return 2
    if args.on_s < 0 or args.off_s < 0 or (args.off_s > 0) != (args.on_s > 0):
        print("error: --on-s and --off-s go together, each > 0", file=sys.stderr)
        return 2
    out: mp.Queue = mp.Queue()
    procs = [mp.Process(target=spin, args=(c, args.busy, args.seconds, args.on_s, args.off_s, out), daemon=True) for c in range(args.cores)]
    for proc in procs:
        proc.start()
    phases = f", {args.on_s:g} s on / {args.off_s:g} s off" if args.off_s else ""
    print(f"cpu_load: {args.cores} process(es) at {args.busy:.0%}{phases} for up to {args.seconds:.0f} s "
          f"(pids {' '.join(str(p.pid) for p in procs)})", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        for proc in procs:
            proc.join()
    except (KeyboardInterrupt, SystemExit):
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join(timeout=5)
    while not out.empty():
        core, frac = out.get()
        print(f"cpu_load: core {core} was busy {frac:.0%} of the time", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
