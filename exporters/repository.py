"""Export variants into a Triton model repository, atomically and idempotently.

Layout written per variant (see docs/exporters.md):

    <out>/<name>/config.pbtxt            python backend, KIND_CPU (what a server loads by default)
    <out>/<name>/configs/{gpu,gpu-trt,ort-cpu,ort-gpu}.pbtxt
    <out>/<name>/1/model.onnx            dynamic batch, "input" FP32 [N,3,H,W] -> "logits" FP32 [N,C]
    <out>/<name>/1/model.py              exporters/triton_python_model.py
    <out>/<name>/export.json             the settings it was exported with (for the up-to-date check)
    <out>/variants.json                  the catalog (merged with entries already there)

Each variant is built in a temporary folder inside <out> and renamed into place, so an error or
Ctrl-C never leaves half a variant behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import onnxruntime
import torch
import torchvision

from exporters import counting, models, onnx_export, triton_config
from orchestrator.catalog import CATALOG_FILE, Catalog, TensorSpec, Variant
from orchestrator.errors import UserError

EXPORTER_VERSION = 1  # bump when the files written change in a way that needs re-export
PYTHON_MODEL_SOURCE = Path(__file__).with_name("triton_python_model.py")
SETTINGS_FILE = "export.json"
TEMP_PREFIX = ".export-"


@dataclass(frozen=True)
class ExportSettings:
    opset: int = 17
    max_batch_size: int = 64  # what a GPU batches well; CPU plans use the smaller batches profiled there
    intra_op_threads: int = 1
    queue_delay_us: int = 0
    seed: int = 0  # random weights: torch.manual_seed(seed)
    calibration_images: int = 8  # random weights: BatchNorm statistics from this many N(0,1) images
    trace_batch: int = 2
    verify_batch: int = 3  # differs from trace_batch, so verification also exercises the dynamic batch
    rtol: float = 1e-3  # verification bound: atol + rtol * max|torch logit| + 2 * torch's own float32 error
    atol: float = 1e-5


@dataclass
class VariantResult:
    name: str
    status: str  # "exported" | "up to date"
    seconds: dict[str, float] = field(default_factory=dict)  # step -> wall time
    verification: onnx_export.Verification | None = None
    variant: Variant | None = None


Log = Callable[[str], None]


def export_variants(names: list[str], out: str | os.PathLike, weights_dir: str | os.PathLike | None = None,
                    force: bool = False, settings: ExportSettings = ExportSettings(), log: Log = print
                    ) -> list[VariantResult]:
    """Export `names` into the repository `out`; returns one result per variant, in order."""
    specs = models.resolve(names)  # every name checked before any work
    weight_files: dict[str, Path] = {}
    if weights_dir is not None:
        wdir = Path(weights_dir)
        if not wdir.is_dir():
            raise UserError(f"weights folder {wdir} does not exist or is not a folder")
        weight_files = {s.name: models.find_weights_file(s, wdir) for s in specs}
    out = Path(out)
    created_out = _prepare_output(out)
    clean_leftovers(out, [s.name for s in specs], log)
    results: list[VariantResult] = []
    try:
        for spec in specs:
            results.append(_export_one(spec, out, weight_files.get(spec.name), force, settings, log))
    except BaseException:
        if created_out and not any(r.status == "exported" for r in results):
            shutil.rmtree(out, ignore_errors=True)  # we made it and it holds nothing of value
        raise
    return results


def _prepare_output(out: Path) -> bool:
    """Make sure `out` is a writable folder; True when this call created it."""
    if out.exists() and not out.is_dir():
        raise UserError(f"output folder {out} is not writable: it exists and is not a folder")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=TEMP_PREFIX + "probe-", dir=out)
        os.rmdir(probe)
    except OSError as e:
        if created and out.is_dir():
            shutil.rmtree(out, ignore_errors=True)
        raise UserError(f"output folder {out} is not writable: {e.strerror or e}") from None
    return created


def _export_one(spec: models.ModelSpec, out: Path, weights_file: Path | None, force: bool,
                settings: ExportSettings, log: Log) -> VariantResult:
    name = spec.name
    if weights_file is None:
        weights = models.random_weights(spec, settings.seed)
    else:
        weights = models.weights_from_file(spec, weights_file, models.file_sha256(weights_file))
    fingerprint = _fingerprint(spec, weights, settings)
    config_files = triton_config.render_all(triton_config.ConfigSettings(
        name=name, image_size=spec.image_size, num_classes=spec.num_classes, max_batch_size=settings.max_batch_size,
        intra_op_threads=settings.intra_op_threads, queue_delay_us=settings.queue_delay_us))
    small_files = {**config_files, "1/model.py": PYTHON_MODEL_SOURCE.read_text()}

    catalog = _load_catalog(out)
    target = out / name
    if not force:
        stale = _stale_reason(target, catalog.variants.get(name), fingerprint, small_files)
        if stale is None:
            log(f"{name}: up to date")
            return VariantResult(name, "up to date", variant=catalog.variants[name])
        if target.exists():
            log(f"{name}: re-exporting ({stale})")

    if weights.is_random:
        log(f"{name}: weights {weights.description} (deterministic random init, BatchNorm statistics from "
            f"{settings.calibration_images} random images); accuracy {weights.accuracy:.3f} is nominal: "
            f"{weights.accuracy_source}")
    else:
        log(f"{name}: weights {weights.path}; accuracy {weights.accuracy:.3f} ({weights.accuracy_source})")
    result = VariantResult(name, "exported")
    tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{name}-", dir=out))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; a model directory is not
        t = time.perf_counter()
        model = models.build(spec, weights, settings.seed, settings.calibration_images)
        params = counting.count_params(model)
        flops = counting.count_flops(model, spec.image_size)
        onnx_path = tmp / "1" / "model.onnx"
        onnx_path.parent.mkdir()
        try:
            onnx_export.export(model, onnx_path, spec.image_size, settings.opset, settings.trace_batch)
        except (RuntimeError, ValueError, TypeError) as e:  # an architecture the ONNX exporter cannot handle
            raise UserError(f"{name}: torch.onnx.export failed: {models.first_line(e)}") from None
        result.seconds["export"] = time.perf_counter() - t
        log(f"{name}: export  {result.seconds['export']:6.1f} s  model.onnx {onnx_path.stat().st_size / 1e6:.1f} MB, "
            f"opset {settings.opset}, {params / 1e6:.1f} M params, {flops / 1e9:.2f} GFLOPs/image")

        t = time.perf_counter()
        onnx_export.check(onnx_path, spec.image_size, spec.num_classes)
        result.seconds["check"] = time.perf_counter() - t
        log(f"{name}: check   {result.seconds['check']:6.1f} s  onnx.checker ok, dynamic batch")

        t = time.perf_counter()
        v = onnx_export.verify(model, onnx_path, spec.image_size, settings.verify_batch, settings.seed + 2,
                               settings.rtol, settings.atol)
        result.seconds["verify"] = time.perf_counter() - t
        result.verification = v
        log(f"{name}: verify  {result.seconds['verify']:6.1f} s  batch {v.batch}: max |onnxruntime - torch| = "
            f"{v.max_abs_diff:.2e} (bound {v.bound:.2e}; logit scale {v.logit_scale:.3g}, "
            f"torch float32 vs float64 {v.torch_noise:.1e}; "
            f"top-1 agrees {v.top1_agree}/{v.batch})")
        if not v.ok:
            raise UserError(f"{name}: onnxruntime output differs from torch by {v.max_abs_diff:.3g} "
                            f"(bound {v.bound:.3g}); export rejected")

        t = time.perf_counter()
        for rel, text in small_files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        (tmp / SETTINGS_FILE).write_text(json.dumps({"settings": fingerprint, "tools": _tool_versions()}, indent=2) + "\n")
        variant = _catalog_entry(spec, weights, settings, params, flops, onnx_path)
        _move_into_place(tmp, target)
        catalog.add(variant)
        catalog.save(out / CATALOG_FILE)
        result.seconds["write"] = time.perf_counter() - t
        result.variant = variant
        log(f"{name}: write   {result.seconds['write']:6.1f} s  -> {target}")
    except OSError as e:
        raise UserError(f"{name}: cannot write the variant into {out}: {e.strerror or e}"
                        f"{' (' + e.filename + ')' if getattr(e, 'filename', None) else ''}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful rename
    return result


def _fingerprint(spec: models.ModelSpec, weights: models.Weights, settings: ExportSettings) -> dict:
    """Everything that decides the files written; equal fingerprints mean equal exports."""
    s = asdict(settings)
    if not weights.is_random:  # seed and calibration do not matter with real weights
        s.pop("seed"), s.pop("calibration_images")
    return {
        "exporter_version": EXPORTER_VERSION,
        "model": spec.name,
        "image_size": spec.image_size,
        "num_classes": spec.num_classes,
        "weights": weights.description,
        "weights_sha256": weights.sha256,
        **s,
    }


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tool_versions() -> dict:
    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "onnxruntime": onnxruntime.__version__}


def _stale_reason(target: Path, entry: Variant | None, fingerprint: dict, small_files: dict[str, str]) -> str | None:
    """Why the variant at `target` must be (re-)exported; None when it is up to date."""
    if not target.is_dir():
        return "not exported yet"
    onnx_path = target / "1" / "model.onnx"
    if not onnx_path.is_file():
        return "1/model.onnx missing"
    try:
        recorded = json.loads((target / SETTINGS_FILE).read_text())["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{SETTINGS_FILE} missing or unreadable"
    if recorded != fingerprint:
        changed = sorted(k for k in set(recorded) | set(fingerprint) if recorded.get(k) != fingerprint.get(k))
        return f"export settings changed: {', '.join(changed)}"
    for rel, text in small_files.items():
        try:
            if (target / rel).read_text() != text:
                return f"{rel} differs from what this exporter writes"
        except OSError:
            return f"{rel} missing"
    if entry is None:
        return "no catalog entry"
    if entry.onnx_sha256 != models.file_sha256(onnx_path):
        return "model.onnx does not match its catalog entry"
    return None


def _load_catalog(out: Path) -> Catalog:
    return Catalog.load(out) if (out / CATALOG_FILE).exists() else Catalog()


def _catalog_entry(spec: models.ModelSpec, weights: models.Weights, settings: ExportSettings, params: int,
                   flops: int, onnx_path: Path) -> Variant:
    return Variant(
        family=spec.family,
        name=spec.name,
        accuracy=weights.accuracy,
        accuracy_source=weights.accuracy_source,
        accuracy_nominal=weights.accuracy_nominal,
        weights=weights.description,
        params=params,
        flops=flops,
        onnx_bytes=onnx_path.stat().st_size,
        max_batch_size=settings.max_batch_size,
        inputs=(TensorSpec(onnx_export.INPUT_NAME, "FP32", (3, spec.image_size, spec.image_size)),),
        outputs=(TensorSpec(onnx_export.OUTPUT_NAME, "FP32", (spec.num_classes,)),),
        onnx_sha256=models.file_sha256(onnx_path),
        exported_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _move_into_place(tmp: Path, target: Path) -> None:
    """Rename `tmp` to `target`, replacing an existing variant without a moment of half of one."""
    if not target.exists():
        os.rename(tmp, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{target.name}-old-", dir=target.parent))
    os.rmdir(old)
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def clean_leftovers(out: Path, names: list[str], log: Log = print) -> None:
    """Remove temporary folders that a killed export of `names` left in `out` (never a finished variant)."""
    prefixes = tuple(f"{TEMP_PREFIX}{name}-" for name in names)
    for p in out.iterdir():
        if p.name.startswith(prefixes) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            log(f"removed leftover temporary folder {p}")


def summary_table(out: Path) -> str:
    """The repository's catalog as a table (every variant in it, not only those just exported)."""
    catalog = _load_catalog(out)
    rows = [("variant", "family", "top-1 %", "params M", "GFLOPs", "size MB", "weights")]
    for family in sorted(catalog.families()):
        for v in catalog.families()[family]:
            rows.append((v.name, v.family, f"{v.accuracy:.3f}{'*' if v.accuracy_nominal else ''}",
                         f"{v.params / 1e6:.1f}", f"{v.flops / 1e9:.2f}", f"{v.onnx_bytes / 1e6:.1f}", v.weights))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i in (0, 1, 6) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    if any(v.accuracy_nominal for v in catalog.variants.values()):
        lines.append("* nominal: torchvision's published ImageNet-1k top-1 for the architecture; "
                     "these weights are not that checkpoint")
    return "\n".join(lines)

