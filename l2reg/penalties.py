"""The penalty formulas (DESIGN.md "Definitions"), in one place.

- weights:     P = alpha * sum_c sum(W_c ** 2)          (conv kernels only, biases excluded);
               Keras `kernel_regularizer=L2(alpha)`, which has no 1/2.
- activations: P = alpha * (1/B) * sum_c sum(A_c ** 2)   (post-ReLU conv outputs, batch of B);
               Keras `activity_regularizer=L2(alpha)` on a Conv2D with activation='relu'.
- norm="l1" replaces the squares by absolute values.
Both functions work on a single model and, unchanged, inside torch.func.vmap over a pack of runs
(there `alpha` is a 0-d tensor per run and shapes are per run).
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from l2reg.config import NORMS


def norm_sum(tensor: torch.Tensor, norm: str) -> torch.Tensor:
    """sum(x ** 2) for l2, sum(|x|) for l1."""
    if norm == "l2":
        return tensor.square().sum()
    if norm == "l1":
        return tensor.abs().sum()
    raise ValueError(f"unknown norm {norm!r}: choose one of {', '.join(NORMS)}")


def weight_penalty(model: nn.Module | Iterable[torch.Tensor], alpha, norm: str = "l2") -> torch.Tensor:
    """alpha * sum over conv kernels of sum(W**2) (or |W|). `model` is an ArticleCNN or its kernels."""
    kernels = model.conv_kernels() if isinstance(model, nn.Module) else list(model)
    return alpha * sum(norm_sum(kernel, norm) for kernel in kernels)


def activation_penalty(activations: Iterable[torch.Tensor], alpha, norm: str = "l2") -> torch.Tensor:
    """alpha * (1/B) * sum over layers of sum(A**2) (or |A|), B = the batch size (dim 0)."""
    activations = list(activations)
    batch_size = activations[0].shape[0]
    return alpha * sum(norm_sum(a, norm) for a in activations) / batch_size


def uses(target: str) -> tuple[bool, bool]:
    """(penalize weights?, penalize activations?) for a target."""
    return target in ("weights", "both"), target in ("activations", "both")
