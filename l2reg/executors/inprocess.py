"""The in-process executor (launcher=inprocess, the default): `execute` trains what is not
finished yet, pack after pack, in this process. It is also the loop the local workers run under
(`run_jobs=LocalWorkers(...)`): skip the finished runs, make the packs, hand them out, then wait
for the runs another process holds and pick up any it did not finish.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from l2reg import sweep
from l2reg.executors.pack_job import PackJob, RunLock, locks_folder, make_jobs, run_pack_job


@dataclass
class SweepOutcome:
    results_dir: Path
    planned: int
    skipped: int  # finished before this call: not trained again
    trained: list[dict]  # the records of the runs trained (or failed) in this call

    @property
    def not_ok(self) -> list[dict]:
        return [r for r in self.trained if r["status"] != "ok"]


def execute(planned: Sequence[sweep.PlannedRun], results_dir: Path, data: dict | None = None, force: bool = False,
            progress: Callable | None = None, run_jobs: Callable | None = None) -> SweepOutcome:
    """Train what is not finished yet, pack by pack, in this process (or, with
    `run_jobs(jobs) -> (records, busy)`, wherever that puts the jobs: l2reg.executors.local).

    Each run is locked while it trains: a second process on the same folder skips the runs the
    first one holds, trains the rest, then waits for the held ones and picks up any that the
    first process did not finish. `progress(event, **info)` gets 'start' (total, skipped), 'pack'
    (runs, epochs), 'epoch' (epoch, step, steps, epochs), 'done' (records) and 'waiting' (runs
    another process holds) events, and from local workers 'status' (text).
    """
    results_dir = Path(results_dir)
    runs_dir = results_dir / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    done = set() if force else sweep.finished_ids(runs_dir)
    # seed-major order: a sweep stopped part-way has every setting with the same seeds (the
    # baseline of each seed first), so its interim report compares like with like
    todo = sorted((run for run in planned if run.run_id not in done), key=lambda run: run.config.seed)
    skipped = len(planned) - len(todo)
    notify = progress or (lambda event, **info: None)
    notify("start", total=len(planned), skipped=skipped)
    trained: list[dict] = []
    size = sweep.pack_size_for(todo, todo[0].config.train.device) if todo else 1
    data_cache = {} if data is None else data

    def in_process(jobs: list[PackJob]) -> tuple[list[dict], list[str]]:
        records, busy = [], []
        for job in jobs:
            result = run_pack_job(job, notify, data_cache)
            records += result.records
            busy += result.busy
        return records, busy

    run_jobs = run_jobs or in_process
    first_pass = True
    while todo:
        records, busy = run_jobs(make_jobs(todo, results_dir, size, force=force and first_pass))
        trained += records
        if busy:
            notify("waiting", runs=busy)
            for rid in busy:  # block until the other process lets go of each
                lock = RunLock(locks_folder(runs_dir), rid)
                lock.acquire(wait=True)
                lock.release()
        todo = [run for run in todo if run.run_id in busy and not sweep.is_finished(runs_dir / f"{run.run_id}.json")]
        first_pass = False
    return SweepOutcome(results_dir, len(planned), skipped, trained)
