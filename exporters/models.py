"""Which torchvision classification models exist, what they expect, and how to build one.

Only metadata is read from torchvision's weight enums (file names, published accuracy, crop
size); nothing is ever downloaded. Without a weights folder a model gets deterministic random
weights, with BatchNorm statistics calibrated on random images so that its logits stay on a
sane scale (an uncalibrated random ResNet-152 emits logits around 1e8, where no numerical check
of the export means anything).
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision

from orchestrator.errors import UserError

DEFAULT_VARIANTS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")

# The weights whose published accuracy stands for an architecture when its weights are random.
REFERENCE_WEIGHTS = "IMAGENET1K_V1"


@dataclass(frozen=True)
class TorchvisionWeights:
    """One entry of a torchvision weights enum (metadata only)."""

    tag: str  # e.g. "IMAGENET1K_V1"
    file_name: str  # e.g. "resnet18-f37072fd.pth"; the suffix is the start of the file's sha256
    accuracy: float | None  # ImageNet-1k top-1, percent
    crop_size: int

    @property
    def sha256_prefix(self) -> str:
        m = re.search(r"-([0-9a-f]{6,})\.pth$", self.file_name)
        return m.group(1) if m else ""


@dataclass(frozen=True)
class ModelSpec:
    """What the exporter needs to know about one architecture."""

    name: str
    family: str
    image_size: int
    num_classes: int
    weights: tuple[TorchvisionWeights, ...]  # torchvision's published weights, reference first

    @property
    def reference(self) -> TorchvisionWeights | None:
        return self.weights[0] if self.weights else None

    def weight_file_names(self) -> list[str]:
        """File names accepted in a weights folder, in order of preference."""
        return [w.file_name for w in self.weights] + [f"{self.name}.pth"]


@dataclass(frozen=True)
class Weights:
    """Where a model's weights came from, and the accuracy that goes with them."""

    description: str  # "random(seed=0)" or the state_dict file name
    path: Path | None  # the state_dict file; None for random weights
    sha256: str  # of the state_dict file; "" for random weights
    accuracy: float
    accuracy_source: str
    accuracy_nominal: bool  # True unless the file is a known torchvision checkpoint

    @property
    def is_random(self) -> bool:
        return self.path is None


def available_models() -> list[str]:
    """Every torchvision image classification model name."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def family_of(name: str) -> str:
    """The family a variant belongs to: the letters its name starts with (resnet50 -> resnet).

    `wide_resnet50_2` -> `wide_resnet`: a leading word followed by another word keeps both.
    """
    m = re.match(r"[a-z]+(?:_[a-z]+(?=\d))?", name.lower())
    family = m.group(0) if m else name
    # efficientnet_b0 / regnet_y_400mf: a single letter after "_" is a sub-series, not a word.
    return re.sub(r"_[a-z]$", "", family)


def resolve(names: list[str]) -> list[ModelSpec]:
    """Specs for `names`, or a UserError naming the first unknown one with close matches."""
    known = available_models()
    specs = []
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=4, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else "; run `orchestrator export --list` to see them"
            raise UserError(f"unknown model {name!r}: not a torchvision classification model{hint}")
        specs.append(_spec(name))
    return specs


def _spec(name: str) -> ModelSpec:
    entries: list[TorchvisionWeights] = []
    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        enum = []
    for w in enum:
        acc = w.meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")
        crop = getattr(w.transforms, "keywords", {}).get("crop_size", 224)
        entries.append(TorchvisionWeights(w.name, w.url.rsplit("/", 1)[-1], float(acc) if acc is not None else None,
                                          int(crop)))
    entries.sort(key=lambda w: w.tag != REFERENCE_WEIGHTS)  # the reference first, others in enum order
    reference = entries[0] if entries else None
    num_classes = 1000
    if enum:
        num_classes = len(next(iter(enum)).meta.get("categories", [None] * 1000))
    return ModelSpec(name=name, family=family_of(name), image_size=reference.crop_size if reference else 224,
                     num_classes=num_classes, weights=tuple(entries))


def random_weights(spec: ModelSpec, seed: int) -> Weights:
    ref = spec.reference
    if ref is None or ref.accuracy is None:
        return Weights(f"random(seed={seed})", None, "", 0.0, "unknown (torchvision publishes no ImageNet-1k figure)", True)
    return Weights(f"random(seed={seed})", None, "", ref.accuracy, f"torchvision {ref.tag} acc@1", True)


def find_weights_file(spec: ModelSpec, weights_dir: Path) -> Path:
    """The state_dict file for `spec` in `weights_dir` (torchvision's file name, or `<name>.pth`)."""
    for file_name in spec.weight_file_names():
        path = weights_dir / file_name
        if path.is_file():
            return path
    raise UserError(f"{weights_dir}: no weights for {spec.name} (expected one of {', '.join(spec.weight_file_names())})")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_from_file(spec: ModelSpec, path: Path, sha256: str) -> Weights:
    """Identify the checkpoint by its content hash (torchvision names files after it)."""
    match = next((w for w in spec.weights if w.sha256_prefix and sha256.startswith(w.sha256_prefix)), None)
    if match is not None and match.accuracy is not None:
        return Weights(path.name, path, sha256, match.accuracy, f"torchvision {match.tag} acc@1", False)
    ref = spec.reference
    if ref is None or ref.accuracy is None:
        return Weights(path.name, path, sha256, 0.0, "unknown (not a known torchvision checkpoint)", True)
    return Weights(path.name, path, sha256, ref.accuracy,
                   f"torchvision {ref.tag} acc@1 (assumed: the sha256 of {path.name} matches no torchvision checkpoint)", True)


def build(spec: ModelSpec, weights: Weights, seed: int, calibration_images: int = 8) -> torch.nn.Module:
    """The model in eval mode with `weights` loaded (or deterministic random weights)."""
    torch.manual_seed(seed)
    model = torchvision.models.get_model(spec.name, weights=None)
    if weights.is_random:
        _calibrate_batchnorm(model, spec, seed, calibration_images)
    else:
        _load_state_dict(model, spec, weights.path)
    return model.eval()


def _load_state_dict(model: torch.nn.Module, spec: ModelSpec, path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path}: not a loadable PyTorch state_dict ({type(e).__name__}: {first_line(e)})") from None
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UserError(f"{path}: holds a {type(state).__name__}, not a state_dict")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UserError(f"{path}: state_dict does not match {spec.name}: "
                        f"{_mismatch(model.state_dict(), state) or first_line(e)}") from None


def _mismatch(expected: dict, state: dict) -> str:
    """A one-line summary of how `state` differs from the model's own state_dict."""
    # Old torchvision checkpoints lack BatchNorm's num_batches_tracked; PyTorch fills it in.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in expected if k in state and hasattr(state[k], "shape")
                  and tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = []
    if mismatched:
        k = mismatched[0]
        problems.append(f"{len(mismatched)} shape mismatches (e.g. {k}: file {tuple(state[k].shape)}, "
                        f"model {tuple(expected[k].shape)})")
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    return "; ".join(problems)


def _calibrate_batchnorm(model: torch.nn.Module, spec: ModelSpec, seed: int, images: int) -> None:
    """Set BatchNorm running statistics from one pass over random N(0,1) images (deterministic)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one batch sets the statistics exactly
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(images, 3, spec.image_size, spec.image_size, generator=generator)
    model.train()
    with torch.no_grad():
        model(x)
    for m in norms:
        m.momentum = 0.1  # torchvision's default again
    model.eval()


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else ""
