"""Local workers (launcher=local): `LocalWorkers`, the `run_jobs` of l2reg.executors.inprocess.execute
that trains the packs on N worker processes of this machine (spawn start method).

Each worker is pinned to its own `threads_per_worker` cores (round-robin over the cores this
process may use, l2reg.cpus) and, on CUDA, to one GPU (round-robin through CUDA_VISIBLE_DEVICES,
set before the worker touches CUDA). A worker runs l2reg.executors.pack_job.run_pack_job on the
packs it takes from a queue and sends the records back; Ctrl-C (or any error) here ends the
workers, and a worker ends itself when this process dies.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import time
from typing import Callable, Sequence

from l2reg import cpus
from l2reg.config import LauncherConfig
from l2reg.executors.pack_job import PackJob, run_pack_job


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [item.strip() for item in visible.split(",") if item.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def default_n_jobs(device_type: str, threads_per_worker: int = 1) -> int:
    """launcher.n_jobs when unset: on a CPU as many workers as the available cores hold at
    threads_per_worker cores each; one per GPU on CUDA."""
    if device_type == "cuda":
        return max(1, len(visible_gpus()))
    return max(1, len(cpus.available_cores()) // max(1, threads_per_worker))


def worker_cores(index: int, threads: int, cores: Sequence[int]) -> list[int]:
    """The cores of worker `index`: `threads` consecutive ones, round-robin, so workers share
    cores only when there are more worker threads than cores."""
    return sorted({cores[(index * threads + k) % len(cores)] for k in range(threads)})


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when its parent dies (killed, not Ctrl-C), so no worker goes on
    training packs nobody waits for; elsewhere a watchdog thread notices the new parent pid."""
    import ctypes
    import threading

    parent = os.getppid()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        if libc.prctl(1, signal.SIGTERM, 0, 0, 0) == 0 and os.getppid() == parent:  # 1 = PR_SET_PDEATHSIG
            return
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _worker_main(index: int, cores: list[int], gpu: str | None, threads: int, tasks, results) -> None:
    """A worker process: take packs from `tasks` until None, train each, send back its records."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent ends us
    _die_with_parent()
    results.cancel_join_thread()  # never hang at exit on a parent that stopped reading
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before anything initialises CUDA in this process
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)  # l2reg.train.configure_device: one torch thread per available core
    import torch

    torch.set_num_threads(max(1, min(threads, len(cores) or threads)))
    cache: dict = {}
    while (item := tasks.get()) is not None:
        number, job = item
        results.put(("started", index, number, os.getpid()))
        try:
            result = run_pack_job(job, None, cache)
            results.put(("done", index, number, result.records, result.busy))
        except Exception as error:  # not training (run_pack_job records those): locks, the file system
            results.put(("error", index, number, f"{type(error).__name__}: {error}"))


class LocalWorkers:
    """`run_jobs` for l2reg.executors.inprocess.execute: the jobs on `n_jobs` worker processes of
    this machine. `notify` gets 'status' (text) and 'done' (records) events."""

    def __init__(self, launcher: LauncherConfig, device_type: str, notify: Callable | None = None):
        self.n_jobs = launcher.n_jobs or default_n_jobs(device_type, launcher.threads_per_worker)
        self.threads = launcher.threads_per_worker
        self.gpus = visible_gpus() if device_type == "cuda" else []
        self.notify = notify or (lambda event, **info: None)

    def __call__(self, jobs: list[PackJob]) -> tuple[list[dict], list[str]]:
        if not jobs:
            return [], []
        run = _Round(self, jobs)
        try:
            run.start()
            run.collect()
        finally:
            run.stop()  # Ctrl-C or an error here too: end the workers (their locks die with them)
        return run.records, run.busy


class _Round:
    """One call of LocalWorkers: its jobs, the worker processes that train them, what came back."""

    def __init__(self, owner: LocalWorkers, jobs: list[PackJob]):
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited torch or CUDA state
        self.jobs, self.notify = jobs, owner.notify
        self.tasks, self.results = context.Queue(), context.Queue()
        for number, job in enumerate(jobs):
            self.tasks.put((number, job))
        self.n = min(owner.n_jobs, len(jobs))
        for _ in range(self.n):
            self.tasks.put(None)
        cores = cpus.available_cores()
        self.workers = [context.Process(target=_worker_main, name=f"l2sweep-worker-{i}", daemon=True,
                                        args=(i, worker_cores(i, owner.threads, cores),
                                              owner.gpus[i % len(owner.gpus)] if owner.gpus else None, owner.threads,
                                              self.tasks, self.results))
                        for i in range(self.n)]
        self.records: list[dict] = []
        self.busy: list[str] = []
        self.in_flight: dict[int, int] = {}  # worker -> job number
        self.finished: set[int] = set()
        self.dead: set[int] = set()

    def start(self) -> None:
        for worker in self.workers:
            worker.start()
        self.notify("status", text=f"{self.n} worker processes starting")

    def collect(self) -> None:
        """Handle the workers' messages until every job is finished or every worker is dead."""
        while len(self.finished) < len(self.jobs):
            try:
                self.handle(self.results.get(timeout=0.5))
                continue
            except queue.Empty:
                pass
            self.bury_dead()
            if len(self.dead) == self.n and len(self.finished) < len(self.jobs):
                for number in sorted(set(range(len(self.jobs))) - self.finished):
                    self.lose(number, "every worker process died before this pack started")
                return

    def handle(self, message) -> None:
        kind, worker, number = message[:3]
        if kind == "started":
            self.in_flight[worker] = number
            self.notify("status", text=f"{len(self.in_flight)} of {self.n} workers training")
            return
        self.in_flight.pop(worker, None)
        self.finished.add(number)
        if kind == "done":
            self.records.extend(message[3])
            self.busy.extend(message[4])
            if message[3]:
                self.notify("done", records=message[3])
        else:
            self.lose(number, message[3])

    def bury_dead(self) -> None:
        """A worker that exited: what it sent before it died, then its pack in flight is lost."""
        for i, worker in enumerate(self.workers):
            if i in self.dead or worker.exitcode is None:
                continue
            self.dead.add(i)
            while True:
                try:
                    self.handle(self.results.get(timeout=0.2))
                except queue.Empty:
                    break
            if i in self.in_flight:
                number = self.in_flight.pop(i)
                self.finished.add(number)
                self.lose(number, f"worker process died (exit code {worker.exitcode}) while training this pack")

    def lose(self, number: int, why: str) -> None:
        """Records (not written: the runs stay to do) for the runs of a pack no worker finished."""
        lost = [{"run_id": rid, "status": "failed", "error": why, "seconds": 0.0} for rid in self.jobs[number].run_ids]
        self.records.extend(lost)
        self.notify("done", records=lost)

    def stop(self) -> None:
        all_done = len(self.finished) >= len(self.jobs)
        for worker in self.workers:
            if worker.is_alive() and (worker.pid is not None):
                worker.join(timeout=10 if all_done else 0)
                if worker.is_alive():
                    worker.terminate()
        for worker in self.workers:
            if worker.pid is not None:
                worker.join(timeout=10)
                if worker.is_alive():
                    worker.kill()
                    worker.join(timeout=5)
        self.tasks.cancel_join_thread()
        self.results.cancel_join_thread()
