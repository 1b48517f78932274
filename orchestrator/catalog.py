"""The variant catalog: what each exported model is (`variants.json` in the model repository).

Variant names and families are held to the safe set of orchestrator/names.py (they become Triton
model names and reach command lines); a missing or mistyped field is an error naming the file,
the entry and the field.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from orchestrator.errors import UserError
from orchestrator.files import write_atomic
from orchestrator.names import check_name

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


class MalformedCatalog(UserError, ValueError):
    """A catalog entry with a missing or bad field (a ValueError too, for readers of a catalog sent over HTTP)."""


def _field(d: dict, key: str, kind: type | tuple[type, ...], where: str):
    """`d[key]` if it is of `kind` (bools are not numbers), else a MalformedCatalog naming the field."""
    if key not in d:
        raise MalformedCatalog(f"{where}: field {key!r} is missing")
    value = d[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise MalformedCatalog(f"{where}: field {key!r} has a bad value {value!r}")
    return value


def _count(d: dict, key: str, where: str, minimum: int = 0) -> int:
    value = _field(d, key, int, where)
    if value < minimum:
        raise MalformedCatalog(f"{where}: field {key!r} must be an integer >= {minimum}, not {value!r}")
    return value


def _safe_name(d: dict, key: str, where: str) -> str:
    _field(d, key, str, where)
    try:
        return check_name(d[key], f"{where}: field {key!r}")
    except UserError as e:
        raise MalformedCatalog(str(e)) from None


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
    def from_dict(cls, d: dict, where: str = "tensor") -> "TensorSpec":
        if not isinstance(d, dict):
            raise MalformedCatalog(f"{where}: not an object")
        name = _field(d, "name", str, where)
        dtype = _field(d, "dtype", str, where)
        if dtype not in TRITON_TO_NUMPY:
            raise MalformedCatalog(f"{where}: field 'dtype' must be one of {', '.join(TRITON_TO_NUMPY)}, not {dtype!r}")
        shape = _field(d, "shape", list, where)
        if not all(isinstance(x, int) and not isinstance(x, bool) and (x > 0 or x == -1) for x in shape):
            raise MalformedCatalog(f"{where}: field 'shape' must be a list of sizes (> 0, or -1), not {shape!r}")
        return cls(name=name, dtype=dtype, shape=tuple(shape))


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
    def from_dict(cls, d: dict, where: str = "variant") -> "Variant":
        """A variant from its `variants.json` entry; MalformedCatalog (naming `where` and the field) if bad."""
        if not isinstance(d, dict):
            raise MalformedCatalog(f"{where}: not an object")
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise MalformedCatalog(f"{where}: unknown field {sorted(unknown)[0]!r}")
        accuracy = _field(d, "accuracy", (int, float), where)
        if not (math.isfinite(accuracy) and 0 <= accuracy <= 100):
            raise MalformedCatalog(f"{where}: field 'accuracy' must be a top-1 percentage in 0..100, not {accuracy!r}")
        tensors = {key: tuple(TensorSpec.from_dict(t, f"{where}: {key}[{i}]")
                              for i, t in enumerate(_field(d, key, list, where)))
                   for key in ("inputs", "outputs")}
        return cls(family=_safe_name(d, "family", where), name=_safe_name(d, "name", where), accuracy=accuracy,
                   accuracy_source=_field(d, "accuracy_source", str, where),
                   accuracy_nominal=_field(d, "accuracy_nominal", bool, where),
                   weights=_field(d, "weights", str, where), params=_count(d, "params", where),
                   flops=_count(d, "flops", where), onnx_bytes=_count(d, "onnx_bytes", where),
                   max_batch_size=_count(d, "max_batch_size", where, minimum=1),
                   inputs=tensors["inputs"], outputs=tensors["outputs"],
                   onnx_sha256=str(d.get("onnx_sha256", "")), exported_at=str(d.get("exported_at", "")))

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
            raw = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"{p}: catalog not found (run `orchestrator export` first)") from None
        except IsADirectoryError:
            raise UserError(f"{p}: is a directory, not a catalog file") from None
        except UnicodeDecodeError as e:
            raise UserError(f"{p}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
        except OSError as e:
            raise UserError(f"{p}: cannot read the catalog ({e.strerror})") from None
        except json.JSONDecodeError as e:
            raise UserError(f"{p}: not valid JSON ({e})") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("variants"), list):
            raise UserError(f"{p}: expected an object with a 'variants' list")
        catalog = cls()
        for i, d in enumerate(raw["variants"]):
            variant = Variant.from_dict(d, f"{p}: variant #{i + 1}")
            if variant.name in catalog.variants:
                raise UserError(f"{p}: variant #{i + 1}: duplicate name {variant.name!r}")
            catalog.add(variant)
        return catalog

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (temp file + rename); `path` may be the repository directory."""
        p = Path(path)
        if p.is_dir():
            p = p / CATALOG_FILE
        data = {"variants": [v.to_dict() for v in sorted(self.variants.values(), key=lambda v: (v.family, v.accuracy))]}
        write_atomic(p, json.dumps(data, indent=2) + "\n")
        return p

