"""GPU devices in the cluster file: `orchestrator cluster detect` and how a GPU device's Triton starts.

NVML is faked here (a stand-in `pynvml` module answering for two GPUs): this machine has no GPU,
and what is tested is the inventory's reading of NVML's answers and the cluster file made from
them. The embedded server of a GPU device is started for real: on a machine without a GPU it
runs, and Triton itself refuses its KIND_GPU models.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.cluster import Cluster
from orchestrator.cluster_detect import DetectSettings, detect_devices, gpu_device_class
from orchestrator.errors import UserError
from orchestrator.triton.gpu import GpuInfo, gpu_inventory
from orchestrator.triton.runtime import ClusterRuntime, instance_config_for, server_for_device

MiB = 2**20


def fake_nvml(gpus: list[tuple[str, int, int]] | None, fail: Exception | None = None) -> types.ModuleType:
    """A `pynvml` answering for `gpus` (name, total MiB, free MiB); `fail` is raised by nvmlInit."""
    m = types.ModuleType("pynvml")

    def init():
        if fail is not None:
            raise fail
    m.nvmlInit, m.nvmlShutdown = init, lambda: None
    m.nvmlDeviceGetCount = lambda: len(gpus or [])
    m.nvmlDeviceGetHandleByIndex = lambda i: i
    m.nvmlDeviceGetName = lambda h: gpus[h][0].encode()  # older nvidia-ml-py returns bytes
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=gpus[h][1] * MiB, free=gpus[h][2] * MiB)
    return m


TWO_GPUS = [("NVIDIA H100 80GB HBM3", 81559, 81000), ("NVIDIA A100-SXM4-40GB", 40960, 40000)]


@pytest.mark.parametrize("name, cls", [("NVIDIA H100 80GB HBM3", "gpu-h100-80gb-hbm3"), ("Tesla T4", "gpu-t4"),
                                       ("NVIDIA A100-SXM4-40GB", "gpu-a100-sxm4-40gb"), ("NVIDIA H200", "gpu-h200"),
                                       ("NVIDIA GeForce RTX 4090", "gpu-rtx-4090"), ("NVIDIA", "gpu")])
def test_device_class_from_the_gpu_name(name, cls):
    assert gpu_device_class(name) == cls


def test_inventory_reads_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(TWO_GPUS))
    gpus, note = gpu_inventory()
    assert note == "" and gpus == [GpuInfo(0, "NVIDIA H100 80GB HBM3", 81559.0, 81000.0),
                                   GpuInfo(1, "NVIDIA A100-SXM4-40GB", 40960.0, 40000.0)]


def test_detect_writes_one_device_per_gpu_and_pinned_cpu_devices(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(TWO_GPUS))
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    out = tmp_path / "cluster-gpu.toml"
    assert main(["cluster", "detect", "--out", str(out), "--cpu-devices", "2", "--cpu-threads", "4",
                 "--model-repository", "/srv/models"]) == 0
    assert f"wrote {out} (2 GPU device(s), 2 CPU device(s))" in capsys.readouterr().out
    cluster = Cluster.load(out)
    assert cluster.name == "local-gpu" and cluster.model_repository == Path("/srv/models")
    by_id = {d.id: d for d in cluster.devices}
    assert sorted(by_id) == ["cpu0", "cpu1", "gpu0", "gpu1"]
    h100, a100 = by_id["gpu0"], by_id["gpu1"]
    assert (h100.device_class, h100.kind, h100.memory_mb) == ("gpu-h100-80gb-hbm3", "gpu", 73403.0)  # 0.9 x 81559
    assert (a100.device_class, a100.memory_mb, a100.embedded.gpu) == ("gpu-a100-sxm4-40gb", 36864.0, 1)
    assert h100.embedded.cores == a100.embedded.cores == tuple(range(8))  # below the CPU devices' cores
    assert by_id["cpu0"].embedded.cores == (12, 13, 14, 15) and by_id["cpu1"].embedded.cores == (8, 9, 10, 11)
    assert by_id["cpu0"].device_class == "cpu-4t" and by_id["cpu0"].embedded.threads == 4
    assert "# NVIDIA H100 80GB HBM3: 81559 MiB" in out.read_text()

    # GPU 1's server sees only GPU 1, which CUDA inside it numbers 0; its models load with the GPU config
    inst = instance_config_for(a100)
    assert (inst.kind, inst.gpus, inst.config_name) == ("gpu", (0,), "gpu")
    server = server_for_device(a100, tmp_path)
    env = server.device_environment({"PATH": "/bin"})
    assert (env["CUDA_VISIBLE_DEVICES"], env["CUDA_DEVICE_ORDER"]) == ("1", "PCI_BUS_ID")  # NVML's numbering
    assert server_for_device(by_id["cpu0"], tmp_path).device_environment({})["CUDA_VISIBLE_DEVICES"] == ""

    # an existing file is kept unless --force
    assert main(["cluster", "detect", "--out", str(out)]) == 2
    assert "exists; give --force" in capsys.readouterr().err
    assert main(["cluster", "detect", "--out", str(out), "--force"]) == 0
    assert [d.id for d in Cluster.load(out).devices] == ["gpu0", "gpu1"]


def test_detect_without_a_gpu_says_so_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(None, fail=OSError("libnvidia-ml.so.1: cannot open")))
    out = tmp_path / "c.toml"
    assert main(["cluster", "detect", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no GPU on this machine: no NVIDIA driver") and err.count("\n") == 1
    assert not out.exists()


def test_detect_on_this_machine(tmp_path, capsys):
    """Unfaked: where NVML finds no GPU (this machine) the command fails in one line, else it writes the file."""
    code = main(["cluster", "detect", "--out", str(tmp_path / "c.toml")])
    gpus, _ = gpu_inventory()
    if gpus:
        assert code == 0 and len(Cluster.load(tmp_path / "c.toml").devices) == len(gpus)
    else:
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: no GPU on this machine: ") and err.count("\n") == 1


def test_detect_refuses_more_cpu_cores_than_the_machine_has():
    with pytest.raises(UserError, match="2 CPU devices x 8 threads need 16 cores and the GPU servers at least one "
                                        "more; this machine has 16"):
        detect_devices([GpuInfo(0, "NVIDIA H100", 1000.0, 1000.0)], 16, DetectSettings(cpu_devices=2, cpu_threads=8))


def test_gpu_device_server_starts_with_its_gpu_visible(resnet18_repo, tmp_path):
    """A real embedded tritonserver for GPU 3: it sees CUDA_VISIBLE_DEVICES=3, loads the `gpu`
    configs, and (on a machine without that GPU) Triton refuses the KIND_GPU instance by name."""
    if gpu_inventory()[0]:
        pytest.skip("this machine has a GPU: tests/test_gpu.py runs the GPU path")
    cluster = Cluster.from_dict({"name": "g", "model_repository": str(resnet18_repo), "device": [
        {"id": "gpu3", "class": "gpu-x", "kind": "gpu", "memory_mb": 1000, "embedded": {"gpu": 3}}]})
    with ClusterRuntime(cluster, run_dir=tmp_path / "triton") as runtime:
        pid = runtime.servers["gpu3"].pid
        environ = dict(x.split("=", 1) for x in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in x)
        assert environ["CUDA_VISIBLE_DEVICES"] == "3"
        assert b"--model-config-name=gpu" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        with pytest.raises(UserError, match=r"gpu3: load of 'resnet18' failed: .*instance group resnet18_0 of "
                                            r"model resnet18 specifies invalid or unsupported gpu id 0"):
            runtime.load("gpu3", "resnet18")
