"""A cluster file for this machine: one embedded device per GPU that NVML reports, plus CPU devices.

Each GPU becomes a device `gpu<i>` of kind "gpu" with `embedded.gpu = i` (its Triton sees only
that GPU), a memory budget of `memory_fraction` x the GPU's total memory (the rest is left to
CUDA's context, cuDNN workspaces and onnxruntime's activation arena), and a device class named
after the GPU's model (`gpu_device_class`): GPUs of the same model share profiles. CPU devices
(`cpu<j>`, class `cpu-<threads>t`) are pinned to disjoint cores from the top of the machine's
core list; the GPU servers share the cores below them (their CPU work: gRPC, the python-backend
stub, copies to and from the GPU).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from orchestrator.errors import UserError
from orchestrator.triton.gpu import GpuInfo

VENDOR_WORDS = {"nvidia", "tesla", "geforce", "quadro"}


def gpu_device_class(gpu_name: str) -> str:
    """`gpu-` and the GPU's model name without vendor words, as a safe name:
    "NVIDIA H100 80GB HBM3" -> "gpu-h100-80gb-hbm3", "Tesla T4" -> "gpu-t4"."""
    words = [w for w in re.split(r"[^a-z0-9]+", gpu_name.lower()) if w and w not in VENDOR_WORDS]
    return ("gpu-" + "-".join(words))[:64].rstrip("-") if words else "gpu"


@dataclass(frozen=True)
class DetectSettings:
    cpu_devices: int = 0  # CPU devices to add beside the GPUs
    cpu_threads: int = 1  # cores (and onnxruntime threads) per CPU device
    cpu_memory_mb: float = 2048.0  # memory budget of each CPU device
    memory_fraction: float = 0.9  # a GPU device's budget: this fraction of the GPU's memory


def detect_devices(gpus: list[GpuInfo], cpu_count: int, settings: DetectSettings = DetectSettings()) -> list[dict]:
    """The [[device]] tables (as dicts, in cluster-file form) for `gpus` and the CPU devices asked for."""
    if not 0 < settings.memory_fraction <= 1:
        raise UserError(f"memory fraction must be in (0, 1], not {settings.memory_fraction}")
    cpu_cores = settings.cpu_devices * settings.cpu_threads
    if cpu_cores and cpu_cores >= cpu_count:
        raise UserError(f"{settings.cpu_devices} CPU devices x {settings.cpu_threads} threads need {cpu_cores} cores "
                        f"and the GPU servers at least one more; this machine has {cpu_count}")
    gpu_cores = list(range(cpu_count - cpu_cores))
    devices = []
    for g in gpus:
        devices.append({"id": f"gpu{g.index}", "class": gpu_device_class(g.name), "kind": "gpu",
                        "memory_mb": float(math.floor(g.memory_total_mb * settings.memory_fraction)),
                        "embedded": {"gpu": g.index, "cores": gpu_cores, "threads": 1},
                        "_comment": f"{g.name}: {g.memory_total_mb:.0f} MiB, {g.memory_free_mb:.0f} MiB free when "
                                    f"detected; budget {settings.memory_fraction:g} of the total"})
    for j in range(settings.cpu_devices):
        top = cpu_count - j * settings.cpu_threads
        devices.append({"id": f"cpu{j}", "class": f"cpu-{settings.cpu_threads}t", "kind": "cpu",
                        "memory_mb": float(settings.cpu_memory_mb),
                        "embedded": {"cores": list(range(top - settings.cpu_threads, top)),
                                     "threads": settings.cpu_threads}})
    return devices


def _value(v) -> str:
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return repr(v)


def cluster_toml(name: str, model_repository: str, devices: list[dict]) -> str:
    """The text of a cluster file holding `devices` (orchestrator/cluster.py reads it back)."""
    lines = ["# Written by `orchestrator cluster detect`: one device per GPU (NVML), and the CPU devices asked for.",
             f"name = {_value(name)}", f"model_repository = {_value(model_repository)}"]
    for d in devices:
        lines.append("")
        if "_comment" in d:
            lines.append(f"# {d['_comment']}")
        lines.append("[[device]]")
        lines += [f"{k} = {_value(v)}" for k, v in d.items() if k not in ("embedded", "_comment")]
        lines.append("[device.embedded]")
        lines += [f"{k} = {_value(v)}" for k, v in d["embedded"].items()]
    return "\n".join(lines) + "\n"
