"""On a GPU: KIND_GPU instances of the python-backend model under the embedded tritonserver.

Each test needs an NVIDIA GPU that NVML sees and onnxruntime with CUDAExecutionProvider (the
`gpu` extra); without them it is skipped, and the reason says which is missing. They have not
yet run on a GPU (docs/runtime.md, "What has run on a GPU").
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from orchestrator.catalog import Catalog
from orchestrator.cli import main
from orchestrator.cluster import Cluster
from orchestrator.profiler import ProfileSettings, profile_cluster
from orchestrator.triton.gpu import gpu_inventory
from orchestrator.triton.runtime import ClusterRuntime
from tests.triton_helpers import infer_logits

GPUS, NVML_NOTE = gpu_inventory()


def _missing() -> str:
    if not GPUS:
        return f"no NVIDIA GPU ({NVML_NOTE})"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return (f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (install the gpu extra: "
                "pip install '.[gpu]' and onnxruntime-gpu over onnxruntime, docs/runtime.md)")
    return ""


pytestmark = pytest.mark.skipif(bool(_missing()), reason=_missing() or "GPU present")


def gpu_cluster(repo: Path, tmp_path: Path, config: str | None = None) -> Cluster:
    device = {"id": "gpu0", "class": "gpu-test", "kind": "gpu", "memory_mb": 4096,
              "embedded": {"gpu": GPUS[0].index if GPUS else 0}}
    if config:
        device["config"] = config
    return Cluster.from_dict({"name": "g", "model_repository": str(repo), "device": [device]})


def test_gpu_instance_runs_on_cuda_and_answers_as_the_cpu_does(resnet18_repo, tmp_path):
    x = np.random.default_rng(3).standard_normal((8, 3, 224, 224), dtype=np.float32)
    cpu = ort.InferenceSession(str(resnet18_repo / "resnet18" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    expected = cpu.run(None, {"input": x})[0]
    with ClusterRuntime(gpu_cluster(resnet18_repo, tmp_path), run_dir=tmp_path / "triton") as runtime:
        config = runtime.load("gpu0", "resnet18", instances=2)
        assert [g["kind"] for g in config["instance_group"]] == ["KIND_GPU"]
        got = infer_logits(runtime.servers["gpu0"].grpc_url, "resnet18", x)
        log = runtime.servers["gpu0"].log_path.read_text(errors="replace")
    assert re.search(r"resnet18: onnxruntime \S+ on GPU 0, .*providers \['CUDAExecutionProvider'", log), log[-2000:]
    np.testing.assert_allclose(got, expected, rtol=0, atol=0.02 * float(np.abs(expected).max()))
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.75


def test_profile_on_the_gpu_to_batch_64_with_two_instances(resnet18_repo, tmp_path):
    with ClusterRuntime(gpu_cluster(resnet18_repo, tmp_path), run_dir=tmp_path / "triton") as runtime:
        profiles = profile_cluster(runtime, Catalog.load(resnet18_repo), ["resnet18"], tmp_path / "p.json",
                                   ProfileSettings(batch_sizes=(1, 64), configs=((1, 1), (2, 1)), min_samples=20,
                                                   max_seconds=10))
    records = {(r.instances, r.batch_size): r for r in profiles.records}
    assert sorted(records) == [(1, 1), (1, 64), (2, 1), (2, 64)]
    for r in records.values():
        assert r.triton_compute_ms and 0 < r.triton_compute_ms < r.p99_ms
    assert records[(1, 64)].throughput_rps > 4 * records[(1, 1)].throughput_rps  # a GPU batches


def test_tensorrt_config_builds_its_engine_cache_in_the_model_directory(resnet18_repo, tmp_path):
    try:
        import tensorrt_libs  # noqa: F401  (TensorRT 10 for CUDA 13, from NVIDIA's index)
    except ImportError:
        pytest.skip("no TensorRT libraries (tensorrt-cu13-libs, from https://pypi.nvidia.com)")
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(resnet18_repo, repo)
    with ClusterRuntime(gpu_cluster(repo, tmp_path, config="gpu-trt"), run_dir=tmp_path / "triton") as runtime:
        runtime.load("gpu0", "resnet18")
        x = np.random.default_rng(4).standard_normal((2, 3, 224, 224), dtype=np.float32)
        assert infer_logits(runtime.servers["gpu0"].grpc_url, "resnet18", x).shape == (2, 1000)
        log = runtime.servers["gpu0"].log_path.read_text(errors="replace")
    assert "providers ['TensorrtExecutionProvider'" in log
    assert any((repo / "resnet18" / "tensorrt_cache").iterdir())


def test_cluster_detect_writes_this_machines_gpus(tmp_path, capsys):
    out = tmp_path / "cluster-gpu.toml"
    assert main(["cluster", "detect", "--out", str(out)]) == 0
    devices = Cluster.load(out).devices
    assert [d.embedded.gpu for d in devices] == [g.index for g in GPUS]
    assert all(d.memory_mb <= g.memory_total_mb and d.device_class.startswith("gpu-") for d, g in zip(devices, GPUS))
    print(out.read_text(), file=sys.stderr)
