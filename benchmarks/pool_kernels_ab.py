"""The max-pool operator of this checkout against an earlier commit's, in one process (docs/performance.md).

Two compiled training runs (seed 1, alpha=1e-4, target=both, batch 128, channels_last, real MNIST, as
train_pack runs them), the same except for the pooling operator: this checkout's `l2reg.ops` and the
`l2reg/ops.py` of `--before` (a git worktree of the earlier commit, loaded as a module of its own; its
operators have other names, e.g. `l2sweep::max_pool_2x2_v1` at a7b0dee, PyTorch's kernels).
After warm-up, --blocks pairs of --steps steps, alternately, the order swapped every pair. Prints each
block's ms per step and the per-pair ratios: one process and interleaved blocks, so that this shared
machine's slow spells hit both sides alike (whole processes one after another differ by more than
the effect).
Usage: .venv/bin/python benchmarks/pool_kernels_ab.py --before ../l2sweep-at-a7b0dee [--blocks 16] [--steps 50]
       [--data ../shared/data]
"""

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from l2reg import rng
from l2reg import train as T
from l2reg.data import load_mnist
from l2reg.model import DROPOUT_SHAPE, ArticleCNN


def model_with_pool(pool):
    """ArticleCNN whose two max-pools are `pool` (its forward as l2reg/model.py's, for the training step)."""

    class Model(ArticleCNN):
        def forward(self, x, return_activations=False, dropout_mask=None, return_features=False):
            a1 = F.relu(self.conv1(x))
            a2 = F.relu(self.conv2(pool(a1)))
            hidden = F.relu(self.fc1(pool(a2).flatten(1))) * dropout_mask
            return self.fc2(hidden), [a1, a2]

    return Model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="a checkout (git worktree) of the earlier commit")
    parser.add_argument("--blocks", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--data", default="../shared/data")
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("ops_before", Path(args.before) / "l2reg" / "ops.py")
    ops_before = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ops_before)
    ops_before.register()
    data = load_mnist(args.data, download=False)
    batch, full_steps = 128, len(data.train_y) // 128  # full batches only: the compiled graph's shape
    specs = [T.make_spec(1, alpha=1e-4, target="both")]
    coef_table = T.coefficient_table(specs, 5, full_steps + 1).float()
    settings = T.TrainSettings()
    order = rng.permutations(rng.keys_tensor([1], T.ORDER_STREAM, "cpu"), 0, len(data.train_y))
    dropout_keys = rng.keys_tensor([1], T.DROPOUT_STREAM, "cpu")
    sides = {}
    for side, model in (("this checkout", ArticleCNN), ("--before", model_with_pool(ops_before.max_pool_2x2))):
        pack = T._Pack(specs, torch.device("cpu"), torch.float32, compile_steps=False, full_batch=batch)
        pack.compiled = torch.compile(T._objective(model().to("meta").eval(), pack.terms), dynamic=False)
        sides[side] = pack, T.pack_optimizer(pack, torch.full((1,), settings.lr), settings.adam_eps)

    def block(side: str, start: int) -> float:
        pack, optimizer = sides[side]
        started = time.perf_counter()
        for index in range(start, start + args.steps):
            rows = order[:, (index % full_steps) * batch:(index % full_steps + 1) * batch]
            mask = rng.dropout_masks(dropout_keys, index, (batch, *DROPOUT_SHAPE), 0.5, torch.float32)
            coef = coef_table[index % len(coef_table)]
            ce, penalty, _ = pack.train_step(data.train_x[rows], data.train_y[rows], mask, coef)
            optimizer.step(torch.autograd.grad((ce + penalty).sum(), optimizer.params), coef)
        return 1000 * (time.perf_counter() - started) / args.steps

    names = list(sides)
    for side in names * 2:  # compiles (or loads inductor's cache) and warms up both
        block(side, 0)
    times = {side: [] for side in names}
    index = args.steps
    for pair in range(args.blocks):
        for side in (names if pair % 2 == 0 else names[::-1]):
            times[side].append(block(side, index))
            index += args.steps
    ratios = [new / old for new, old in zip(times[names[0]], times[names[1]])]
    print(f"{torch.get_num_threads()} threads, {args.blocks} pairs of {args.steps} steps, ms per step:")
    for side, values in times.items():
        print(f"  {side:14s} median {statistics.median(values):6.2f}  [{', '.join(f'{v:.1f}' for v in values)}]")
    print(f"this checkout / --before per pair: median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, "
          f"max {max(ratios):.3f}); this checkout faster in {sum(r < 1 for r in ratios)} of {len(ratios)} pairs")


if __name__ == "__main__":
    main()
