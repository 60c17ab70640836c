"""l2reg: the library behind the `l2sweep` command.

Modules own one thing each (see ../shared/DESIGN.md, "Architecture"): config (Hydra compose and
validation), data (MNIST tensors), model (the article's CNN), penalties and schedules (the
formulas), train (the one training loop), sweep (planning), executors (where packs train),
runner (a sweep end to end: the entry point), stats and report.
Nothing heavy happens at import time.
"""

__version__ = "0.1.0"
