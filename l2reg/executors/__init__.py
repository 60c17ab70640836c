"""Executors: where a sweep's packs train. The unit of work is a pack of runs of one context
(`pack_job.PackJob`, plain picklable values), trained by `pack_job.run_pack_job` wherever an
executor puts it; the run files (runs/<run_id>.json, written atomically under a per-run lock) are
the only state the executors share, so the results are the same whichever one ran them.

- `inprocess`: `execute`, the sweep's loop (skip what is finished, pack, train, wait for the runs
  another process holds); by default pack after pack in this process (launcher=inprocess).
- `local`: `LocalWorkers`, the same loop's packs on N worker processes of this machine
  (launcher=local).
- `slurm`: `submit_slurm` (one submitit job array per invocation, one task per pack) and
  `wait_slurm` (launcher=slurm); the only module that imports submitit when it is imported.
- `slurm_jobs`: what l2sweep reads back about the jobs it submitted: jobs.json, squeue, submitit's
  result pickles and logs, and the rule that turns them into a task's state.
- `status`: where each run of a results folder stands (`l2sweep status`): its run file, its lock,
  the scheduler.

Importing this package imports none of them (nor torch, nor submitit): import the module you use,
e.g. `from l2reg.executors import status`.
"""
