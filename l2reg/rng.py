"""Counter-based random numbers for packs: each run's data order and dropout masks as pure
functions of (run seed, epoch or step, position), drawn for every run of a pack at once.

Why not one torch.Generator per run: that is a Python loop and one kernel launch per run per
step for the dropout masks (and one randperm per run per epoch), so a GPU pack of 64 runs spends
its steps launching hundreds of tiny kernels. A hash of a counter has no state: one set of
about 30 elementwise kernels draws the masks of the whole pack, a run's numbers cannot depend on
which runs share its pack, and, the arithmetic being exact integer arithmetic, CPU and GPU draw
the very same masks and orders.

The hash is Chris Wellons' "lowbias32" (xor-shift-multiply on 32 bits, a bijection with
near-ideal avalanche), evaluated in int64 tensors with every intermediate product kept below
2**63: integer overflow in torch's C++ kernels is undefined behaviour, so no product may wrap.
Run keys come from SplitMix64 in Python integers (exact for any seed), once per run.
Quality needed here is that of dropout and shuffling, not cryptography; tests check the keep
rate, independence between runs, steps and units, and that orders are permutations.
"""

from __future__ import annotations

import functools
import math

import torch

MASK32 = 0xFFFFFFFF
_GOLDEN32 = 0x9E3779B9  # Weyl increment: spreads consecutive counters over the 32-bit ring
_LOWBIAS32 = (0x7FEB352D, 0x846CA68B)


def _mul32(x, constant: int):
    """(x * constant) mod 2**32 for x in [0, 2**32), in pieces so that no product exceeds 2**49."""
    low, high = constant & 0xFFFF, constant >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & MASK32


def hash32(x):
    """lowbias32 of x in [0, 2**32): an int64 tensor or a Python int, same values either way."""
    x = x ^ (x >> 16)
    x = _mul32(x, _LOWBIAS32[0])
    x = x ^ (x >> 15)
    x = _mul32(x, _LOWBIAS32[1])
    return x ^ (x >> 16)


def run_key(seed: int, stream: int) -> int:
    """A 32-bit key for one (seed, stream < 16): SplitMix64 of seed * 16 + stream, exact in Python ints."""
    if not 0 <= stream < 16:
        raise ValueError(f"stream={stream}: must be in 0..15")
    z = (seed * 16 + stream + 0x9E3779B97F4A7C15) % 2**64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
    return (z ^ (z >> 31)) & MASK32


def keys_tensor(seeds: list[int], stream: int, device: torch.device | str) -> torch.Tensor:
    """(runs,) int64 run keys on the device."""
    return torch.tensor([run_key(s, stream) for s in seeds], dtype=torch.int64, device=device)


def uniform_bits(keys: torch.Tensor, counter: int, count: int) -> torch.Tensor:
    """(runs, count) int64 in [0, 2**32): `count` random words per run for one counter value
    (an epoch, a step). Row r depends only on keys[r], counter and the position."""
    row_keys = hash32((keys + _mul32(counter % 2**32, _GOLDEN32) + 1) & MASK32)  # (runs,)
    return hash32((row_keys[:, None] + _weyl_positions(count, keys.device)[None, :]) & MASK32)


@functools.lru_cache(maxsize=8)
def _weyl_positions(count: int, device: torch.device) -> torch.Tensor:
    """(count,) position offsets, the same every step: made once, not in each training step."""
    return _mul32(torch.arange(count, dtype=torch.int64, device=device), _GOLDEN32)


def dropout_masks(keys: torch.Tensor, step: int, shape: tuple[int, ...], keep: float,
                  dtype: torch.dtype) -> torch.Tensor:
    """(runs, *shape) inverted-dropout masks for training step `step`: 1/keep with probability
    `keep`, else 0 (keep = 1 - dropout rate). A partial batch gets the leading rows of a full one."""
    count = math.prod(shape)
    threshold = round(keep * 2**32)  # P(bits < threshold) = keep exactly for keep = k / 2**32
    kept = uniform_bits(keys, step, count) < threshold
    return kept.view(len(keys), *shape).to(dtype).div_(keep)


def permutations(keys: torch.Tensor, epoch: int, n: int) -> torch.Tensor:
    """(runs, n) int64: each run's order of the n training samples in `epoch` (a sort of random
    words; the stable sort breaks the rare ties by position, so it is deterministic everywhere)."""
    return torch.argsort(uniform_bits(keys, epoch, n), dim=1, stable=True)
