"""The python-backend model.py outside Triton: provider choice and its one-line refusals.

model.py imports Triton's `triton_python_backend_utils`, which exists only inside the backend
stub; here a small stand-in module takes its place (exceptions and a logger), so that the real
model.py runs against the real onnxruntime of this environment. The GPU provider lists are
checked as a pure function of what onnxruntime reports; a real GPU run needs
tests/test_gpu.py on a GPU machine.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import onnxruntime as ort
import pytest

MODEL_PY = Path(__file__).resolve().parents[1] / "exporters" / "triton_python_model.py"


class TritonModelException(Exception):
    pass


@pytest.fixture
def model_py(monkeypatch):
    logs: list[str] = []
    fake = types.ModuleType("triton_python_backend_utils")
    fake.TritonModelException = TritonModelException
    fake.Logger = types.SimpleNamespace(log_info=logs.append)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    spec = importlib.util.spec_from_file_location("variant_model_py", MODEL_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.logs = logs
    return module


def args_for(repo: Path, kind: str, device_id: int = 0, parameters: dict | None = None) -> dict:
    config = json.loads(json.dumps({
        "name": "resnet18", "max_batch_size": 64,
        "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [3, 224, 224]}],
        "output": [{"name": "logits", "data_type": "TYPE_FP32", "dims": [1000]}],
        "parameters": {k: {"string_value": v} for k, v in {"intra_op_threads": "1", **(parameters or {})}.items()},
    }))
    return {"model_config": json.dumps(config), "model_name": "resnet18", "model_instance_kind": kind,
            "model_instance_device_id": str(device_id), "model_repository": str(repo / "resnet18"),
            "model_version": "1"}


def test_cpu_instance_runs_on_the_cpu_provider(model_py, resnet18_repo):
    model = model_py.TritonPythonModel()
    model.initialize(args_for(resnet18_repo, "CPU"))
    assert model.session.get_providers() == ["CPUExecutionProvider"]
    assert "on CPU 0" in model_py.logs[-1]


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this onnxruntime has CUDA")
def test_gpu_instance_without_cuda_provider_fails_in_one_line(model_py, resnet18_repo):
    model = model_py.TritonPythonModel()
    with pytest.raises(TritonModelException) as err:
        model.initialize(args_for(resnet18_repo, "GPU", device_id=1))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("resnet18: a KIND_GPU instance needs onnxruntime's CUDAExecutionProvider")
    assert "CPUExecutionProvider" in message and "install the gpu extra" in message


def test_an_unknown_accelerator_is_refused_by_name(model_py, resnet18_repo):
    model = model_py.TritonPythonModel()
    with pytest.raises(TritonModelException, match="resnet18: parameter 'gpu_accelerator' must be one of "
                                                   "cuda, tensorrt, not 'tensorrtt'"):
        model.initialize(args_for(resnet18_repo, "CPU", parameters={"gpu_accelerator": "tensorrtt"}))


def test_provider_lists_follow_the_instance_kind(model_py):
    choose = model_py.execution_providers
    gpu_ort = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose("CPU", 0, "cuda", gpu_ort) == ["CPUExecutionProvider"]
    assert choose("MODEL", 0, "tensorrt", gpu_ort) == ["CPUExecutionProvider"]  # the accelerator is for GPUs
    assert choose("GPU", 2, "cuda", gpu_ort) == [("CUDAExecutionProvider", {"device_id": 2}), "CPUExecutionProvider"]
    trt, cuda, cpu = choose("GPU", 1, "tensorrt", gpu_ort, "/m/resnet50/tensorrt_cache", fp16=True,
                            shapes=("input", [3, 224, 224], 64))
    assert (cuda, cpu) == (("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider")
    name, options = trt
    assert name == "TensorrtExecutionProvider" and options["device_id"] == 1 and options["trt_fp16_enable"] == "true"
    assert options["trt_engine_cache_enable"] == "true"
    assert options["trt_engine_cache_path"] == "/m/resnet50/tensorrt_cache"
    assert options["trt_timing_cache_path"] == "/m/resnet50/tensorrt_cache"
    assert options["trt_profile_min_shapes"] == "input:1x3x224x224"
    assert options["trt_profile_max_shapes"] == options["trt_profile_opt_shapes"] == "input:64x3x224x224"


def test_missing_gpu_providers_are_named(model_py):
    with pytest.raises(model_py.ProviderError, match="needs onnxruntime's CUDAExecutionProvider"):
        model_py.execution_providers("GPU", 0, "cuda", ["CPUExecutionProvider"])
    with pytest.raises(model_py.ProviderError, match="'tensorrt' needs onnxruntime's TensorrtExecutionProvider"):
        model_py.execution_providers("GPU", 0, "tensorrt", ["CUDAExecutionProvider", "CPUExecutionProvider"])


def test_cuda_libraries_are_found_in_nvidia_pip_folders(model_py, tmp_path):
    """The folders model.py hands to onnxruntime's preload_dlls: the first nvidia/ folder with CUDA
    13's runtime and the first with cuDNN 9, searched in path order (onnxruntime's own first)."""
    first, second = tmp_path / "a", tmp_path / "b"
    (second / "nvidia" / "cu13" / "lib").mkdir(parents=True)
    (second / "nvidia" / "cu13" / "lib" / "libcudart.so.13").write_bytes(b"")
    (first / "nvidia" / "cudnn" / "lib").mkdir(parents=True)
    (first / "nvidia" / "cudnn" / "lib" / "libcudnn.so.9").write_bytes(b"")
    (second / "nvidia" / "cudnn" / "lib").mkdir(parents=True)
    (second / "nvidia" / "cudnn" / "lib" / "libcudnn.so.9").write_bytes(b"")
    found = model_py.nvidia_library_folders("13", [str(first), "", str(second)])
    assert found == [(str(second / "nvidia" / "cu13" / "lib"), {"cuda": True, "cudnn": False}),
                     (str(first / "nvidia" / "cudnn" / "lib"), {"cuda": False, "cudnn": True})]
    assert model_py.nvidia_library_folders("12", [str(first), str(second)]) == [
        (str(first / "nvidia" / "cudnn" / "lib"), {"cuda": False, "cudnn": True})]
