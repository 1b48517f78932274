"""Throughput through the embedded Triton vs raw onnxruntime, same model, same thread count, one run.

    .venv/bin/python benchmarks/triton_overhead.py [--repository model_repository] [--variant resnet18]
        [--threads 1] [--batch 1] [--seconds 10] [--rounds 3]

Rounds alternate (onnxruntime, Triton, onnxruntime, Triton, ...) so that drift on a shared machine
hits both sides alike; the ratio of the summed throughputs is printed. Both sides run a closed loop
of one request at a time; Triton's side is a gRPC client against the python backend running the
same ONNX file with the same intra-op thread count (1 instance).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import onnxruntime as ort
import tritonclient.grpc as grpcclient

from orchestrator.catalog import Catalog
from orchestrator.profiler import make_batch
from orchestrator.triton.control import InstanceConfig
from orchestrator.triton.embedded import EmbeddedServer


def run_ort(session, batch: dict, seconds: float) -> tuple[int, float]:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        session.run(None, batch)
        n += 1
    return n, time.perf_counter() - t0


def run_triton(url: str, model: str, batch: dict, specs, seconds: float) -> tuple[int, float]:
    client = grpcclient.InferenceServerClient(url)
    inputs = []
    for spec in specs:
        inp = grpcclient.InferInput(spec.name, list(batch[spec.name].shape), spec.dtype)
        inp.set_data_from_numpy(batch[spec.name])
        inputs.append(inp)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        client.infer(model, inputs)
        n += 1
    elapsed = time.perf_counter() - t0
    client.close()
    return n, elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repository", default="model_repository")
    ap.add_argument("--variant", default="resnet18")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=10.0, help="per round and side")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    repo = Path(args.repository)
    if not (repo / args.variant / "1" / "model.onnx").exists():
        print(f"error: {repo / args.variant} not found; run `orchestrator export --variants {args.variant}` first",
              file=sys.stderr)
        return 2
    variant = Catalog.load(repo).get(args.variant)
    batch = make_batch(variant, args.batch)
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    session = ort.InferenceSession(str(repo / args.variant / "1" / "model.onnx"), so, providers=["CPUExecutionProvider"])
    totals = {"onnxruntime": [0, 0.0], "triton": [0, 0.0]}
    with EmbeddedServer(repo, name="bench", threads=args.threads) as server:
        server.control(repo).load(
            args.variant, InstanceConfig(kind="cpu", count=1, threads=args.threads))
        run_ort(session, batch, 1.0)  # warm-up both sides
        run_triton(server.grpc_url, args.variant, batch, variant.inputs, 1.0)
        for r in range(args.rounds):
            for side in ("onnxruntime", "triton"):
                if side == "onnxruntime":
                    n, dt = run_ort(session, batch, args.seconds)
                else:
                    n, dt = run_triton(server.grpc_url, args.variant, batch, variant.inputs, args.seconds)
                totals[side][0] += n
                totals[side][1] += dt
                print(f"round {r + 1} {side:<12} {n * args.batch / dt:8.1f} inf/s  ({dt / n * 1000:.2f} ms/request)")
    thr = {k: n * args.batch / dt for k, (n, dt) in totals.items()}
    ms = {k: dt / n * 1000 for k, (n, dt) in totals.items()}
    print(f"\n{args.variant} batch {args.batch}, {args.threads} thread(s), {args.rounds} x {args.seconds:g} s per side")
    print(f"raw onnxruntime : {thr['onnxruntime']:8.1f} inf/s  {ms['onnxruntime']:.2f} ms/request")
    print(f"embedded Triton : {thr['triton']:8.1f} inf/s  {ms['triton']:.2f} ms/request")
    print(f"ratio Triton / onnxruntime throughput: {thr['triton'] / thr['onnxruntime']:.3f}  "
          f"(added latency {ms['triton'] - ms['onnxruntime']:.2f} ms/request)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
