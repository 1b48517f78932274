"""The GPU check: the orchestrator on one NVIDIA GPU beside two CPU devices, end to end.

    benchmarks/gpu_check.sh                 # prepares the Python environment, then runs this
    python benchmarks/gpu_check.py [--out runs/gpu-check] [--repository DIR] [--gpu 0]

Steps, each printed with its figures as it ends (the run stops at the first failed check):
  1. preflight: NVML sees the GPU; onnxruntime has CUDAExecutionProvider; numpy < 2 (the
     python-backend stub needs it); the stub for this Python finds its shared libraries
  2. export ResNet-18/50/152 (skipped when the repository has them up to date)
  3. a cluster file: the GPU as `orchestrator cluster detect` writes it, and two CPU devices
  4. logits: each variant through Triton on the GPU (its log must name CUDAExecutionProvider)
     against onnxruntime on the CPU, same batch
  5. ResNet-50 at batch 1 and 32: Triton on the GPU (1 instance; 1 and 2 clients) against raw
     onnxruntime-gpu on the same GPU with the providers model.py uses, in alternating rounds
     (goal: Triton / onnxruntime throughput >= 0.9)
  6. profiles: the GPU's class at batch 1..64 with 1 and 2 instances, the CPU class at 1..8 (both
     CPU devices at once), each record with Triton's own compute time per batch
  7. a 60-s bursty live bench (the MILP planner, control plane and shim) on the three devices
Figures go to stdout and to OUT/figures.json and OUT/figures.md. Exit status: 0 when every check
passed and the goal was met, 1 when a check failed or the goal was missed, 3 when something the
check needs is missing (no GPU, no CUDA provider: one line saying what).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from exporters.triton_python_model import execution_providers, preload_gpu_libraries  # noqa: E402
from orchestrator.catalog import Catalog  # noqa: E402
from orchestrator.cluster import Cluster, Device  # noqa: E402
from orchestrator.cluster_detect import DetectSettings, cluster_toml, detect_devices  # noqa: E402
from orchestrator.errors import UserError  # noqa: E402
from orchestrator.evaluation import Run, markdown_table, summarise  # noqa: E402
from orchestrator.planner.capacity import usable_options  # noqa: E402
from orchestrator.planner.request import PlannerOptions  # noqa: E402
from orchestrator.profiler import ProfileSettings, make_batch, measure, percentile, profile_cluster  # noqa: E402
from orchestrator.profiles import ProfileSet  # noqa: E402
from orchestrator.triton.gpu import GpuInfo, gpu_inventory  # noqa: E402
from orchestrator.triton.runtime import ClusterRuntime  # noqa: E402

VARIANTS = ("resnet18", "resnet50", "resnet152")
GPU_BATCHES = (1, 2, 4, 8, 16, 32, 64)
CPU_BATCHES = (1, 2, 4, 8)
RATIO_GOAL = 0.9
BUDGET_S = 480.0  # the whole check, install included, should end within 8 minutes


class Missing(Exception):
    """Something the check needs is not there (exit status 3)."""


class Failed(Exception):
    """A check failed (exit status 1)."""


# -- 1. preflight ------------------------------------------------------------------------------

def unresolved_libraries(binary: Path, env: dict[str, str]) -> list[str]:
    """The shared libraries `binary` needs that the dynamic linker cannot find under `env`."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return []
    out = subprocess.run([ldd, str(binary)], capture_output=True, text=True, env=env, timeout=30).stdout
    return [line.split("=>")[0].strip() for line in out.splitlines() if "not found" in line]


def preflight(gpu_index: int) -> GpuInfo:
    """The GPU to check on; Missing (one line) when the GPU, its provider or the stub is not usable."""
    from orchestrator.triton.binary import find_triton

    gpus, note = gpu_inventory()
    if not gpus:
        raise Missing(f"no NVIDIA GPU: {note}")
    gpu = next((g for g in gpus if g.index == gpu_index), None)
    if gpu is None:
        raise Missing(f"no GPU {gpu_index}: NVML reports {', '.join(f'{g.index} ({g.name})' for g in gpus)}")
    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        raise Missing(f"onnxruntime {ort.__version__} ({Path(ort.__file__).parent}) has no CUDAExecutionProvider, "
                      f"only {', '.join(providers)}: install the gpu extra (benchmarks/gpu_check.sh does)")
    if int(np.__version__.split(".")[0]) >= 2:
        raise Missing(f"numpy {np.__version__}: the python-backend stub of nvidia-pytriton 0.7.0 needs numpy < 2")
    try:
        install = find_triton()
    except UserError as e:
        raise Missing(str(e)) from None
    stub = install.backend_dir / "python" / "triton_python_backend_stub"
    missing = unresolved_libraries(stub, install.environment())
    if missing:
        raise Missing(f"the python-backend stub {stub} cannot find {', '.join(missing)} (for libpython: "
                      f"this Python's shared library, e.g. the distribution's libpython3.X package)")
    free_shm = shutil.disk_usage("/dev/shm").free / 2**30 if os.path.isdir("/dev/shm") else 0.0
    if free_shm < 1.0:
        print(f"warning: /dev/shm has {free_shm:.2f} GiB free; batches of 64 images need ~40 MB per instance")
    return gpu


def driver_version() -> str:
    try:
        import pynvml
        pynvml.nvmlInit()
        try:
            v = pynvml.nvmlSystemGetDriverVersion()
            return v.decode() if isinstance(v, bytes) else str(v)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - a figure, not a check
        return "unknown"


# -- 2, 3. repository and cluster -------------------------------------------------------------

def export_step(repository: Path, variants: tuple[str, ...]) -> Catalog:
    try:
        from exporters.repository import export_variants
    except ImportError as e:
        if all((repository / v / "1" / "model.onnx").is_file() for v in variants):
            print(f"export: {e.name} is not installed; using {repository} as it is")
            return Catalog.load(repository)
        raise Missing(f"exporting needs the export extra ({e.name} is not installed), and {repository} lacks "
                      f"{', '.join(variants)}") from None
    export_variants(list(variants), repository, log=lambda line: print(f"  {line}"))
    return Catalog.load(repository)


def cluster_step(gpu: GpuInfo, repository: Path, out: Path, cpu_devices: int = 2) -> Cluster:
    """The GPU and `cpu_devices` CPU devices, with up to 4 cores each and at least half the cores left
    to the GPU's server; written to OUT/cluster.toml as `orchestrator cluster detect` would."""
    cores = os.cpu_count() or 1
    threads = max(1, min(4, cores // (2 * cpu_devices))) if cpu_devices else 1
    devices = detect_devices([gpu], cores, DetectSettings(cpu_devices=cpu_devices, cpu_threads=threads))
    path = out / "cluster.toml"
    path.write_text(cluster_toml("gpu-check", str(repository.resolve()), devices))
    return Cluster.load(path)


# -- 4. logits ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class LogitCheck:
    variant: str
    device: str
    provider: str  # what the Triton log says the instance ran on
    max_abs_diff: float
    logit_scale: float
    top1_agree: int
    batch: int
    ok: bool


def infer(url: str, model: str, x: np.ndarray) -> np.ndarray:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        inp = grpcclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        return client.infer(model, [inp]).as_numpy("logits")
    finally:
        client.close()


def logits_step(runtime: ClusterRuntime, device: Device, repository: Path, variants: tuple[str, ...],
                rtol: float = 0.02, batch: int = 4) -> list[LogitCheck]:
    """Each variant on `device` through Triton vs onnxruntime on the CPU. The bound is relative to the
    largest logit: a GPU rounds differently from the CPU (TF32, where onnxruntime's CUDA provider uses it)."""
    expected = "CUDAExecutionProvider" if device.kind == "gpu" else "CPUExecutionProvider"
    server = runtime.servers[device.id]
    checks = []
    for v in variants:
        runtime.load(device.id, v)
        try:
            x = np.random.default_rng(7).standard_normal((batch, 3, 224, 224), dtype=np.float32)
            got = infer(server.grpc_url, v, x)
            cpu = ort.InferenceSession(str(repository / v / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
            ref = cpu.run(None, {"input": x})[0]
        finally:
            runtime.unload(device.id, v)
        log = server.log_path.read_text(errors="replace") if getattr(server, "log_path", None) else ""
        ran = re.findall(rf"{v}: onnxruntime \S+ on \w+ \d+, .*providers \['(\w+)'", log)
        provider = ran[-1] if ran else "unknown"
        diff, scale = float(np.max(np.abs(got - ref))), float(np.max(np.abs(ref)))
        agree = int(np.sum(got.argmax(1) == ref.argmax(1)))
        ok = provider == expected and diff <= 1e-5 + rtol * scale
        checks.append(LogitCheck(v, device.id, provider, diff, scale, agree, batch, ok))
        print(f"  {v}: Triton on {device.id} ({provider}) vs CPU onnxruntime: max |diff| {diff:.3g} "
              f"(logit scale {scale:.3g}, bound {1e-5 + rtol * scale:.3g}), top-1 agrees {agree}/{batch}")
    bad = [c for c in checks if not c.ok]
    if bad:
        c = bad[0]
        raise Failed(f"logits: {c.variant} on {c.device} ran on {c.provider} (expected {expected}) with max |diff| "
                     f"{c.max_abs_diff:.3g} against CPU onnxruntime (bound {1e-5 + rtol * c.logit_scale:.3g})")
    return checks


# -- 5. Triton against raw onnxruntime --------------------------------------------------------

def run_raw(session, feed: dict, seconds: float) -> tuple[list[float], float]:
    """Latencies (ms) and runs per second of back-to-back `session.run` calls for `seconds`."""
    lat, t0 = [], time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        t = time.perf_counter()
        session.run(None, feed)
        lat.append((time.perf_counter() - t) * 1000)
    return lat, len(lat) / (time.perf_counter() - t0)


def raw_session(device: Device, model_path: Path):
    """onnxruntime on `device` as model.py would run it there (providers, threads), outside Triton."""
    kind = "GPU" if device.kind == "gpu" else "CPU"
    if kind == "GPU":
        preload_gpu_libraries("cuda")
    options = ort.SessionOptions()
    options.intra_op_num_threads = device.embedded.threads if device.embedded else device.threads
    options.inter_op_num_threads = 1
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA's device numbers as NVML's (and the servers')
    gpu_index = (device.embedded.gpu or 0) if device.embedded else 0
    providers = execution_providers(kind, gpu_index, "cuda", ort.get_available_providers())
    return ort.InferenceSession(str(model_path), sess_options=options, providers=providers)


def overhead_step(runtime: ClusterRuntime, device: Device, catalog: Catalog, repository: Path,
                  variant: str = "resnet50", batches: tuple[int, ...] = (1, 32), rounds: int = 2,
                  seconds: float = 4.0) -> list[dict]:
    """Throughput and latency at each batch size: raw onnxruntime, Triton with 1 and 2 clients."""
    v = catalog.get(variant)
    session = raw_session(device, repository / variant / "1" / "model.onnx")
    url = runtime.servers[device.id].grpc_url
    runtime.load(device.id, variant, instances=1)
    rows = []
    try:
        for b in batches:
            feed = make_batch(v, b)
            run_raw(session, feed, 1.0)  # warm-up (cuDNN picks its algorithms for this shape)
            sides: dict[str, tuple[list[float], float]] = {"onnxruntime": ([], 0.0), "triton-c1": ([], 0.0),
                                                           "triton-c2": ([], 0.0)}
            for _ in range(rounds):
                for side in sides:
                    if side == "onnxruntime":
                        lat, rate = run_raw(session, feed, seconds)
                        thr = rate * b
                    else:
                        lat, thr = measure(url, v, b, concurrency=int(side[-1]), warmup=2, min_samples=10**9,
                                           max_seconds=seconds)
                    old_lat, old_thr = sides[side]
                    sides[side] = (old_lat + lat, old_thr + thr / rounds)
            row = {"variant": variant, "batch": b}
            for side, (lat, thr) in sides.items():
                row[side] = {"inf_s": thr, "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
                             "requests": len(lat)}
            best = max(row["triton-c1"]["inf_s"], row["triton-c2"]["inf_s"])
            row["ratio"] = best / row["onnxruntime"]["inf_s"] if row["onnxruntime"]["inf_s"] else 0.0
            rows.append(row)
            print(f"  {variant} b{b}: " + "; ".join(f"{s} {row[s]['inf_s']:.1f} inf/s p50 {row[s]['p50_ms']:.2f} "
                                                   f"p99 {row[s]['p99_ms']:.2f} ms" for s in sides)
                  + f"; ratio {row['ratio']:.3f}")
    finally:
        runtime.unload(device.id, variant)
    return rows


# -- 6, 7. profiles and the live bench ---------------------------------------------------------

def profile_step(runtime: ClusterRuntime, catalog: Catalog, variants: tuple[str, ...], out: Path,
                 gpu_batches=GPU_BATCHES, cpu_batches=CPU_BATCHES, samples: int = 40,
                 max_seconds: float = 2.0) -> ProfileSet:
    classes = runtime.cluster.device_classes()
    path = out / "profiles.json"
    progress = lambda line: print(f"  {line}")  # noqa: E731
    for cls, devices in sorted(classes.items()):
        gpu = devices[0].kind == "gpu"
        threads = devices[0].embedded.threads if devices[0].embedded else devices[0].threads
        settings = ProfileSettings(batch_sizes=tuple(gpu_batches if gpu else cpu_batches),
                                   configs=((1, 1), (2, 1)) if gpu else ((1, threads),), min_samples=samples,
                                   max_seconds=max_seconds, all_devices=not gpu, device_classes=(cls,))
        profile_cluster(runtime, catalog, variants, path, settings, progress=progress)
    return ProfileSet.load(path)


def bench_rates(profiles: ProfileSet, catalog: Catalog, gpu_class: str, family: str, deadline_ms: float,
                max_rps: float) -> tuple[float, float, str]:
    """(calm, burst) request rates for the live bench, and why: bursts at 1.25 x what the GPU serves
    with the family's most accurate variant within the deadline (the rest must spill or step down),
    capped at `max_rps` (what one client process sends); calm at a quarter of that."""
    options = usable_options(catalog, profiles, {family: deadline_ms}, PlannerOptions().latency_fraction)
    best = max(catalog.families()[family], key=lambda v: v.accuracy).name
    caps = [o.capacity_rps for o in options.get(gpu_class, []) if o.variant == best]
    if not caps:
        raise Failed(f"live bench: no profile of {best} on {gpu_class} fits a {deadline_ms:g} ms deadline")
    burst = min(1.25 * max(caps), max_rps)
    why = (f"bursts at 1.25 x {max(caps):.0f} inf/s ({best} on {gpu_class})" if burst < max_rps
           else f"bursts at the client cap {max_rps:g} req/s ({best} on {gpu_class} serves {max(caps):.0f} inf/s)")
    return burst / 4, burst, why


def device_table(run: Run) -> str:
    """Per device: requests answered, their share, the variants that answered them, the mean batch."""
    o = run.outcomes
    answered = o.answered
    total = max(int(answered.sum()), 1)
    lines = ["| device | answered | share | variants (share of the device's) | mean batch |",
             "|---|---:|---:|---|---:|"]
    for dev in sorted(set(o.device[answered].tolist()) - {""}):
        mine = answered & (o.device == dev)
        n = int(mine.sum())
        variants = {v: int((mine & (o.variant == v)).sum()) for v in sorted(set(o.variant[mine].tolist()))}
        mix = ", ".join(f"{v} {c / n:.0%}" for v, c in variants.items())
        sizes = [b.batch_size for b in run.batches if b.device == dev]
        mean = f"{np.mean(sizes):.1f}" if sizes else "-"
        lines.append(f"| {dev} | {n} | {n / total:.0%} | {mix} | {mean} |")
    return "\n".join(lines) + "\n"


def bench_step(runtime: ClusterRuntime, catalog: Catalog, profiles: ProfileSet, out: Path, gpu_class: str,
               duration_s: float = 60.0, deadline_ms: float = 150.0, max_rps: float = 500.0) -> dict:
    from orchestrator.bench import BenchConfig, run_bench
    from orchestrator.workloads import FamilyLoad, StepRate, generate

    family = "resnet"
    calm, burst, why = bench_rates(profiles, catalog, gpu_class, family, deadline_ms, max_rps)
    trace = generate([FamilyLoad(family, StepRate(levels=(calm, burst, calm, burst, calm), step_s=duration_s / 5),
                                 deadline_ms)], duration_s, seed=0)
    print(f"  trace: {len(trace)} requests over {duration_s:g} s, calm {calm:.0f} / bursts {burst:.0f} req/s ({why}), "
          f"deadline {deadline_ms:g} ms")
    [run] = run_bench(trace, runtime.cluster, catalog, profiles, ["milp"], {family: deadline_ms}, out / "bench",
                      BenchConfig(), runtime=runtime, progress=lambda line: print(f"  {line}"))
    s = summarise(run)
    table, devices = markdown_table([s]), device_table(run)
    print(table + "\n" + devices)
    if s.error_ratio > 0.01:
        raise Failed(f"live bench: {s.error_ratio:.1%} of the requests failed (see {out / 'bench'})")
    return {"calm_rps": calm, "burst_rps": burst, "rates": why, "summary": s.row(), "table": table,
            "devices": devices}


# -- the report --------------------------------------------------------------------------------

def figures_markdown(f: dict) -> str:
    """The figures as docs/results.md would hold them."""
    lines = [f"GPU: {f.get('gpu', '?')}, driver {f.get('driver', '?')}; onnxruntime {f.get('onnxruntime', '?')}; "
             f"command `{f.get('command', '')}`; {f.get('elapsed_s', 0):.0f} s", ""]
    if f.get("overhead"):
        lines += ["| ResNet-50 | raw onnxruntime-gpu inf/s | Triton 1 client inf/s (p50/p99 ms) | Triton 2 clients inf/s |"
                  " ratio |", "|---|---:|---:|---:|---:|"]
        for r in f["overhead"]:
            c1, c2, raw = r["triton-c1"], r["triton-c2"], r["onnxruntime"]
            lines.append(f"| b{r['batch']} | {raw['inf_s']:.1f} | {c1['inf_s']:.1f} ({c1['p50_ms']:.2f}/"
                         f"{c1['p99_ms']:.2f}) | {c2['inf_s']:.1f} | {r['ratio']:.3f} |")
        lines.append("")
    if f.get("logits"):
        lines += ["| variant | provider | max abs diff vs CPU | logit scale | top-1 agree |", "|---|---|---:|---:|---:|"]
        lines += [f"| {c['variant']} | {c['provider']} | {c['max_abs_diff']:.3g} | {c['logit_scale']:.3g} | "
                  f"{c['top1_agree']}/{c['batch']} |" for c in f["logits"]]
        lines.append("")
    if f.get("bench"):
        lines += [f"Live bench: {f['bench']['rates']}", "", f["bench"]["table"], f["bench"]["devices"]]
    lines.append(f"Result: {f.get('result', '')}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/gpu-check", help="folder for the figures, profiles and bench runs")
    ap.add_argument("--repository", default="model_repository", help="model repository (exported into)")
    ap.add_argument("--gpu", type=int, default=0, help="NVML index of the GPU to check (default 0)")
    ap.add_argument("--bench-seconds", type=float, default=60.0)
    ap.add_argument("--max-rps", type=float, default=500.0, help="the live bench's highest request rate")
    args = ap.parse_args(argv)
    started = time.monotonic()
    out, repository = Path(args.out), Path(args.repository)
    figures: dict = {"command": " ".join(["benchmarks/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
                     "onnxruntime": ort.__version__}

    def step(title: str) -> None:
        print(f"\n== {title} ({time.monotonic() - started:.0f} s)", flush=True)

    try:
        gpu = preflight(args.gpu)  # silent unless something is missing: then one line, exit status 3
        step("preflight")
        out.mkdir(parents=True, exist_ok=True)
        figures.update(gpu=f"{gpu.name} ({gpu.memory_total_mb:.0f} MiB)", driver=driver_version())
        print(f"  GPU {gpu.index}: {figures['gpu']}, driver {figures['driver']}; onnxruntime {ort.__version__} "
              f"{ort.get_available_providers()}")
        step("export")
        catalog = export_step(repository, VARIANTS)
        cluster = cluster_step(gpu, repository, out)
        gpu_device = next(d for d in cluster.devices if d.kind == "gpu")
        print(f"  cluster: " + ", ".join(f"{d.id} ({d.device_class})" for d in cluster.devices))
        with ClusterRuntime(cluster, repository, run_dir=out / "triton") as runtime:
            step("logits: Triton on the GPU vs onnxruntime on the CPU")
            figures["logits"] = [asdict(c) for c in logits_step(runtime, gpu_device, repository, VARIANTS)]
            step("ResNet-50: Triton vs raw onnxruntime-gpu on the same GPU")
            figures["overhead"] = overhead_step(runtime, gpu_device, catalog, repository)
            step("profiles")
            profiles = profile_step(runtime, catalog, VARIANTS, out)
            step("live bench")
            figures["bench"] = bench_step(runtime, catalog, profiles, out, gpu_device.device_class,
                                          args.bench_seconds, max_rps=args.max_rps)
        b32 = next((r for r in figures["overhead"] if r["batch"] == 32), None)
        missed = [r for r in figures["overhead"] if r["ratio"] < RATIO_GOAL]
        figures["result"] = (f"passed; Triton / onnxruntime-gpu at b32 {b32['ratio']:.3f}" if not missed and b32 else
                             f"checks passed; goal missed: Triton / onnxruntime-gpu "
                             + ", ".join(f"b{r['batch']} {r['ratio']:.3f}" for r in missed) + f" < {RATIO_GOAL}")
        code = 1 if missed else 0
    except Missing as e:
        print(f"gpu_check: {e}", file=sys.stderr)
        return 3
    except (Failed, UserError) as e:
        figures["result"] = f"failed: {e}"
        code = 1
    figures["elapsed_s"] = time.monotonic() - started
    if figures["elapsed_s"] > BUDGET_S:
        print(f"note: the check took {figures['elapsed_s']:.0f} s, over its {BUDGET_S:.0f}-s budget")
    if out.is_dir():
        (out / "figures.json").write_text(json.dumps(figures, indent=2, default=str) + "\n")
        (out / "figures.md").write_text(figures_markdown(figures))
        print("\n" + figures_markdown(figures))
    print(f"gpu_check: {figures['result']}", file=sys.stderr if code else sys.stdout)
    return code


if __name__ == "__main__":
    sys.exit(main())
