"""The pinned dependency chain imports together (pip cannot see why these pins exist; see pyproject.toml)."""

from importlib import metadata


def test_pinned_chain_imports_together():
    import numpy
    import onnx
    import onnxruntime
    import tritonclient.grpc
    import tritonclient.http
    from google.protobuf import __version__ as protobuf_version
    from ortools.linear_solver import pywraplp

    # The python-backend stub in nvidia-pytriton 0.7.0 returns empty outputs under numpy 2.
    assert int(numpy.__version__.split(".")[0]) < 2
    # ortools 9.14 pins protobuf 6.31; tritonclient <= 2.70 accepts it at import time (done above).
    assert protobuf_version.startswith("6.31.")
    assert metadata.version("tritonclient") == "2.70.0"
    assert metadata.version("nvidia-pytriton") == "0.7.0"
    assert pywraplp.Solver.CreateSolver("SCIP") is not None
    assert onnx.__version__ and onnxruntime.get_available_providers()
    assert tritonclient.grpc.InferenceServerClient and tritonclient.http.InferenceServerClient


def test_export_extras_import_beside_the_chain():
    import torch
    import torchvision
    from ortools.linear_solver import pywraplp  # noqa: F401  (same process as torch)

    assert torch.__version__.startswith("2.14.1") and torchvision.__version__.startswith("0.29.1")


def _requirements(extra: str | None = None) -> dict[str, str]:
    """name -> exact version of the `==` pins in pyproject.toml (the dependencies, or one extra)."""
    import re
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    pins = {}
    for line in lines:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([0-9][0-9A-Za-z.]*)", line.replace(" ", ""))
        if m:
            pins[m.group(1).lower()] = m.group(3)
    return pins


def test_gpu_extra_pins_match_the_cpu_install_and_the_export_extra():
    """The gpu extra adds onnxruntime-gpu at onnxruntime's own version (the two share one package
    folder), and the CUDA libraries at the versions torch (the export extra) installs, so that
    `.[export,gpu]` is one consistent set. Resolved with pip in a throwaway venv (docs/runtime.md)."""
    base, gpu = _requirements(), _requirements("gpu")
    assert gpu["onnxruntime-gpu"] == base["onnxruntime"] == metadata.version("onnxruntime")
    assert set(gpu) == {"onnxruntime-gpu", "nvidia-cuda-runtime", "nvidia-cuda-nvrtc", "nvidia-cublas",
                        "nvidia-curand", "nvidia-cufft", "nvidia-cudnn-cu13"}
    assert not set(gpu) & set(base)  # the CPU install is untouched: nothing pinned twice
    # torch 2.14.1 (the export extra) brings the same CUDA 13 builds: where both are installed, one set
    for name, version in gpu.items():
        if name.startswith("nvidia-"):
            try:
                installed = metadata.version(name)
            except metadata.PackageNotFoundError:
                continue  # a CPU install without the export extra
            assert installed == version, f"{name}: the gpu extra pins {version}, torch installed {installed}"
    assert gpu["nvidia-cuda-runtime"].startswith("13.") and gpu["nvidia-cudnn-cu13"].startswith("9.")
