"""The article's CNN, written as the article means it and initialised as Keras would.

Conv32(3x3) -> ReLU -> MaxPool2 -> Conv64(3x3) -> ReLU -> MaxPool2 -> Flatten(1600) -> Dense64
-> ReLU -> Dropout(0.5) -> Dense10 (logits). Keras' `padding='valid'` is PyTorch's padding=0.
Kernels are Glorot-uniform and biases zero (Keras defaults). About 5 MFLOP per forward pass of
one 28x28 image, about 15 MFLOP per training sample (forward + backward).

The model owns every name the training loop and the penalties need, so neither has parameter
names or layer widths written into it: `WEIGHT_GROUPS` (the kernels a weight term can act on,
by scope name; biases never), `ACTIVATION_TAPS` (the post-ReLU outputs an activity term acts
on), `DROPOUT_SHAPE` (one sample's dropout mask) and `FEATURE_DIM` (the frozen features the
linear probe reads: the flattened pool2 output). `cross_entropy` is the data term of the training
objective and of every reported loss (l2reg.train, l2reg.evaluate, l2reg.bench).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from l2reg import ops

DROPOUT_P = 0.5
# Parameter groups by scope name: what `scope=conv|dense|all` selects (l2reg.penalties).
WEIGHT_GROUPS: dict[str, tuple[str, ...]] = {
    "conv": ("conv1.weight", "conv2.weight"),
    "dense": ("fc1.weight", "fc2.weight"),
}
ACTIVATION_TAPS = ("conv1", "conv2")  # post-ReLU conv outputs A1 (N,32,26,26), A2 (N,64,11,11)
DROPOUT_SHAPE = (64,)  # the dense hidden layer the mask multiplies
FEATURE_DIM = 64 * 5 * 5  # pool2, flattened: the probe's input


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of the logits (N, 10) against labels (N,): Keras'
    SparseCategoricalCrossentropy(from_logits=True). reduction "mean" (the training loss) or "sum"
    (summed over batches, then divided by the images: the reported losses)."""
    return F.cross_entropy(logits, labels, reduction=reduction)


def activation_units(image_shape: tuple[int, ...] = (1, 28, 28)) -> int:
    """Values of the activation taps (A1 and A2 together) per image: 21,632 + 7,744 for MNIST."""
    with torch.device("meta"):  # shapes only: no memory, no draws from the global generator
        _, taps = ArticleCNN()(torch.zeros(1, *image_shape), return_activations=True)
    return sum(tap.numel() for tap in taps)


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
    the two conv layers ((N, 32, 26, 26) and (N, 64, 11, 11)), which the activation penalty uses;
    with `return_features=True` as well, `(logits, [A1, A2], features)`, features being the
    flattened pool2 output (N, 1600) before the dense layers (the linear probe's input).
    `dropout_mask` (N, 64), already scaled by 1/(1-p), replaces the module's own dropout: the
    training loop draws it from each run's own counter-based stream so that a run's masks depend
    only on its seed, never on which other runs share its pack.
    """

    def __init__(self, generator: torch.Generator | None = None, dropout: float = DROPOUT_P):
        super().__init__()
        ops.register()  # the pooling operator, before any torch.compile traces this model
        self.dropout = dropout  # the module's own dropout rate (when no explicit mask is given)
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.fc1 = nn.Linear(FEATURE_DIM, DROPOUT_SHAPE[0])
        self.fc2 = nn.Linear(DROPOUT_SHAPE[0], 10)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Glorot-uniform kernels, zero biases, drawn in a fixed order from `generator`."""
        for layer in (self.conv1, self.conv2, self.fc1, self.fc2):
            glorot_uniform_(layer.weight, generator)
            nn.init.zeros_(layer.bias)

    def conv_kernels(self) -> list[torch.Tensor]:
        """The kernels the default weight penalty (scope=conv) acts on (biases excluded)."""
        named = dict(self.named_parameters())
        return [named[name] for name in WEIGHT_GROUPS["conv"]]

    def forward(self, x, return_activations: bool = False, dropout_mask=None, return_features: bool = False):
        # CPU speed trap: max_pool2d and the elementwise ops on an NCHW (B, 32, 26, 26) A1 are
        # several times slower than on channels_last. With channels_last conv kernels oneDNN
        # returns A1 and A2 channels_last and runs without layout reorders: the training loop
        # gives single CPU runs such kernels (l2reg.train), so the whole step stays channels_last.
        a1 = F.relu(self.conv1(x))
        # max_pool_2x2 is F.max_pool2d(., 2) as one operator: torch.compile would otherwise turn
        # its backward into a slow scatter on CPU (l2reg.ops)
        a2 = F.relu(self.conv2(ops.max_pool_2x2(a1)))
        features = ops.max_pool_2x2(a2).flatten(1)
        hidden = F.relu(self.fc1(features))
        if dropout_mask is not None:
            hidden = hidden * dropout_mask
        else:
            hidden = F.dropout(hidden, self.dropout, self.training)
        logits = self.fc2(hidden)
        if return_features:
            return logits, [a1, a2], features
        if return_activations:
            return logits, [a1, a2]
        return logits
