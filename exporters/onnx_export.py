"""torch model -> ONNX file with a dynamic batch dimension, checked and verified against torch."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from orchestrator.errors import UserError

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"


@dataclass(frozen=True)
class Verification:
    """onnxruntime against torch on one random batch."""

    batch: int
    max_abs_diff: float
    logit_scale: float  # max |torch logit|
    torch_noise: float  # max |torch float32 - torch float64|: how exactly float32 can compute this model at all
    bound: float  # atol + rtol * logit_scale + 2 * torch_noise
    top1_agree: int  # rows whose argmax agrees

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.bound


def export(model: torch.nn.Module, path: Path, image_size: int, opset: int, trace_batch: int = 2) -> None:
    """Write `model` as ONNX: input "input" FP32 [N,3,H,W] -> output "logits" FP32 [N,classes], N dynamic."""
    example = torch.zeros(trace_batch, 3, image_size, image_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation on every call
        torch.onnx.export(
            model, (example,), str(path),
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
            dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}},
            do_constant_folding=True, dynamo=False,
        )


def check(path: Path, image_size: int, num_classes: int) -> None:
    """onnx.checker, plus the interface Triton's config promises (names, dtypes, dynamic batch)."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:
        raise UserError(f"{path}: onnx.checker rejected the export: {str(e).splitlines()[0]}") from None
    graph = onnx.load(str(path), load_external_data=False).graph
    expected = {INPUT_NAME: (3, image_size, image_size), OUTPUT_NAME: (num_classes,)}
    for value in list(graph.input) + list(graph.output):
        if value.name not in expected:
            continue
        t = value.type.tensor_type
        dims = t.shape.dim
        shape = tuple(d.dim_value for d in dims[1:])
        if t.elem_type != onnx.TensorProto.FLOAT or not dims or dims[0].dim_param != BATCH_DIM or shape != expected[value.name]:
            raise UserError(f"{path}: tensor {value.name!r} is not FP32 [{BATCH_DIM},{','.join(map(str, expected[value.name]))}]")
        del expected[value.name]
    if expected:
        raise UserError(f"{path}: the graph lacks tensor(s) {sorted(expected)}")


def verify(model: torch.nn.Module, path: Path, image_size: int, batch: int, seed: int,
           rtol: float, atol: float) -> Verification:
    """Run torch and onnxruntime on the same random batch (a batch size other than the traced one).

    The bound is relative to the logits' scale, plus twice torch's own float32 error (against a
    float64 run of the same model): deep random-weight networks are so ill-conditioned that
    float32 torch itself is off by ~1e-3 on ResNet-152, and onnxruntime cannot be held to better.
    """
    x = torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = model(x).numpy()
        reference = model.double()(x.double()).numpy()
    model.float()  # float -> double -> float is exact: the model is unchanged
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    if got.shape != expected.shape:
        raise UserError(f"{path}: onnxruntime returned shape {got.shape}, torch {expected.shape}")
    if not np.all(np.isfinite(expected)):
        raise UserError(f"{path}: torch produced non-finite logits; nothing to verify against")
    scale = float(np.abs(expected).max())
    noise = float(np.abs(expected - reference).max())
    return Verification(
        batch=batch,
        max_abs_diff=float(np.abs(got - expected).max()) if np.all(np.isfinite(got)) else float("inf"),
        logit_scale=scale,
        torch_noise=noise,
        bound=atol + rtol * scale + 2 * noise,
        top1_agree=int((got.argmax(1) == expected.argmax(1)).sum()),
    )
