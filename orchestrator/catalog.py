"""The variant catalog: what each exported model is (`variants.json` in the model repository)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from orchestrator.errors import UserError
from orchestrator.files import write_atomic

CATALOG_FILE = "variants.json"

# Triton data types and the numpy dtype names they carry.
TRITON_TO_NUMPY = {
    "FP32": "float32",
    "FP16": "float16",
    "FP64": "float64",
    "INT64": "int64",
    "INT32": "int32",
    "INT8": "int8",
    "UINT8": "uint8",
    "BOOL": "bool",
}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor; `shape` excludes the batch dimension."""

    name: str
    dtype: str  # Triton name, e.g. "FP32"
    shape: tuple[int, ...]

    @property
    def numpy_dtype(self) -> str:
        return TRITON_TO_NUMPY[self.dtype]

    @classmethod
    def from_dict(cls, d: dict) -> "TensorSpec":
        return cls(name=d["name"], dtype=d["dtype"], shape=tuple(int(x) for x in d["shape"]))


@dataclass(frozen=True)
class Variant:
    """One model variant of a family (e.g. resnet50 of family resnet)."""

    family: str
    name: str
    accuracy: float  # ImageNet-1k top-1, percent
    accuracy_source: str
    accuracy_nominal: bool  # True when the exported weights are random: accuracy is the published figure
    weights: str  # "random(seed=N)" or the state_dict file it was loaded from
    params: int
    flops: int  # floating-point operations per image (2 x multiply-accumulates)
    onnx_bytes: int
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    onnx_sha256: str = ""
    exported_at: str = ""

    @property
    def memory_mb(self) -> float:
        """Resident footprint estimate of one loaded instance: weights plus runtime overhead."""
        return self.onnx_bytes / 2**20 * 1.5 + 64.0

    @classmethod
    def from_dict(cls, d: dict) -> "Variant":
        d = dict(d)
        d["inputs"] = tuple(TensorSpec.from_dict(t) for t in d["inputs"])
        d["outputs"] = tuple(TensorSpec.from_dict(t) for t in d["outputs"])
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["inputs"] = [asdict(t) | {"shape": list(t.shape)} for t in self.inputs]
        d["outputs"] = [asdict(t) | {"shape": list(t.shape)} for t in self.outputs]
        return d


@dataclass
class Catalog:
    """All variants, keyed by variant name."""

    variants: dict[str, Variant] = field(default_factory=dict)

    def families(self) -> dict[str, list[Variant]]:
        """Variants grouped by family, each list ordered by accuracy (ascending)."""
        out: dict[str, list[Variant]] = {}
        for v in self.variants.values():
            out.setdefault(v.family, []).append(v)
        for vs in out.values():
            vs.sort(key=lambda v: (v.accuracy, v.name))
        return out

    def get(self, name: str) -> Variant:
        try:
            return self.variants[name]
        except KeyError:
            raise UserError(f"unknown variant {name!r}; the catalog has {sorted(self.variants)}") from None

    def add(self, variant: Variant) -> None:
        self.variants[variant.name] = variant

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Catalog":
        """Load `variants.json`; `path` may be the file or the model repository holding it."""
        p = Path(path)
        if p.is_dir():
            p = p / CATALOG_FILE
        try:
            raw = json.loads(p.read_text())
        except FileNotFoundError:
            raise UserError(f"{p}: catalog not found (run `orchestrator export` first)") from None
        except json.JSONDecodeError as e:
            raise UserError(f"{p}: not valid JSON ({e})") from None
        try:
            return cls({d["name"]: Variant.from_dict(d) for d in raw["variants"]})
        except (KeyError, TypeError) as e:
            raise UserError(f"{p}: malformed catalog entry (missing or bad field {e})") from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (temp file + rename); `path` may be the repository directory."""
        p = Path(path)
        if p.is_dir():
            p = p / CATALOG_FILE
        data = {"variants": [v.to_dict() for v in sorted(self.variants.values(), key=lambda v: (v.family, v.accuracy))]}
        write_atomic(p, json.dumps(data, indent=2) + "\n")
        return p

