"""Launchers without a cluster: the config group, run ids that ignore the launcher, the SLURM keys as
sbatch flags, jobs.json, and the status rule for SLURM tasks (squeue faked, submitit's files real)."""

import time
from pathlib import Path

import pytest
import submitit

from l2reg import cpus, sweep
from l2reg.compose import expand_and_compose
from l2reg.config import ConfigError, LauncherConfig, from_dict, to_dict, validate
from l2reg.executors import local, pack_job, slurm, slurm_jobs, status
from l2reg.executors.status import RunState

SWEEP = ["alpha=0,1e-4,1e-3", "target=weights,both", "seeds=2"]


def compose(*overrides):
    return expand_and_compose(list(overrides))


def ids(*overrides):
    return [run.run_id for run in sweep.plan([cfg for _, cfg in compose(*SWEEP, *overrides)])]


def test_launcher_group_defaults_and_keys():
    [(_, cfg)] = compose()
    assert cfg.launcher == LauncherConfig()  # inprocess
    [(_, local)] = compose("launcher=local", "launcher.n_jobs=3", "launcher.threads_per_worker=2")
    assert (local.launcher.name, local.launcher.n_jobs, local.launcher.threads_per_worker) == ("local", 3, 2)
    [(_, slurm)] = compose("launcher=slurm", "launcher.partition=gpu", "launcher.gpus_per_node=1",
                           "+launcher.additional_parameters.mail_type=END", "launcher.setup=[module load cuda]")
    launcher = slurm.launcher
    assert (launcher.name, launcher.partition, launcher.gpus_per_node) == ("slurm", "gpu", 1)
    assert (launcher.timeout_min, launcher.max_num_timeout, launcher.signal_delay_s) == (60, 3, 90)
    assert launcher.additional_parameters == {"mail_type": "END"} and launcher.setup == ["module load cuda"]
    # a run file keeps the launcher that trained it; files written before launchers existed still load
    assert from_dict(to_dict(slurm)) == slurm
    old = to_dict(cfg)
    del old["launcher"]
    assert from_dict(old).launcher == LauncherConfig()


def test_the_same_sweep_has_the_same_run_ids_with_every_launcher():
    inprocess = ids()
    assert len(inprocess) == 10
    assert ids("launcher=local", "launcher.n_jobs=2") == inprocess
    assert ids("launcher=slurm", "launcher.partition=x", "launcher.timeout_min=5", "launcher.array_parallelism=2",
               "launcher.setup=[true]") == inprocess


@pytest.mark.parametrize("overrides, message", [
    (["launcher=local", "launcher.n_jobs=0"], "launcher.n_jobs=0: must be >= 1"),
    (["launcher=local", "launcher.threads_per_worker=0"], "launcher.threads_per_worker=0: must be >= 1"),
    (["launcher=slurm", "launcher.timeout_min=0"], "launcher.timeout_min=0: must be >= 1 (minutes)"),
    (["launcher=slurm", "launcher.timeout_min=1", "launcher.signal_delay_s=60"],
     "launcher.signal_delay_s=60: must be in [0, timeout_min * 60) seconds"),
    (["launcher=slurm", "launcher.max_num_timeout=-1"], "launcher.max_num_timeout=-1: must be >= 0"),
    (["launcher=slurm", "launcher.array_parallelism=0"], "launcher.array_parallelism=0: must be >= 1"),
    (["launcher=slurm", "launcher.mem_gb=0"], "launcher.mem_gb=0: must be >= 1"),
    (["launcher=slurm", "launcher.partition="], "launcher.partition is empty"),
    (["launcher.partition=gpu"], "launcher.partition applies to launcher=slurm only (this sweep has "
                                 "launcher=inprocess)"),
    (["launcher=slurm", "launcher.n_jobs=4"], "launcher.n_jobs applies to launcher=local only"),
])
def test_launcher_validation(overrides, message):
    [(_, cfg)] = compose(*overrides)
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert message in str(error.value)


def test_unknown_launcher_names_the_choices():
    with pytest.raises(ConfigError, match="launcher=pbs is unknown: choose one of inprocess, local, slurm"):
        compose("launcher=pbs")


def test_slurm_keys_become_sbatch_flags(tmp_path):
    """As hydra-submitit-launcher passes them; timeout_min always (submitit's own default is 5 min)."""
    launcher = LauncherConfig(name="slurm", partition="gpu", timeout_min=30, cpus_per_task=4, gpus_per_node=1,
                              mem_gb=16, qos="high", account="acc", constraint="a100", exclude="n1", gres="gpu:1",
                              array_parallelism=3, max_num_timeout=2, setup=["module load cuda"],
                              additional_parameters={"mail_type": "END"}, signal_delay_s=120)
    ex = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm", slurm_max_num_timeout=2)
    ex.update_parameters(**slurm.slurm_parameters(launcher, "l2sweep-x"))
    text = submitit.slurm.slurm._make_sbatch_string(command="CMD", folder=tmp_path / "%j", map_count=5,
                                                    **ex._executor.parameters)
    for flag in ("--time=30", "--cpus-per-task=4", "--gpus-per-node=1", "--mem=16GB", "--partition=gpu", "--qos=high",
                 "--account=acc", "--constraint=a100", "--exclude=n1", "--gres=gpu:1", "--array=0-4%3",
                 "--signal=USR2@120", "--mail-type=END", "--job-name=l2sweep-x"):
        assert f"#SBATCH {flag}\n" in text, flag
    assert text.index("module load cuda") < text.index("srun")
    defaults = slurm.slurm_parameters(LauncherConfig(name="slurm"), "x")
    assert defaults == {"timeout_min": 60, "name": "x", "slurm_signal_delay_s": 90, "slurm_array_parallelism": 256}


def test_worker_cores_round_robin():
    assert [local.worker_cores(i, 1, [0, 1]) for i in range(3)] == [[0], [1], [0]]
    assert [local.worker_cores(i, 2, [0, 1, 2, 3]) for i in range(2)] == [[0, 1], [2, 3]]
    assert local.worker_cores(0, 3, [5]) == [5]


def test_squeue_array_ranges_are_expanded():
    assert slurm_jobs._expand_ids("7_[2-4,9%2]") == ["7_2", "7_3", "7_4", "7_9"]
    assert slurm_jobs._expand_ids("7_3") == ["7_3"] and slurm_jobs._expand_ids("8") == ["8"]


# ---- the status rule, with submitit's real files and a faked squeue ----

def ok_record(run_id, finished_unix=None):
    return {"run_id": run_id, "status": "ok", "metrics": {"test_acc": 97.5}, "seconds": 3.0,
            "finished_unix": finished_unix or time.time()}


def failed_record(run_id, error, finished_unix=None):
    return {"run_id": run_id, "status": "failed", "error": error, "metrics": {}, "seconds": 1.0,
            "finished_unix": finished_unix or time.time()}


class Folder:
    """A results folder with one SLURM submission of one task per run, and the task's submitit files."""

    def __init__(self, root: Path, tasks: dict[str, str], submitted_unix: float):
        self.root = root
        self.folder = str(root / ".submitit" / "%j")
        (root / "runs").mkdir(parents=True)
        slurm_jobs.append_jobs(root, {"submitted_at": "t", "submitted_unix": submitted_unix, "job_ids": ["7"],
                                     "submitit_folder": self.folder,
                                     "tasks": [{"job_id": job, "run_ids": [rid]} for rid, job in tasks.items()]})

    def paths(self, job_id):
        paths = submitit.core.utils.JobPaths(self.folder, job_id=job_id)
        paths.folder.mkdir(parents=True, exist_ok=True)
        return paths

    def result(self, job_id, outcome):
        submitit.core.utils.cloudpickle_dump(outcome, self.paths(job_id).result_pickle)

    def stderr(self, job_id, text):
        self.paths(job_id).stderr.write_text(text)

    def run_file(self, record):
        from l2reg import files

        files.write_json_atomic(self.root / "runs" / f"{record['run_id']}.json", record)


def test_status_rule_for_slurm_tasks(tmp_path, monkeypatch):
    t0 = time.time()
    tasks = {"active-with-error-pickle": "7_0", "pending": "7_1", "done": "7_2", "failed-file": "7_3",
             "cancelled": "7_4", "lost": "7_5", "raised": "7_6", "ended-without-file": "7_7"}
    f = Folder(tmp_path / "res", tasks, submitted_unix=t0 - 60)
    # a requeue interrupted by SIGTERM leaves an error pickle while SLURM has the job queued again
    f.result("7_0", ("error", "Traceback ...\nsubprocess.CalledProcessError: Command '['scontrol', 'requeue', '8']'"))
    f.result("7_2", ("success", {"runs": {"done": "ok"}, "busy": []}))
    f.run_file(ok_record("done"))
    f.result("7_3", ("success", {"runs": {"failed-file": "failed"}, "busy": []}))
    f.run_file(failed_record("failed-file", "UncompletedJobError: Job not requeued because: timed-out too many "
                                            "times."))
    f.stderr("7_4", "submitit WARNING - Bypassing signal SIGTERM\n"
                    "slurmstepd-vm: error: *** JOB 12 ON vm CANCELLED AT 2026-01-02T03:04:05 ***\n")
    f.stderr("7_5", "slurmstepd-vm: error: *** JOB 13 ON vm CANCELLED AT 2026-01-02T03:04:05 DUE TO TIME LIMIT ***\n")
    f.result("7_6", ("error", "Traceback (most recent call last):\n  ...\nRuntimeError: broken"))
    f.result("7_7", ("success", {"runs": {}, "busy": ["ended-without-file"]}))
    f.run_file(failed_record("not-submitted", "ValueError: nope"))
    queue = {"7_0": "PENDING", "7_1": "PENDING", "7_2": "COMPLETED", "7_3": "COMPLETED", "7_4": "CANCELLED",
             "7_7": "COMPLETED"}  # 7_5 and 7_6 purged
    asked = []
    monkeypatch.setattr(slurm_jobs, "squeue_states", lambda job_ids: asked.append(sorted(job_ids)) or queue)
    states = status.run_states(f.root, [*tasks, "not-submitted", "never"])
    got = {rid: (s.state, s.job_id) for rid, s in states.items()}
    assert got == {"active-with-error-pickle": ("queued", "7_0"), "pending": ("queued", "7_1"), "done": ("done", None),
                   "failed-file": ("failed", "7_3"), "cancelled": ("failed", "7_4"), "lost": ("failed", "7_5"),
                   "raised": ("failed", "7_6"), "ended-without-file": ("failed", "7_7"),
                   "not-submitted": ("failed", None), "never": ("not started", None)}
    assert "7_2" not in asked[0]  # a finished run needs no scheduler
    assert states["done"].detail == "ok, test 97.50 %"
    assert states["failed-file"].detail == "UncompletedJobError: Job not requeued because: timed-out too many times."
    assert states["cancelled"].detail == ("SLURM ended the job: CANCELLED (*** JOB 12 ON vm CANCELLED AT "
                                          "2026-01-02T03:04:05 ***)")
    assert states["cancelled"].log_tail[-1].endswith("CANCELLED AT 2026-01-02T03:04:05 ***")
    assert states["cancelled"].log.endswith("7_4_0_log.err")
    assert states["lost"].detail.startswith("the job ended without a result and SLURM has forgotten it (*** JOB 13")
    assert "DUE TO TIME LIMIT" in states["lost"].detail
    assert states["raised"].detail == "the job raised RuntimeError: broken"
    assert "without writing it" in states["ended-without-file"].detail
    assert states["not-submitted"].detail == "ValueError: nope"


def test_a_failed_file_older_than_the_submission_is_not_the_reason(tmp_path, monkeypatch):
    f = Folder(tmp_path / "res", {"r": "9"}, submitted_unix=time.time())
    f.run_file(failed_record("r", "old error", finished_unix=time.time() - 3600))
    monkeypatch.setattr(slurm_jobs, "squeue_states", lambda job_ids: {"9": "RUNNING"})
    assert status.run_states(f.root, ["r"])["r"].state == "running"
    monkeypatch.setattr(slurm_jobs, "squeue_states", lambda job_ids: {"9": "OUT_OF_MEMORY"})
    state = status.run_states(f.root, ["r"])["r"]
    assert (state.state, state.detail) == ("failed", "SLURM ended the job: OUT_OF_MEMORY")


def test_without_squeue_an_open_task_is_unknown_not_failed(tmp_path, monkeypatch):
    f = Folder(tmp_path / "res", {"r": "9", "s": "10"}, submitted_unix=time.time())
    f.result("10", ("success", {"runs": {"s": "ok"}, "busy": []}))
    f.run_file(ok_record("s"))

    def no_squeue(job_ids):
        raise slurm_jobs.SchedulerError("squeue not found on PATH")

    monkeypatch.setattr(slurm_jobs, "squeue_states", no_squeue)
    reader = status.StatusReader(f.root)
    states = reader()
    assert {rid: s.state for rid, s in states.items()} == {"r": "unknown", "s": "done"}
    assert reader.scheduler_error == "squeue not found on PATH"


def test_a_run_trained_on_this_host_is_running_by_its_lock(tmp_path):
    runs = tmp_path / "res" / "runs"
    runs.mkdir(parents=True)
    lock = pack_job.RunLock(runs / ".locks", "r")
    assert lock.acquire()
    try:
        state = status.run_states(tmp_path / "res", ["r"])["r"]
        assert (state.state, state.detail) == ("running", f"pid {__import__('os').getpid()} on this host")
    finally:
        lock.release()
    assert status.run_states(tmp_path / "res", ["r"])["r"] == RunState("r", "not started")
    assert lock.acquire()  # status never took the lock
    lock.release()


def test_jobs_json_keeps_every_submission(tmp_path):
    for n in range(3):
        slurm_jobs.append_jobs(tmp_path, {"job_ids": [str(n)], "submitted_unix": n, "submitit_folder": "f",
                                         "tasks": [{"job_id": str(n), "run_ids": [f"r{n}"]}]})
    assert [s["job_ids"] for s in slurm_jobs.read_jobs(tmp_path)] == [["0"], ["1"], ["2"]]
    (tmp_path / "jobs.json").write_text("{truncated")
    assert slurm_jobs.read_jobs(tmp_path) == []


def test_a_damaged_jobs_json_is_kept_aside_not_replaced(tmp_path):
    (tmp_path / "jobs.json").write_text("{truncated")
    slurm_jobs.append_jobs(tmp_path, {"job_ids": ["5"], "submitted_unix": 5, "submitit_folder": "f",
                                     "tasks": [{"job_id": "5", "run_ids": ["r5"]}]})
    kept = list(tmp_path.glob("jobs.json.damaged-*"))
    assert len(kept) == 1 and kept[0].read_text() == "{truncated"
    assert [s["job_ids"] for s in slurm_jobs.read_jobs(tmp_path)] == [["5"]]


def test_non_final_squeue_states_stay_active_and_completed_without_a_result_is_not_failed(tmp_path, monkeypatch):
    # PREEMPTED (PreemptMode=REQUEUE) and SPECIAL_EXIT can start again; a state SLURM adds later too
    tasks = {"preempted": "8_0", "special": "8_1", "newer": "8_2", "completed-unseen": "8_3"}
    f = Folder(tmp_path / "res", tasks, submitted_unix=time.time() - 60)
    queue = {"8_0": "PREEMPTED", "8_1": "SPECIAL_EXIT", "8_2": "SOME_NEW_STATE", "8_3": "COMPLETED"}
    monkeypatch.setattr(slurm_jobs, "squeue_states", lambda job_ids: queue)
    states = status.run_states(f.root, list(tasks))
    assert {rid: s.state for rid, s in states.items()} == {"preempted": "queued", "special": "queued",
                                                           "newer": "queued", "completed-unseen": "unknown"}
    # once squeue has forgotten it and the result never came, the job is lost (failed)
    monkeypatch.setattr(slurm_jobs, "squeue_states", lambda job_ids: {})
    assert status.run_states(f.root, ["completed-unseen"])["completed-unseen"].state == "failed"


@pytest.mark.parametrize("timeout_min, delay, refused", [
    (60, 900, True), (60, 600, False), (60, 601, True), (600, 7080, False), (600, 7081, True), (5, 250, False),
])
def test_signal_delay_longer_than_submitit_counts_as_a_time_limit_is_refused(timeout_min, delay, refused):
    [(_, cfg)] = compose("launcher=slurm", f"launcher.timeout_min={timeout_min}", f"launcher.signal_delay_s={delay}")
    if refused:
        with pytest.raises(ConfigError, match=f"launcher.signal_delay_s={delay}: at most"):
            validate(cfg)
    else:
        validate(cfg)


def test_default_workers_fill_the_cores_at_threads_per_worker(monkeypatch):
    monkeypatch.setattr(cpus, "available_cores", lambda: [0, 1, 2, 3, 4])
    assert local.default_n_jobs("cpu") == 5
    assert local.default_n_jobs("cpu", threads_per_worker=2) == 2
    assert local.default_n_jobs("cpu", threads_per_worker=8) == 1


def test_the_executors_import_neither_torch_nor_submitit_until_slurm_is_used():
    import subprocess
    import sys

    probe = ("import sys; import l2reg.executors, l2reg.executors.inprocess, l2reg.executors.local, "
             "l2reg.executors.status, l2reg.executors.slurm_jobs, l2reg.executors.pack_job, l2reg.runner; "
             "light = sorted(m for m in ('torch', 'submitit') if m in sys.modules); "
             "import l2reg.executors.slurm; print(light, 'submitit' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "[] True"


def test_a_slurm_task_pickles_its_pack_by_module_path(tmp_path):
    """submitit pickles the task and its PackJob by reference: a node imports them from these modules."""
    import pickle

    from submitit.core.utils import cloudpickle_dump, pickle_load

    [job] = pack_job.make_jobs(sweep.plan([cfg for _, cfg in compose("alpha=1e-3", "seed=0")])[1:], tmp_path, 1)
    cloudpickle_dump((slurm.PackTask(), job), tmp_path / "task.pkl")
    text = (tmp_path / "task.pkl").read_bytes()
    assert b"l2reg.executors.slurm" in text and b"l2reg.executors.pack_job" in text
    task, loaded = pickle_load(tmp_path / "task.pkl")
    assert type(task) is slurm.PackTask and loaded == job and pickle.loads(pickle.dumps(loaded)) == job
    remaining = task.checkpoint(loaded).args[0]  # nothing written yet: the whole pack goes again
    assert remaining == job


@pytest.mark.parametrize(("env", "available", "expected"), [
    ({}, [0, 1, 2, 3], [0, 1, 2, 3]),  # not a SLURM task: every core of the mask
    ({"SLURM_CPUS_PER_TASK": "4"}, [0, 1, 2, 3], [0, 1, 2, 3]),  # confined by SLURM already
    ({"SLURM_CPUS_PER_TASK": "2"}, [5, 6], [5, 6]),
    ({"SLURM_CPUS_PER_TASK": "1", "SLURM_ARRAY_TASK_ID": "0"}, [0, 1, 2, 3], [0]),  # an unconfined node
    ({"SLURM_CPUS_PER_TASK": "1", "SLURM_ARRAY_TASK_ID": "5"}, [0, 1, 2, 3], [1]),  # round-robin by task
    ({"SLURM_CPUS_PER_TASK": "2", "SLURM_ARRAY_TASK_ID": "1"}, [3, 0, 1, 2], [2, 3]),
    ({"SLURM_CPUS_ON_NODE": "1"}, [0, 1], [0]),  # no --cpus-per-task given: the CPUs SLURM allocated
])
def test_a_slurm_task_trains_on_as_many_cores_as_it_was_allocated(env, available, expected):
    assert slurm.allocated_cores(env, available) == expected
