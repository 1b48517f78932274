"""Checking a request's inputs against the catalog before anything is sent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from orchestrator.catalog import TensorSpec


def _shape_matches(shape: tuple[int, ...], spec: tuple[int, ...]) -> bool:
    return len(shape) == len(spec) and all(s == d or d < 0 for s, d in zip(shape, spec))


def check_inputs(variant: str, specs: Sequence[TensorSpec],
                 inputs: Mapping[str, np.ndarray] | np.ndarray) -> tuple[dict[str, np.ndarray], bool]:
    """One request's inputs -> ({name: array without batch dim}, whether the caller gave a batch dim).

    A request is one sample: each array has the catalog shape, or that shape with a leading
    batch dimension of 1 (then outputs keep that dimension too). A bare array stands for the
    only input of a single-input model. Raises ValueError saying what was expected and what came.
    """
    expected = {s.name: s for s in specs}
    if isinstance(inputs, np.ndarray):
        if len(specs) != 1:
            raise ValueError(f"{variant} takes {len(specs)} inputs {sorted(expected)}: pass a dict name -> array")
        inputs = {specs[0].name: inputs}
    if not isinstance(inputs, Mapping):
        raise ValueError(f"inputs must be a numpy array or a dict name -> array, got {type(inputs).__name__}")
    if set(inputs) != set(expected):
        raise ValueError(f"{variant} expects inputs {sorted(expected)}, got {sorted(inputs)}")
    out: dict[str, np.ndarray] = {}
    batched = None
    for name, spec in expected.items():
        arr = inputs[name]
        if not isinstance(arr, np.ndarray):
            raise ValueError(f"input {name!r} of {variant}: expected a numpy array, got {type(arr).__name__}")
        if arr.dtype != np.dtype(spec.numpy_dtype):
            raise ValueError(f"input {name!r} of {variant}: expected dtype {spec.numpy_dtype} ({spec.dtype}), "
                             f"got {arr.dtype}")
        if _shape_matches(arr.shape, spec.shape):
            this_batched = False
        elif arr.ndim == len(spec.shape) + 1 and arr.shape[0] == 1 and _shape_matches(arr.shape[1:], spec.shape):
            this_batched, arr = True, arr[0]
        else:
            raise ValueError(f"input {name!r} of {variant}: expected shape {tuple(spec.shape)} "
                             f"(or {(1, *spec.shape)}), got {tuple(arr.shape)}")
        if batched is not None and this_batched != batched:
            raise ValueError(f"inputs of {variant}: give every input a batch dimension of 1, or none")
        batched = this_batched
        out[name] = arr
    return out, bool(batched)
