"""The CPU cores this process may run on: the one definition the training loop (its thread
count) and the executors (which cores each worker is pinned to) share."""

from __future__ import annotations

import os


def available_cores() -> list[int]:
    """The core numbers in this process' affinity mask (`taskset -c 1` gives [1]), sorted; every
    core where the platform has no affinity masks."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))
