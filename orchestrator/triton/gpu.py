"""GPU inventory from NVML. A machine without a GPU (or without the NVIDIA driver) has an empty one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_total_mb: float
    memory_free_mb: float


def gpu_inventory() -> tuple[list[GpuInfo], str]:
    """(GPUs found, a note on why none were found). Never raises: no NVML error reaches a user."""
    try:
        import pynvml
    except ImportError:
        return [], "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as e:  # pynvml.NVMLError and OSError when libnvidia-ml is absent
        return [], f"no NVIDIA driver ({e.__class__.__name__}: {e})"
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            gpus.append(GpuInfo(i, name.decode() if isinstance(name, bytes) else name,
                                mem.total / 2**20, mem.free / 2**20))
        return gpus, "" if gpus else "NVML reports no GPU"
    except Exception as e:
        return [], f"NVML query failed ({e})"
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
