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
