"""benchmarks/gpu_check.sh and gpu_check.py: what of them runs without a GPU.

On a machine without an NVIDIA GPU both stop at once with one line naming what is missing and
install nothing. The check's steps are written for any device kind; here they run for real on a
CPU device (Triton's answers against onnxruntime's, Triton against raw onnxruntime), which tests
their wiring, not a GPU's figures. Where a GPU's presence is needed to reach a step of the shell
script, a stand-in `nvidia-smi` says there is one (and says so below).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import gpu_check
from orchestrator.catalog import Catalog
from orchestrator.cluster import Cluster
from orchestrator.evaluation import Outcomes, Run, ServedBatch
from orchestrator.profiles import ProfileRecord, ProfileSet
from orchestrator.triton.gpu import GpuInfo, gpu_inventory
from orchestrator.triton.runtime import ClusterRuntime

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
no_gpu = pytest.mark.skipif(bool(gpu_inventory()[0]), reason="this machine has a GPU (tests/test_gpu.py runs there)")


@no_gpu
def test_the_script_stops_at_once_without_a_gpu_and_installs_nothing(tmp_path):
    copy = tmp_path / "repo"  # a copy of the scripts, so that a .venv it made would show
    (copy / "benchmarks").mkdir(parents=True)
    for name in ("gpu_check.sh", "gpu_check.py"):
        (copy / "benchmarks" / name).write_bytes((ROOT / "benchmarks" / name).read_bytes())
    (copy / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    env = {k: v for k, v in os.environ.items() if k != "GPU_CHECK_PYTHON"}
    env["PATH"] = "/usr/bin:/bin"  # no nvidia-smi here
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(copy / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                          env=env, timeout=60)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 3 and proc.stdout == ""
    assert proc.stderr.startswith("gpu_check: no NVIDIA GPU: no NVIDIA driver here") and proc.stderr.count("\n") == 1
    assert sorted(p.name for p in copy.iterdir()) == ["benchmarks", "pyproject.toml"]  # no .venv, no .gpu-site


def fake_nvidia_smi(folder: Path) -> str:
    """A stand-in nvidia-smi that lists one GPU: it lets the script go past its GPU check."""
    folder.mkdir(parents=True, exist_ok=True)
    smi = folder / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)'\n")
    smi.chmod(0o755)
    return f"{folder}:/usr/bin:/bin"


def test_the_script_says_when_it_has_nothing_to_install_from(tmp_path):
    """Past the GPU check (a stand-in nvidia-smi), a Python without the CUDA provider, no wheel
    folder and a pip index that does not answer: one line saying so, exit 3, nothing installed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PATH=fake_nvidia_smi(tmp_path / "bin"), GPU_CHECK_PYTHON=sys.executable,
               GPU_CHECK_SITE=str(tmp_path / "site"), PIP_CONFIG_FILE="/dev/null",
               PIP_INDEX_URL="http://127.0.0.1:9/simple")
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.startswith("gpu_check: cannot install the gpu extra (lacking: gpu): pip's index does not "
                                  "answer and GPU_CHECK_WHEELS is not set")
    assert proc.stderr.count("\n") == 1 and not (tmp_path / "site").exists()
    env["GPU_CHECK_WHEELS"] = str(tmp_path / "wheels")
    (tmp_path / "wheels").mkdir()
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 3 and proc.stderr == f"gpu_check: GPU_CHECK_WHEELS={tmp_path / 'wheels'} holds no wheels\n"


@no_gpu
def test_gpu_check_py_stops_at_once_without_a_gpu(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 3 and proc.stdout == ""
    assert proc.stderr.startswith("gpu_check: no NVIDIA GPU: ") and proc.stderr.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_the_stub_finds_its_libraries_with_the_servers_environment():
    from orchestrator.triton.binary import find_triton

    install = find_triton()
    stub = install.backend_dir / "python" / "triton_python_backend_stub"
    assert gpu_check.unresolved_libraries(stub, install.environment()) == []
    bare = {k: v for k, v in install.environment().items() if k != "LD_LIBRARY_PATH"}
    assert any(name.startswith("libcudart-") for name in gpu_check.unresolved_libraries(stub, bare))


def test_cluster_step_puts_the_gpu_beside_two_pinned_cpu_devices(tmp_path, monkeypatch):
    """The GPU as NVML would report it (faked: no GPU here) and the CPU devices of a 16-core machine."""
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    cluster = gpu_check.cluster_step(GpuInfo(0, "NVIDIA H100 80GB HBM3", 81559.0, 80000.0), tmp_path / "repo", tmp_path)
    assert [(d.id, d.device_class, d.kind) for d in cluster.devices] == [
        ("gpu0", "gpu-h100-80gb-hbm3", "gpu"), ("cpu0", "cpu-4t", "cpu"), ("cpu1", "cpu-4t", "cpu")]
    assert cluster.device("gpu0").embedded.cores == tuple(range(8)) and cluster.device("cpu1").embedded.cores == (8, 9, 10, 11)
    assert cluster.model_repository == (tmp_path / "repo").resolve()


@pytest.fixture(scope="module")
def cpu_runtime(resnet18_repo, tmp_path_factory):
    cluster = Cluster.from_dict({"name": "c", "model_repository": str(resnet18_repo), "device": [
        {"id": "cpu0", "class": "cpu-1t", "kind": "cpu", "memory_mb": 2048, "embedded": {"threads": 1}}]})
    with ClusterRuntime(cluster, run_dir=tmp_path_factory.mktemp("triton")) as runtime:
        yield runtime


def test_logits_step_on_a_cpu_device(cpu_runtime, resnet18_repo):
    [check] = gpu_check.logits_step(cpu_runtime, cpu_runtime.cluster.device("cpu0"), resnet18_repo, ("resnet18",),
                                    batch=2)
    assert check.ok and check.provider == "CPUExecutionProvider"  # read from Triton's log, as for a GPU
    assert check.max_abs_diff < 1e-3 and check.top1_agree == 2 and check.logit_scale > 0
    assert "resnet18" not in cpu_runtime.control("cpu0").loaded()


def test_overhead_step_on_a_cpu_device(cpu_runtime, resnet18_repo):
    [row] = gpu_check.overhead_step(cpu_runtime, cpu_runtime.cluster.device("cpu0"), Catalog.load(resnet18_repo),
                                    resnet18_repo, variant="resnet18", batches=(2,), rounds=1, seconds=1.5)
    assert row["batch"] == 2
    for side in ("onnxruntime", "triton-c1", "triton-c2"):
        assert row[side]["inf_s"] > 0 and 0 < row[side]["p50_ms"] <= row[side]["p99_ms"]
    assert row["ratio"] == pytest.approx(max(row["triton-c1"]["inf_s"], row["triton-c2"]["inf_s"])
                                         / row["onnxruntime"]["inf_s"])
    # (the ratio's value is the benchmark's figure, not a test's: on a shared machine one 1.5-s
    # round per side gave a ratio over 2 under load)


def test_bench_rates_follow_the_gpu_profile_of_the_most_accurate_variant(resnet18_repo):
    catalog = Catalog.load(resnet18_repo)
    catalog.add(dataclasses.replace(catalog.get("resnet18"), name="resnet152", accuracy=78.312))

    def rec(variant, cls, b, p99, thr):
        return ProfileRecord(variant, cls, b, 1, 1, p99 / 2, p99, p99, thr, 100)

    profiles = ProfileSet([rec("resnet152", "gpu-x", 8, 40, 800.0), rec("resnet152", "gpu-x", 32, 90, 1600.0),
                           rec("resnet18", "gpu-x", 32, 20, 9000.0), rec("resnet152", "cpu-4t", 1, 60, 20.0)])
    # deadline 150 ms, half for the batch: batch 8 (p99 40 ms) fits, batch 32 (90 ms) does not
    calm, burst, why = gpu_check.bench_rates(profiles, catalog, "gpu-x", "resnet", 150.0, max_rps=5000)
    assert (calm, burst) == (250.0, 1000.0) and "1.25 x 800 inf/s (resnet152 on gpu-x)" in why
    calm, burst, why = gpu_check.bench_rates(profiles, catalog, "gpu-x", "resnet", 150.0, max_rps=400)
    assert (calm, burst) == (100.0, 400.0) and why.startswith("bursts at the client cap 400 req/s")
    with pytest.raises(gpu_check.Failed, match="no profile of resnet152 on gpu-x fits a 50 ms deadline"):
        gpu_check.bench_rates(profiles, catalog, "gpu-x", "resnet", 50.0, max_rps=400)


def test_device_table_and_figures():
    rows = [{"arrival_s": i * 0.1, "family": "resnet", "deadline_ms": 150.0, "status": s, "latency_ms": 20.0,
             "variant": v, "device": d, "accuracy": 78.3}
            for i, (s, v, d) in enumerate([("ok", "resnet152", "gpu0")] * 6 + [("ok", "resnet18", "cpu0")] * 2
                                          + [("late", "resnet18", "cpu1"), ("dropped", "", "")])]
    run = Run("milp", Outcomes.from_rows(rows), duration_s=1.0,
              batches=[ServedBatch("gpu0", "resnet152", 4, 10.0), ServedBatch("gpu0", "resnet152", 2, 8.0),
                       ServedBatch("cpu0", "resnet18", 1, 9.0)])
    table = gpu_check.device_table(run).splitlines()
    assert table[2] == "| cpu0 | 2 | 22% | resnet18 100% | 1.0 |"
    assert table[3] == "| cpu1 | 1 | 11% | resnet18 100% | - |"
    assert table[4] == "| gpu0 | 6 | 67% | resnet152 100% | 3.0 |"
    md = gpu_check.figures_markdown({"gpu": "NVIDIA H100", "driver": "580", "onnxruntime": "1.31.1",
                                     "command": "benchmarks/gpu_check.sh", "elapsed_s": 400.0, "result": "passed",
                                     "overhead": [{"batch": 32, "ratio": 0.93,
                                                   **{s: {"inf_s": 100.0, "p50_ms": 1.0, "p99_ms": 2.0}
                                                      for s in ("onnxruntime", "triton-c1", "triton-c2")}}]})
    assert md.startswith("GPU: NVIDIA H100, driver 580; onnxruntime 1.31.1; command `benchmarks/gpu_check.sh`; 400 s")
    assert "| b32 | 100.0 | 100.0 (1.00/2.00) | 100.0 | 0.930 |" in md and md.rstrip().endswith("Result: passed")


def test_the_script_joins_split_wheels_and_installs_them_into_its_target(tmp_path):
    """The wheel folder's way (a stand-in nvidia-smi to get there): a wheel split into parts, as
    benchmarks/gpu_wheels.sh leaves big ones, is joined and installed into GPU_CHECK_SITE; this
    one holds no CUDA provider, so the script then says what is still lacking."""
    import zipfile

    wheel = tmp_path / "gpucheckprobe-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("gpucheckprobe.py", "ANSWER = 42\n" + "# padding\n" * 2000)
        z.writestr("gpucheckprobe-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: gpucheckprobe\nVersion: 1.0\n")
        z.writestr("gpucheckprobe-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                         "Tag: py3-none-any\n")
        z.writestr("gpucheckprobe-1.0.dist-info/RECORD", "")
    data = wheel.read_bytes()
    for i, folder in enumerate(("2", "1")):  # two parts in two folders, as carried one per call
        (tmp_path / "wheels" / folder).mkdir(parents=True)
        part = data[: len(data) // 2] if i == 0 else data[len(data) // 2:]
        (tmp_path / "wheels" / folder / f"{wheel.name}.part-0{i}").write_bytes(part)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PATH=fake_nvidia_smi(tmp_path / "bin"), GPU_CHECK_PYTHON=sys.executable,
               GPU_CHECK_SITE=str(tmp_path / "site"), GPU_CHECK_WHEELS=str(tmp_path / "wheels"),
               PIP_CONFIG_FILE="/dev/null")
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 3
    assert proc.stderr.splitlines()[-1] == f"gpu_check: after installing, {sys.executable} still lacks: gpu"
    assert (tmp_path / "site" / "gpucheckprobe.py").read_text().startswith("ANSWER = 42")


def test_profile_and_live_bench_steps_on_cpu_devices(resnet18_repo, tmp_path):
    """Steps 6 and 7 on two CPU devices at small sizes (the class that carries the load is a CPU
    class here): profiles for the planner, then the bursty live bench through the control plane
    and the shim, with its results table and the table of where requests went."""
    cluster = Cluster.from_dict({"name": "c", "model_repository": str(resnet18_repo), "device": [
        {"id": f"cpu{i}", "class": "cpu-1t", "kind": "cpu", "memory_mb": 2048, "embedded": {"threads": 1}}
        for i in range(2)]})
    catalog = Catalog.load(resnet18_repo)
    with ClusterRuntime(cluster, run_dir=tmp_path / "triton") as runtime:
        profiles = gpu_check.profile_step(runtime, catalog, ("resnet18",), tmp_path, cpu_batches=(1, 2), samples=8,
                                          max_seconds=3)
        assert sorted(r.batch_size for r in profiles.records) == [1, 2]
        assert all(r.triton_compute_ms and "measured on 2 devices at once" in r.note for r in profiles.records)
        bench = gpu_check.bench_step(runtime, catalog, profiles, tmp_path, "cpu-1t", duration_s=8.0,
                                     deadline_ms=1500.0, max_rps=6.0)
    assert bench["burst_rps"] == 6.0 and bench["calm_rps"] == 1.5
    assert bench["summary"]["requests"] > 5 and bench["summary"]["error_ratio"] <= 0.01
    assert bench["table"].startswith("| policy") and "| milp |" in bench["table"]
    assert "| cpu" in bench["devices"] and (tmp_path / "bench" / "results.md").is_file()
