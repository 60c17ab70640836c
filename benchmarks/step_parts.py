"""Where one CPU training step of l2sweep goes, part by part, as train_pack runs it.

For docs/performance.md: a single run (seed 1, alpha=1e-4, target=both), compiled, channels_last,
batch 128 on real MNIST; after 10 warm-up steps, times --steps steps split into the batch gather,
the dropout mask and coefficients, the compiled forward, the backward (torch.autograd.grad), the
Adam update and the epoch sums. To compare two commits in one go, run it alternately from each
(the other through PYTHONPATH, e.g. a git worktree of the older commit).
Usage: .venv/bin/python benchmarks/step_parts.py [--steps 300] [--data ../shared/data]
"""

import argparse
import time

import torch

from l2reg import rng
from l2reg import train as T
from l2reg.data import load_mnist
from l2reg.model import DROPOUT_SHAPE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--data", default="../shared/data")
    args = parser.parse_args()
    data = load_mnist(args.data, download=False)
    batch, steps_per_epoch = 128, 422
    specs = [T.make_spec(1, alpha=1e-4, target="both")]
    coef_table = T.coefficient_table(specs, 5, steps_per_epoch).float()
    pack = T._Pack(specs, torch.device("cpu"), torch.float32, compile_steps=True, full_batch=batch)
    settings = T.TrainSettings()  # the defaults: lr 1e-3, Keras' eps 1e-7
    optimizer = T.pack_optimizer(pack, torch.full((1,), settings.lr), settings.adam_eps)
    params = optimizer.params
    order = rng.permutations(rng.keys_tensor([1], T.ORDER_STREAM, "cpu"), 0, len(data.train_y))
    dropout_keys = rng.keys_tensor([1], T.DROPOUT_STREAM, "cpu")
    parts = dict.fromkeys(("batch gather", "mask and coefficients", "forward (compiled)", "backward",
                           "Adam update", "epoch sums"), 0.0)
    sums = torch.zeros(1, 3, dtype=torch.float64)

    def step(index: int, timed: bool) -> None:
        nonlocal sums
        marks = [time.perf_counter()]
        rows = order[:, (index % steps_per_epoch) * batch:(index % steps_per_epoch + 1) * batch]
        xb, yb = data.train_x[rows], data.train_y[rows]
        marks.append(time.perf_counter())
        mask = rng.dropout_masks(dropout_keys, index, (batch, *DROPOUT_SHAPE), 0.5, torch.float32)
        coef = coef_table[index]
        marks.append(time.perf_counter())
        ce, penalty, correct = pack.train_step(xb, yb, mask, coef)
        marks.append(time.perf_counter())
        grads = torch.autograd.grad((ce + penalty).sum(), params)
        marks.append(time.perf_counter())
        optimizer.step(grads, coef)
        marks.append(time.perf_counter())
        sums += torch.stack([ce.detach() * batch, penalty.detach() * batch, correct.to(ce.dtype)], dim=1).double()
        marks.append(time.perf_counter())
        if timed:
            for name, start, end in zip(parts, marks, marks[1:]):
                parts[name] += end - start

    for index in range(10):  # compiles (or loads inductor's cache) and warms up
        step(index, False)
    started = time.perf_counter()
    for index in range(10, 10 + args.steps):
        step(index, True)
    total = time.perf_counter() - started
    print(f"{torch.get_num_threads()} threads: {1000 * total / args.steps:.2f} ms per step, "
          f"{batch * args.steps / total:,.0f} samples/s")
    for name, seconds in parts.items():
        print(f"  {name:22s} {1000 * seconds / args.steps:6.2f} ms")


if __name__ == "__main__":
    main()
