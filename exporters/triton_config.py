"""Triton model configurations for one variant (text protobuf, as Triton reads them).

| file                  | backend                       | instances | picked by                              |
|-----------------------|-------------------------------|-----------|----------------------------------------|
| config.pbtxt          | python (1/model.py + ORT)     | KIND_CPU  | any server started normally            |
| configs/gpu.pbtxt     | python (1/model.py + ORT CUDA)| KIND_GPU  | `--model-config-name=gpu`              |
| configs/gpu-trt.pbtxt | python (1/model.py + ORT TRT) | KIND_GPU  | a device's `config = "gpu-trt"`        |
| configs/ort-cpu.pbtxt | onnxruntime (1/model.onnx)    | KIND_CPU  | `--model-config-name=ort-cpu` (stock)  |
| configs/ort-gpu.pbtxt | onnxruntime (1/model.onnx)    | KIND_GPU  | `--model-config-name=ort-gpu` (stock)  |

The GPU configs live only under `configs/`, so a CPU-only server never tries them. `gpu-trt`
is `gpu` with onnxruntime's TensorRT execution provider (`gpu_accelerator`, read by 1/model.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.triton.control import THREADS_PARAMETER  # read by 1/model.py

ACCELERATOR_PARAMETER = "gpu_accelerator"  # read by 1/model.py: "cuda" (default) | "tensorrt"


@dataclass(frozen=True)
class ConfigSettings:
    name: str
    image_size: int
    num_classes: int
    max_batch_size: int = 64
    intra_op_threads: int = 1
    queue_delay_us: int = 0  # 0: batch only what is already queued when an instance frees up


def render_all(s: ConfigSettings) -> dict[str, str]:
    """Relative path inside the variant directory -> file text."""
    return {
        "config.pbtxt": _render(s, backend="python", kind="KIND_CPU"),
        "configs/gpu.pbtxt": _render(s, backend="python", kind="KIND_GPU"),
        "configs/gpu-trt.pbtxt": _render(s, backend="python", kind="KIND_GPU", accelerator="tensorrt"),
        "configs/ort-cpu.pbtxt": _render(s, backend="onnxruntime", kind="KIND_CPU"),
        "configs/ort-gpu.pbtxt": _render(s, backend="onnxruntime", kind="KIND_GPU"),
    }


def _render(s: ConfigSettings, backend: str, kind: str, accelerator: str = "") -> str:
    if backend == "python":
        head = 'backend: "python"'
        parameters = {THREADS_PARAMETER: str(s.intra_op_threads)}
        if accelerator:
            parameters[ACCELERATOR_PARAMETER] = accelerator
    else:
        head = 'platform: "onnxruntime_onnx"\nbackend: "onnxruntime"\ndefault_model_filename: "model.onnx"'
        # The onnxruntime backend's own thread parameters.
        parameters = {"intra_op_thread_count": str(s.intra_op_threads), "inter_op_thread_count": "1"}
    params = "\n".join(f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}' for k, v in parameters.items())
    return f"""name: "{s.name}"
{head}
max_batch_size: {s.max_batch_size}
input [
  {{ name: "input" data_type: TYPE_FP32 dims: [ 3, {s.image_size}, {s.image_size} ] }}
]
output [
  {{ name: "logits" data_type: TYPE_FP32 dims: [ {s.num_classes} ] }}
]
instance_group [ {{ kind: {kind} count: 1 }} ]
dynamic_batching {{ max_queue_delay_microseconds: {s.queue_delay_us} }}
{params}
"""
