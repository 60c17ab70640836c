"""The article's CNN, written as the article means it and initialised as Keras would.

Conv32(3x3) -> ReLU -> MaxPool2 -> Conv64(3x3) -> ReLU -> MaxPool2 -> Flatten(1600) -> Dense64
-> ReLU -> Dropout(0.5) -> Dense10 (logits). Keras' `padding='valid'` is PyTorch's padding=0.
Kernels are Glorot-uniform and biases zero (Keras defaults). About 5 MFLOP per forward pass of
one 28x28 image, about 15 MFLOP per training sample (forward + backward).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

DROPOUT_P = 0.5
CONV_LAYERS = ("conv1", "conv2")


def glorot_uniform_(weight: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Keras' GlorotUniform: U(-l, l), l = sqrt(6 / (fan_in + fan_out)), receptive field included."""
    receptive = weight[0][0].numel() if weight.dim() > 2 else 1
    fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        return weight.uniform_(-limit, limit, generator=generator)


class ArticleCNN(nn.Module):
    """The article's model. `forward(x)` gives logits (N, 10) for images x (N, 1, 28, 28) in [0, 1].

    `forward(x, return_activations=True)` gives `(logits, [A1, A2])`, the post-ReLU outputs of
    the two conv layers ((N, 32, 26, 26) and (N, 64, 11, 11)), which the activation penalty uses.
    `dropout_mask` (N, 64), already scaled by 1/(1-p), replaces the module's own dropout: the
    training loop draws it from each run's own generator so that a run's masks depend only on its
    seed, never on which other runs share its pack.
    """

    def __init__(self, generator: torch.Generator | None = None):
        super().__init__()
        # CPU speed trap: max_pool2d on an NCHW (B, 32, 26, 26) tensor is ~6x slower than on
        # channels_last; converting A1 first makes a whole CPU training step ~15 % faster. Set by
        # the training loop for unbatched CPU runs only (vmap packs keep the default layout).
        self.pool_channels_last = False
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.fc1 = nn.Linear(64 * 5 * 5, 64)
        self.fc2 = nn.Linear(64, 10)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Glorot-uniform kernels, zero biases, drawn in a fixed order from `generator`."""
        for layer in (self.conv1, self.conv2, self.fc1, self.fc2):
            glorot_uniform_(layer.weight, generator)
            nn.init.zeros_(layer.bias)

    def conv_kernels(self) -> list[torch.Tensor]:
        """The kernels the weight penalty acts on (biases excluded)."""
        return [self.conv1.weight, self.conv2.weight]

    def forward(self, x, return_activations: bool = False, dropout_mask=None):
        a1 = F.relu(self.conv1(x))
        pooled_input = a1.contiguous(memory_format=torch.channels_last) if self.pool_channels_last else a1
        a2 = F.relu(self.conv2(F.max_pool2d(pooled_input, 2)))
        hidden = F.relu(self.fc1(F.max_pool2d(a2, 2).flatten(1)))
        if dropout_mask is not None:
            hidden = hidden * dropout_mask
        else:
            hidden = F.dropout(hidden, DROPOUT_P, self.training)
        logits = self.fc2(hidden)
        if return_activations:
            return logits, [a1, a2]
        return logits
