"""Model size figures for the catalog: parameter count and FLOPs per image."""

from __future__ import annotations

import torch


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: torch.nn.Module, image_size: int) -> int:
    """Floating-point operations for one image: 2 x the multiply-accumulates of every conv and linear layer.

    Counted with forward hooks on a real forward pass (so every layer the model actually runs is
    counted, whatever the architecture). Norms, activations and pooling are left out; they are a
    few percent of the total for the models torchvision ships.
    """
    macs = 0

    def conv_hook(module: torch.nn.modules.conv._ConvNd, inputs, output) -> None:
        nonlocal macs
        per_output = (module.in_channels // module.groups) * _prod(module.kernel_size)
        macs += output.numel() // output.shape[0] * per_output

    def linear_hook(module: torch.nn.Linear, inputs, output) -> None:
        nonlocal macs
        macs += output.numel() // output.shape[0] * module.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, torch.nn.modules.conv._ConvNd):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, torch.nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size))
    finally:
        for h in handles:
            h.remove()
    return 2 * macs


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out
