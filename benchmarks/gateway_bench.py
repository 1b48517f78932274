"""Overhead of the gateway: stock tritonclient through the gateway vs straight to Triton, side by
side, against the same embedded Triton and model; and the gateway's own ceiling on a trivial model.

    .venv/bin/python benchmarks/gateway_bench.py --repo model_repository [--concurrency 1,16] [--rounds 6]

The gateway runs in its own process, as it would deployed (a static plan: family `bench` -> the
model on the one server), so that the clients' threads do not share its interpreter. Each
protocol (gRPC, HTTP) and concurrency level runs direct and through the gateway back to back for
`--rounds` rounds, alternating which goes first; the verdict uses the median over rounds of each
pair's throughput ratio and added p50 (the machine is shared and its load drifts). C threads,
each with its own client, each sending one image at a time, no deadline.
Targets: ratio >= 0.95 at concurrency 1 and >= 0.90 at 16; added p50 <= 1 ms at concurrency 1.

`--floor` measures, at concurrency 1 over gRPC, what Python's grpcio costs by itself: a
pass-through proxy (its own process: raw request bytes in, the same bytes to Triton, the answer's
bytes back; no parsing, no routing) beside direct calls and the gateway, one call of each in turn
so that drifts of Triton's own speed fall on all three alike; it prints the median of the paired
differences. No gateway written on grpcio can add less than the proxy does.

`--ceiling` also measures the gateway alone: an identity python-backend model on 4 floats, so
that Triton costs little, gRPC at concurrency 16, and prints requests/s and the gateway
process's CPU per request (goal: 3,000 req/s per core). With `--profile` (needs `py-spy`, a
pip package) it samples the gateway process during those runs and prints where its busy time
goes: the inbound protocol server, the outbound Triton client, the gateway's and the data
plane's own code (threads blocked in a poll or a wait are left out).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from orchestrator.triton.embedded import EmbeddedServer

sys.path.insert(0, str(Path(__file__).parent))
from shim_bench import run_threads  # noqa: E402  (the same threaded loop as the shim's benchmark)

ECHO_CONFIG = textwrap.dedent("""\
    name: "echo"
    backend: "python"
    max_batch_size: 8
    input [ { name: "input" data_type: TYPE_FP32 dims: [ 4 ] } ]
    output [ { name: "logits" data_type: TYPE_FP32 dims: [ 4 ] } ]
    instance_group [ { kind: KIND_CPU count: 1 } ]
    dynamic_batching { max_queue_delay_microseconds: 0 }
    """)
ECHO_MODEL = textwrap.dedent('''\
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            return [pb_utils.InferenceResponse([pb_utils.Tensor("logits", pb_utils.get_input_tensor_by_name(r, "input")
                                                                 .as_numpy())]) for r in requests]
    ''')
ECHO_VARIANT = {"family": "echo", "name": "echo", "accuracy": 1.0, "accuracy_source": "benchmark stand-in",
                "accuracy_nominal": True, "weights": "none", "params": 0, "flops": 0, "onnx_bytes": 0,
                "max_batch_size": 8,
                "inputs": [{"name": "input", "dtype": "FP32", "shape": [4]}],
                "outputs": [{"name": "logits", "dtype": "FP32", "shape": [4]}]}


def child(model: str, grpc_url: str, catalog_path: str) -> None:
    """The gateway process: family `bench` -> `model` on the one server; prints its two ports."""
    from orchestrator.catalog import Catalog
    from orchestrator.dataplane.routing import static_plan
    from orchestrator.gateway.core import Gateway
    from orchestrator.gateway.grpc_server import GrpcEndpoint
    from orchestrator.gateway.http_server import HttpEndpoint
    from orchestrator.shim import Client

    catalog = Catalog.load(catalog_path)
    plan = static_plan({"bench": [("dev", model, 1)]}, batch_cap=8)
    gateway = Gateway(Client(plan, {"dev": grpc_url}, catalog=catalog))
    http, grpc = HttpEndpoint(gateway, port=0), GrpcEndpoint(gateway, port=0)
    print(json.dumps({"http": http.url, "grpc": grpc.url}), flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    grpc.close()
    http.close()
    gateway.close()


def passthrough(target: str) -> None:
    """The floor process: gRPC ModelInfer bytes forwarded to `target` and back untouched; prints its port."""
    import grpc
    from concurrent import futures
    options = [("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20)]
    forward = grpc.insecure_channel(target, options=options).unary_unary("/inference.GRPCInferenceService/ModelInfer")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=options)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(lambda request, context: forward(request, timeout=60))}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(json.dumps({"grpc": f"127.0.0.1:{port}"}), flush=True)
    sys.stdin.read()
    server.stop(0)


def start_profile(pid: int, out: Path) -> subprocess.Popen:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("--profile needs py-spy (pip install py-spy)")
    proc = subprocess.Popen([spy, "record", "-p", str(pid), "-r", "200", "-f", "raw", "-o", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the load starts
    return proc


def start_gateway(model: str, grpc_url: str, catalog_path: Path, mode: str = "--child") -> tuple[subprocess.Popen, dict]:
    """The gateway (or with mode "--passthrough", the floor proxy) in its own process, and its addresses."""
    proc = subprocess.Popen([sys.executable, __file__, mode, model, grpc_url, str(catalog_path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        raise SystemExit("the gateway process did not start")
    return proc, json.loads(line)


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(protocol: str, url: str, model: str, x: np.ndarray, concurrency: int, requests: int) -> tuple[float, list[float]]:
    """(wall seconds, per-call ms) of `requests` calls over `concurrency` threads, each with its own client."""
    lib = grpcclient if protocol == "grpc" else httpclient
    clients = [lib.InferenceServerClient(url) for _ in range(concurrency)]

    def call(i: int) -> None:
        inp = lib.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        clients[i].infer(model, [inp]).as_numpy("logits")

    try:
        return run_threads(concurrency, requests, call)
    finally:
        for c in clients:
            c.close()


def compare(server: EmbeddedServer, gateway: dict, model: str, x: np.ndarray, levels: list[int], requests: int,
            rounds: int) -> bool:
    ok = True
    print(f"\n{'proto':>5} {'conc':>4} {'direct req/s':>12} {'gateway req/s':>13} {'direct p50':>10} {'gateway p50':>11}"
          f" | median over rounds: {'ratio':>6} {'added p50':>9}")
    for protocol in ("grpc", "http"):
        direct_url = server.grpc_url if protocol == "grpc" else server.http_url
        for c in levels:
            ratios, added, walls, lats = [], [], {"direct": 0.0, "gateway": 0.0}, {"direct": [], "gateway": []}
            for rnd in range(rounds):
                this = {}
                for kind in (("direct", "gateway") if rnd % 2 == 0 else ("gateway", "direct")):
                    this[kind] = (run(protocol, direct_url, model, x, c, requests) if kind == "direct" else
                                  run(protocol, gateway[protocol], "bench", x, c, requests))
                    walls[kind] += this[kind][0]
                    lats[kind] += this[kind][1]
                ratios.append(this["direct"][0] / this["gateway"][0])
                added.append(statistics.median(this["gateway"][1]) - statistics.median(this["direct"][1]))
            n = requests * rounds
            ratio, plus = statistics.median(ratios), statistics.median(added)
            ok &= ratio >= (0.95 if c == 1 else 0.90) and (c != 1 or plus <= 1.0)
            print(f"{protocol:>5} {c:>4} {n / walls['direct']:>12.1f} {n / walls['gateway']:>13.1f} "
                  f"{statistics.median(lats['direct']):>9.2f}  {statistics.median(lats['gateway']):>10.2f} "
                  f"|                     {ratio:>6.3f} {plus:>+8.2f} ms", flush=True)
    return ok


def floor(server: EmbeddedServer, gateway: dict, model: str, x: np.ndarray, requests: int) -> None:
    """Direct, pass-through proxy and gateway calls in turn, gRPC, concurrency 1: medians and paired differences."""
    proc, proxy = start_gateway(model, server.grpc_url, Path("."), mode="--passthrough")
    clients = {"direct": (grpcclient.InferenceServerClient(server.grpc_url), model),
               "pass-through": (grpcclient.InferenceServerClient(proxy["grpc"]), model),
               "gateway": (grpcclient.InferenceServerClient(gateway["grpc"]), "bench")}

    def call(kind: str) -> float:
        client, name = clients[kind]
        inp = grpcclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        start = time.perf_counter()
        client.infer(name, [inp]).as_numpy("logits")
        return (time.perf_counter() - start) * 1000

    try:
        for kind in clients:  # warm
            for _ in range(4):
                call(kind)
        rows = [{kind: call(kind) for kind in clients} for _ in range(requests)]
    finally:
        for client, _ in clients.values():
            client.close()
        proc.stdin.close()
        proc.wait(30)
    med = {kind: statistics.median(r[kind] for r in rows) for kind in clients}
    added = {kind: statistics.median(r[kind] - r["direct"] for r in rows) for kind in ("pass-through", "gateway")}
    print(f"\nfloor, gRPC, concurrency 1, {requests} calls of each in turn: p50 direct {med['direct']:.2f} ms, "
          f"pass-through proxy {med['pass-through']:.2f} ms, gateway {med['gateway']:.2f} ms; added (median of "
          f"paired differences): grpcio pass-through {added['pass-through']:+.2f} ms, gateway "
          f"{added['gateway']:+.2f} ms (the gateway's own part {added['gateway'] - added['pass-through']:+.2f} ms)",
          flush=True)


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] in ("--child", "--passthrough"):
        (child if sys.argv[1] == "--child" else lambda model, url, path: passthrough(url))(*sys.argv[2:5])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", default="model_repository", help="exported model repository")
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--concurrency", default="1,16", help="comma-separated concurrency levels")
    ap.add_argument("--requests", type=int, default=64, help="requests per measurement")
    ap.add_argument("--rounds", type=int, default=6, help="alternating direct/gateway rounds per level")
    ap.add_argument("--floor", action="store_true", help="also measure a raw grpcio pass-through proxy at concurrency 1")
    ap.add_argument("--ceiling", action="store_true", help="also measure the gateway alone on a trivial model")
    ap.add_argument("--profile", action="store_true", help="with --ceiling: where the gateway's time goes (py-spy)")
    args = ap.parse_args(argv)
    repo = Path(args.repo)
    if not (repo / "variants.json").is_file():
        print(f"error: {repo}: no exported model repository (run `orchestrator export --out {repo}`)", file=sys.stderr)
        return 2
    levels = [int(c) for c in args.concurrency.split(",")]
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    print(f"model {args.model}, {args.requests} requests per measurement, {args.rounds} rounds; load average "
          f"{os.getloadavg()[0]:.2f}")
    with EmbeddedServer(repo, name="gateway-bench", load=[args.model]) as server:
        proc, gateway = start_gateway(args.model, server.grpc_url, repo)
        try:
            run("grpc", gateway["grpc"], "bench", x, 2, 16)  # warm both paths
            run("grpc", server.grpc_url, args.model, x, 2, 16)
            ok = compare(server, gateway, args.model, x, levels, args.requests, args.rounds)
            if args.floor:
                floor(server, gateway, args.model, x, args.requests * 2)
        finally:
            proc.stdin.close()
            proc.wait(30)
    print(f"target (ratio >= 0.95 at 1, >= 0.90 at 16; added p50 <= 1 ms at 1; medians over rounds): "
          f"{'met' if ok else 'NOT met'}")
    if args.ceiling:
        ceiling(min(levels[-1], 16), profile=args.profile)
    return 0


# where a sample's time goes: the first of these found walking up from its innermost frame
PARTS = (("gateway/tensors.py", "KServe tensor decoding and encoding"),
         ("tritonclient/", "the outbound Triton client (tritonclient, grpc channel)"),
         ("grpc/_channel", "the outbound Triton client (tritonclient, grpc channel)"),
         ("orchestrator/shim", "the data plane (route worker, policy, answers)"),
         ("orchestrator/dataplane", "the data plane (route worker, policy, answers)"),
         ("orchestrator/telemetry", "the data plane (route worker, policy, answers)"),
         ("orchestrator/gateway", "the gateway's own code (names, checks, metrics)"),
         ("grpc/_server", "the inbound gRPC server (grpcio)"), ("concurrent/futures", "the inbound gRPC server (grpcio)"),
         ("http/server", "the inbound HTTP server (http.server)"), ("socketserver", "the inbound HTTP server (http.server)"),
         ("email/", "the inbound HTTP server (http.server)"), ("socket.py", "the inbound HTTP server (http.server)"))
# innermost frames where a thread waits (py-spy shows C calls that released the GIL as active)
WAITING = ("Condition.wait", "Event.wait", "thread.py:81)", "completion_queue.poll", "_server.py:1330)",
           "_channel.py:1162)", "_channel.py:1751)", "select", "poll (")


def breakdown(raw: Path) -> str:
    """py-spy's raw stacks -> the share of the busy samples per part of the gateway."""
    parts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")[::-1]
        if not frames or any(w in frames[0] for w in WAITING):
            continue
        part = next((name for f in frames for key, name in PARTS if key in f), "other")
        parts[part] += int(count)
    busy = sum(parts.values()) or 1
    return "; ".join(f"{name} {100 * n / busy:.0f} %" for name, n in parts.most_common()) + f" ({busy} samples)"


def ceiling(concurrency: int, requests: int = 3000, profile: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        (repo / "echo" / "1").mkdir(parents=True)
        (repo / "echo" / "config.pbtxt").write_text(ECHO_CONFIG)
        (repo / "echo" / "1" / "model.py").write_text(ECHO_MODEL)
        (repo / "variants.json").write_text(json.dumps({"variants": [ECHO_VARIANT]}))
        x = np.ones((1, 4), np.float32)
        with EmbeddedServer(repo, name="gateway-ceiling", load=["echo"]) as server:
            proc, gateway = start_gateway("echo", server.grpc_url, repo)
            try:
                run("grpc", gateway["grpc"], "bench", x, 4, 200)
                for protocol in ("grpc", "http"):
                    spy = start_profile(proc.pid, repo / f"{protocol}.txt") if profile else None
                    cpu0 = process_cpu_s(proc.pid)
                    wall, lat = run(protocol, gateway[protocol], "bench", x, concurrency, requests)
                    cpu = process_cpu_s(proc.pid) - cpu0
                    if spy is not None:
                        spy.send_signal(signal.SIGINT)
                        spy.wait(60)
                        print(f"profile, {protocol}: {breakdown(repo / f'{protocol}.txt')}", flush=True)
                    direct_wall, _ = run(protocol, server.grpc_url if protocol == "grpc" else server.http_url, "echo",
                                         x, concurrency, requests)
                    print(f"ceiling, {protocol}, identity model, concurrency {concurrency}: gateway {requests / wall:,.0f} "
                          f"req/s (p50 {statistics.median(lat):.2f} ms), Triton direct {requests / direct_wall:,.0f} "
                          f"req/s; gateway process CPU {cpu * 1000 / requests:.3f} ms per request = "
                          f"{requests / cpu:,.0f} req/s per core", flush=True)
            finally:
                proc.stdin.close()
                proc.wait(30)


if __name__ == "__main__":
    sys.exit(main())
