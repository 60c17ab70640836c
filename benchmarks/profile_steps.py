"""Where a CPU training step's time goes: the step of one run under each code path, interleaved.

For docs/performance.md ("Where a step's time goes: code paths compared"): times `--steps`
training steps (batch from the config default, 128) of the article's model on real MNIST for each
variant, twice, interleaved, in one process:
  eager / compiled  x  NCHW kernels / channels_last kernels  x  no penalty code / every term.
"no penalty code" is the objective without penalties.loss_penalty (a baseline graph without terms);
"every term" is the objective computing every built-in loss term with its coefficient (l2sweep's
runs compute only their own terms: a baseline's graph has none).
Usage: .venv/bin/python benchmarks/profile_steps.py [--steps 60] [--data ../shared/data]
"""

import argparse
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call

from l2reg import penalties
from l2reg.data import load_mnist
from l2reg.model import ArticleCNN

TERMS = tuple(term for term in penalties.terms() if term.form == "loss")  # every built-in loss term


def objective(template, with_penalty: bool):
    def fn(params, x, y, mask, coef):
        logits, activations = functional_call(template, params, (x,), {"return_activations": True,
                                                                        "dropout_mask": mask})
        loss = F.cross_entropy(logits, y)
        if with_penalty:
            loss = loss + penalties.loss_penalty(TERMS, coef, params, activations, logits, y)
        return loss

    return fn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--data", default="../shared/data")
    args = parser.parse_args()
    data = load_mnist(args.data, download=False)
    template = ArticleCNN().to("meta").eval()
    model = ArticleCNN(generator=torch.Generator().manual_seed(0))
    coef = torch.zeros(len(TERMS))
    coef[TERMS.index(penalties.term("weights-conv-l2-loss"))] = 1e-4
    coef[TERMS.index(penalties.term("activations-taps-l2-loss"))] = 1e-4
    batches = [(data.train_x[i * 128:(i + 1) * 128], data.train_y[i * 128:(i + 1) * 128]) for i in range(args.steps)]
    mask = torch.ones(128, 64)
    variants = {}
    for compiled in (False, True):
        for layout in ("nchw", "channels_last"):
            for with_penalty in (False, True):
                params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
                if layout == "channels_last":
                    params = {n: (p.detach().contiguous(memory_format=torch.channels_last) if p.dim() == 4 else
                                  p.detach()).requires_grad_(True) for n, p in params.items()}
                fn = objective(template, with_penalty)
                if compiled:
                    fn = torch.compile(fn, dynamic=False)
                started = time.perf_counter()
                torch.autograd.grad(fn(params, *batches[0], mask, coef), list(params.values()))  # compile / warm up
                name = (f"{'compiled' if compiled else 'eager'}, {layout}, "
                        f"{'every term' if with_penalty else 'no penalty code'}")
                variants[name] = (fn, params, time.perf_counter() - started)
    timings = {name: [] for name in variants}
    for _ in range(2):
        for name, (fn, params, _) in variants.items():
            started = time.perf_counter()
            for x, y in batches:
                torch.autograd.grad(fn(params, x, y, mask, coef), list(params.values()))
            timings[name].append((time.perf_counter() - started) / len(batches) * 1000)
    print("| step variant | ms per step (2 passes) | samples/s | first call s |\n| --- | ---: | ---: | ---: |")
    for name, values in timings.items():
        best = min(values)
        print(f"| {name} | {' / '.join(f'{v:.1f}' for v in values)} | {128 / best * 1000:,.0f} | "
              f"{variants[name][2]:.1f} |")


if __name__ == "__main__":
    main()
