"""`orchestrator export`: torchvision classification models -> ONNX -> a Triton model repository."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from orchestrator.errors import UserError

DEFAULT_VARIANTS = "resnet18,resnet34,resnet50,resnet101,resnet152"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export torchvision models to ONNX and a Triton model repository",
        description="Export torchvision image classification models to ONNX (dynamic batch, verified against "
                    "torch) and write a Triton model repository with a catalog (variants.json). Without "
                    "--weights the models get deterministic random weights and their published accuracy "
                    "(marked nominal). Nothing is downloaded.",
    )
    p.add_argument("--variants", default=DEFAULT_VARIANTS,
                   help=f"comma-separated torchvision model names (default: {DEFAULT_VARIANTS})")
    p.add_argument("--out", default="model_repository", help="model repository folder (default: model_repository)")
    p.add_argument("--weights", metavar="DIR",
                   help="folder of torchvision state_dict files (e.g. resnet18-f37072fd.pth, or resnet18.pth)")
    p.add_argument("--force", action="store_true", help="re-export variants that are already up to date")
    p.add_argument("--list", action="store_true", help="list the model names that can be exported and exit")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        from exporters import models, repository
    except ImportError as e:
        raise UserError(f"`orchestrator export` needs torch and torchvision ({e}); "
                        "install them with: pip install 'triton-orchestrator[export]'") from None
    if args.list:
        print("\n".join(models.available_models()))
        return 0
    names = list(dict.fromkeys(n.strip() for n in args.variants.split(",") if n.strip()))
    if not names:
        raise UserError("--variants is empty; give comma-separated model names, e.g. resnet18,resnet50")
    out = Path(args.out)
    started = time.perf_counter()
    results = repository.export_variants(names, out, weights_dir=args.weights, force=args.force,
                                         log=lambda line: print(line, flush=True))
    exported = sum(r.status == "exported" for r in results)
    print(f"\nmodel repository {out.resolve()}: {exported} exported, {len(results) - exported} up to date "
          f"in {time.perf_counter() - started:.1f} s")
    print(repository.summary_table(out))
    return 0
