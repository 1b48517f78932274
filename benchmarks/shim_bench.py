"""Overhead of the client shim: throughput and p50 latency through `orchestrator.shim.Client` vs a
plain `tritonclient` gRPC loop, at equal concurrency, against the same embedded Triton and model.

    .venv/bin/python benchmarks/shim_bench.py --repo model_repository --concurrency 1,4

Each concurrency level runs plain and shim back to back for `--rounds` rounds, alternating which
goes first; the machine is shared and its load drifts, so the verdict uses the median over
rounds of each pair's ratio (the aggregate over all rounds is printed too). Plain: C threads, each with its own gRPC
client, each sending one image at a time. Shim: C threads calling `client.infer` (no deadline:
the policy sends what is queued at once, up to the batch cap). Target: shim throughput >= 95 %
of plain, p50 latency <= plain + 1 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from orchestrator.catalog import Catalog
from orchestrator.dataplane.routing import static_plan
from orchestrator.shim import Client
from orchestrator.triton.embedded import EmbeddedServer


CPU_MS: dict[str, list[float]] = {"plain": [], "shim": []}  # client-process CPU per request, per run


def run_threads(concurrency: int, requests: int, one_call) -> tuple[float, list[float]]:
    """`requests` calls of `one_call(thread_index)` spread over `concurrency` threads.
    Returns (wall seconds, per-call latencies in ms); records this process's CPU time per call."""
    latencies: list[float] = []
    lock = threading.Lock()
    left = [requests]
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        mine = []
        try:
            while True:
                with lock:
                    if left[0] == 0:
                        break
                    left[0] -= 1
                t = time.perf_counter()
                one_call(i)
                mine.append((time.perf_counter() - t) * 1000)
        except BaseException as e:  # reported after join
            errors.append(e)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    cpu_started = time.process_time()
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    run_threads.last_cpu_ms = (time.process_time() - cpu_started) * 1000 / requests
    if errors:
        raise errors[0]
    return wall, latencies


def plain(url: str, model: str, image: np.ndarray, concurrency: int, requests: int) -> tuple[float, list[float]]:
    clients = [grpcclient.InferenceServerClient(url) for _ in range(concurrency)]
    batch = image[None]

    def call(i: int) -> None:
        inp = grpcclient.InferInput("input", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch)
        clients[i].infer(model, [inp], outputs=[grpcclient.InferRequestedOutput("logits")]).as_numpy("logits")

    try:
        return run_threads(concurrency, requests, call)
    finally:
        for c in clients:
            c.close()


def shim(client: Client, image: np.ndarray, concurrency: int, requests: int) -> tuple[float, list[float]]:
    def call(i: int) -> None:
        r = client.infer("bench", image)
        if r.status != "ok":
            raise RuntimeError(f"shim request failed: {r.status} {r.error}")

    return run_threads(concurrency, requests, call)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", default="model_repository", help="exported model repository")
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--concurrency", default="1,4", help="comma-separated concurrency levels")
    ap.add_argument("--requests", type=int, default=60, help="requests per measurement")
    ap.add_argument("--rounds", type=int, default=6, help="alternating plain/shim rounds per level")
    ap.add_argument("--batch-cap", type=int, default=8)
    ap.add_argument("--policy", default="proteus")
    args = ap.parse_args(argv)

    repo = Path(args.repo)
    if not (repo / "variants.json").is_file():
        print(f"error: {repo}: no exported model repository (run `orchestrator export --out {repo}`)",
              file=sys.stderr)
        return 2
    catalog = Catalog.load(repo)
    image = np.random.default_rng(0).standard_normal((3, 224, 224)).astype(np.float32)
    levels = [int(c) for c in args.concurrency.split(",")]

    print(f"model {args.model}, {args.requests} requests per measurement, {args.rounds} rounds, "
          f"shim policy {args.policy}, batch cap {args.batch_cap}")
    rows = []
    with EmbeddedServer(repo, name="shim-bench", load=[args.model]) as server:
        url = server.grpc_url
        plain(url, args.model, image, 2, 20)  # warm the model
        plan = static_plan({"bench": [("dev", args.model, 1)]}, batch_cap=args.batch_cap)
        with Client(plan, {"dev": url}, catalog=catalog, policy=args.policy) as client:
            shim(client, image, 2, 20)
            for c in levels:
                walls = {"plain": 0.0, "shim": 0.0}
                lats: dict[str, list[float]] = {"plain": [], "shim": []}
                pair_ratios, pair_added = [], []
                for rnd in range(args.rounds):
                    this: dict[str, tuple[float, list[float]]] = {}
                    for kind in (("plain", "shim") if rnd % 2 == 0 else ("shim", "plain")):
                        if kind == "plain":
                            this[kind] = plain(url, args.model, image, c, args.requests)
                        else:
                            this[kind] = shim(client, image, c, args.requests)
                        CPU_MS[kind].append(run_threads.last_cpu_ms)
                        walls[kind] += this[kind][0]
                        lats[kind] += this[kind][1]
                    pair_ratios.append(this["plain"][0] / this["shim"][0])  # throughput ratio shim/plain
                    pair_added.append(statistics.median(this["shim"][1]) - statistics.median(this["plain"][1]))
                    print(f"  concurrency {c} round {rnd + 1}: plain {args.requests / this['plain'][0]:6.1f} req/s "
                          f"p50 {statistics.median(this['plain'][1]):6.2f} ms | shim "
                          f"{args.requests / this['shim'][0]:6.1f} req/s p50 {statistics.median(this['shim'][1]):6.2f} ms"
                          f" | ratio {pair_ratios[-1]:.3f}", flush=True)
                n = args.requests * args.rounds
                rows.append((c, {k: n / walls[k] for k in walls}, {k: statistics.median(v) for k, v in lats.items()},
                             statistics.median(pair_ratios), statistics.median(pair_added)))
            batches = client.stats()["routes"]

    print(f"\n{'conc':>4} {'plain req/s':>11} {'shim req/s':>10} {'ratio':>6} {'plain p50':>9} {'shim p50':>8} "
          f"{'added p50':>9} | median over rounds: {'ratio':>6} {'added p50':>9}")
    ok = True
    for c, tput, p50, med_ratio, med_added in rows:
        ratio = tput["shim"] / tput["plain"]
        added = p50["shim"] - p50["plain"]
        ok &= med_ratio >= 0.95 and med_added <= 1.0
        print(f"{c:>4} {tput['plain']:>11.1f} {tput['shim']:>10.1f} {ratio:>6.3f} {p50['plain']:>8.2f}  "
              f"{p50['shim']:>7.2f}  {added:>+8.2f} ms |                     {med_ratio:>6.3f} {med_added:>+8.2f} ms")
    cpu = {k: statistics.median(v) for k, v in CPU_MS.items()}
    print(f"client-process CPU per request (median over runs; immune to other processes' load): plain "
          f"{cpu['plain']:.3f} ms, shim {cpu['shim']:.3f} ms, added {cpu['shim'] - cpu['plain']:+.3f} ms")
    print(f"shim routes: {batches}")
    print(f"target (>= 95 % throughput, <= 1 ms added p50; medians over rounds): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
