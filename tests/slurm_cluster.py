"""A real single-node SLURM cluster for the tests, built from Debian's packages.

    cluster = start_cluster(workdir)          # munged + slurmctld + slurmd, node idle
    os.environ.update(cluster.env)            # or monkeypatch.setenv(k, v) for each
    ...  sbatch / squeue / submitit.SlurmExecutor ...
    cluster.stop()                            # cancels jobs, stops the daemons, waits

Needs root and the packages `munge slurmctld slurmd slurm-client` (apt-get install). Nothing
system-wide is touched: the cluster has its own slurm.conf (SLURM_CONF), its own MUNGE key and
socket (AuthInfo=socket=...), free TCP ports, and state/spool/log folders under `workdir`.
MUNGE's folder is a separate mkdtemp() in /tmp because munged (run as the `munge` user) must be
able to reach its socket, key and log, and pytest's tmp folders are 0700 root.

Anything that stops the cluster from coming up raises SlurmClusterError with the reason and the
last lines of the daemon logs; `slurm_cluster_fixture` turns that into a pytest skip.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = "munge slurmctld slurmd slurm-client"
# Daemons live in /usr/sbin, which is not on every PATH (e.g. a non-login shell or a venv runner).
EXTRA_PATH = ("/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/local/bin")
START_TIMEOUT_S = 30.0


class SlurmClusterError(RuntimeError):
    """The cluster could not be started; the message says why (missing binary, daemon log tail)."""


def _search_path() -> str:
    parts = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    return os.pathsep.join(parts + [p for p in EXTRA_PATH if p not in parts])


def _which(name: str) -> str:
    found = shutil.which(name, path=_search_path())
    if found is None:
        raise SlurmClusterError(
            f"`{name}` not found on PATH or in /usr/sbin: install the Debian packages: "
            f"apt-get install -y {PACKAGES}"
        )
    return found


def _free_ports(n: int) -> list[int]:
    """n distinct free TCP ports (all bound at once so the kernel cannot hand out one twice)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _real_memory_mb() -> int:
    """90% of MemTotal: a node declaring more memory than slurmd finds would be drained."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return max(256, int(int(line.split()[1]) / 1024 * 0.9))
    return 1024


def _tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"    ({path} not readable)"
    return "\n".join("    " + line for line in lines[-n:]) or f"    ({path} is empty)"


def render_slurm_conf(
    *,
    cluster_name: str,
    host: str,
    ctld_port: int,
    slurmd_port: int,
    cpus: int,
    real_memory_mb: int,
    partition: str,
    state_dir: Path,
    spool_dir: Path,
    log_dir: Path,
    run_dir: Path,
    munge_socket: Path,
    cred_expire_s: int = 10,
    sched_interval_s: int = 2,
) -> str:
    return f"""\
# Written by tests/slurm_cluster.py: a single-node test cluster, not for production.
ClusterName={cluster_name}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket={munge_socket},cred_expire={cred_expire_s}
StateSaveLocation={state_dir}
SlurmdSpoolDir={spool_dir}
SlurmctldPidFile={run_dir}/slurmctld.pid
SlurmdPidFile={run_dir}/slurmd.pid
SlurmctldLogFile={log_dir}/slurmctld.log
SlurmdLogFile={log_dir}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups: track processes by parent pid, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
# Test pending jobs every few seconds, not every 60 s (a requeued job's BeginTime passing is no event).
SchedulerParameters=sched_interval={sched_interval_s},bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# No slurmdbd: accounting is off, so `sacct` cannot answer (see the tests for what submitit does).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
# One line per finished job (JobState=COMPLETED/CANCELLED/TIMEOUT...), kept for inspection.
JobCompType=jobcomp/filetxt
JobCompLoc={log_dir}/jobcomp.log
# Batch jobs may be requeued (submitit calls `scontrol requeue <id>` on SIGUSR2).
JobRequeue=1
ReturnToService=2
# Finished jobs stay visible to squeue/scontrol this long (s) before they are purged.
MinJobAge=30
# SIGTERM -> SIGKILL grace at cancel/time limit (default 30 s; submitit ignores SIGTERM).
KillWait=5
InactiveLimit=0
MailProg=/bin/true
# Declare the node as configured, whatever the hardware says (CPUs may exceed the real count).
SlurmdParameters=config_overrides
NodeName={host} NodeAddr=127.0.0.1 NodeHostname={host} CPUs={cpus} RealMemory={real_memory_mb} State=UNKNOWN
PartitionName={partition} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class Cluster:
    workdir: Path
    conf: Path
    env: dict[str, str]
    partition: str
    node: str
    cpus: int
    munge_dir: Path
    log_dir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    started_in_s: float = 0.0

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a SLURM client command (`sinfo`, `squeue`, ...) against this cluster."""
        return subprocess.run(
            [_which(args[0]), *args[1:]], env=self.subprocess_env(), capture_output=True, text=True,
            check=check, timeout=timeout,
        )

    def subprocess_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def logs(self, n: int = 15) -> str:
        """The last lines of each daemon's log (its LogFile, else what it printed before opening one)."""
        parts = []
        for name, candidates in (("munged", [self.munge_dir / "munged.out"]),
                                 ("slurmctld", [self.log_dir / "slurmctld.log", self.log_dir / "slurmctld.out"]),
                                 ("slurmd", [self.log_dir / "slurmd.log", self.log_dir / "slurmd.out"])):
            found = [p for p in candidates if p.exists() and p.stat().st_size]
            if found:
                parts.append(f"  {found[0]}:\n{_tail(found[0], n)}")
            elif name in self.procs:
                parts.append(f"  {name}: no log output")
        return "\n".join(parts)

    def _kill_job_processes(self) -> None:
        """slurmstepd and job processes outlive slurmd by design: end those of this cluster only
        (their environment names this cluster's SLURM_CONF)."""
        mine = f"SLURM_CONF={self.conf}".encode()
        me = os.getpid()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if mine in environ and (comm == "slurmstepd" or any(e.startswith(b"SLURM_JOB_ID=") for e in environ)):
                try:
                    os.kill(int(entry.name), signal.SIGKILL)
                except OSError:
                    pass

    def stop(self, timeout: float = 15) -> None:
        """Cancel every job, stop slurmd, slurmctld and munged, wait for them; idempotent."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            try:
                self.run("scancel", f"--partition={self.partition}", check=False, timeout=10)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    out = self.run("squeue", "-h", "-o", "%i", check=False, timeout=10).stdout.strip()
                    if not out:
                        break
                    time.sleep(0.5)
            except (subprocess.SubprocessError, OSError):
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._kill_job_processes()
        shutil.rmtree(self.munge_dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait(cluster: Cluster, what: str, ready, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        for name, proc in cluster.procs.items():
            if proc.poll() is not None:
                logs = cluster.logs()
                cluster.stop()
                raise SlurmClusterError(f"{name} exited with code {proc.returncode} while waiting for {what}\n{logs}")
        try:
            ok, last = ready()
        except (subprocess.SubprocessError, OSError) as e:
            ok, last = False, str(e)
        if ok:
            return
        time.sleep(0.25)
    logs = cluster.logs()
    cluster.stop()
    raise SlurmClusterError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})\n{logs}")


def start_cluster(workdir: Path, cpus: int = 2, timeout: float = START_TIMEOUT_S) -> Cluster:
    """Start munged, slurmctld and slurmd for a one-node cluster with `cpus` CPUs; return once
    `sinfo` shows the node idle. Raises SlurmClusterError (with the logs) when it cannot."""
    t0 = time.monotonic()
    if os.geteuid() != 0:
        raise SlurmClusterError("the test cluster needs root (slurmd runs jobs, munged runs as `munge`)")
    binaries = {name: _which(name) for name in ("munged", "slurmctld", "slurmd", "sbatch", "srun", "sinfo")}
    try:
        munge_user = pwd.getpwnam("munge")
    except KeyError as e:
        raise SlurmClusterError("no `munge` user: is the Debian `munge` package installed?") from e

    workdir = Path(workdir).resolve()
    state_dir, spool_dir, log_dir, run_dir = (workdir / d for d in ("state", "spool", "log", "run"))
    for d in (state_dir, spool_dir, log_dir, run_dir):
        d.mkdir(parents=True, exist_ok=True)

    # MUNGE: own key and socket; munged checks that its files belong to it and are not world-writable.
    munge_dir = Path(tempfile.mkdtemp(prefix="l2sweep-munge-"))
    os.chown(munge_dir, munge_user.pw_uid, munge_user.pw_gid)
    munge_dir.chmod(0o755)
    key = munge_dir / "munge.key"
    key.write_bytes(os.urandom(1024))
    os.chown(key, munge_user.pw_uid, munge_user.pw_gid)
    key.chmod(0o400)
    munge_socket = munge_dir / "munge.socket"

    host = socket.gethostname().split(".")[0]
    partition = "debug"
    conf = workdir / "slurm.conf"
    ctld_port, slurmd_port = _free_ports(2)
    conf.write_text(render_slurm_conf(
        cluster_name="l2sweeptest", host=host, ctld_port=ctld_port, slurmd_port=slurmd_port, cpus=cpus,
        real_memory_mb=_real_memory_mb(), partition=partition, state_dir=state_dir, spool_dir=spool_dir,
        log_dir=log_dir, run_dir=run_dir, munge_socket=munge_socket,
    ))
    env = {"SLURM_CONF": str(conf), "PATH": _search_path()}
    cluster = Cluster(workdir=workdir, conf=conf, env=env, partition=partition, node=host, cpus=cpus,
                      munge_dir=munge_dir, log_dir=log_dir)
    daemon_env = {**os.environ, **env}

    def launch(name: str, argv: list[str], out: Path, **kw) -> None:
        with open(out, "ab") as f:
            cluster.procs[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                                   env=daemon_env, start_new_session=True, **kw)

    try:
        launch("munged", [binaries["munged"], "--foreground", f"--socket={munge_socket}", f"--key-file={key}",
                          f"--pid-file={munge_dir / 'munged.pid'}", f"--seed-file={munge_dir / 'munged.seed'}",
                          f"--log-file={munge_dir / 'munged.log'}"],
               munge_dir / "munged.out", user=munge_user.pw_uid, group=munge_user.pw_gid, extra_groups=[],
               cwd=munge_dir)
        _wait(cluster, "munged's socket", lambda: (munge_socket.exists(), "no socket yet"), timeout)

        launch("slurmctld", [binaries["slurmctld"], "-D", "-c", "-f", str(conf)], log_dir / "slurmctld.out",
               cwd=workdir)

        def ctld_up():
            r = cluster.run("scontrol", "ping", check=False, timeout=10)
            return "UP" in r.stdout, (r.stdout + r.stderr).strip()

        _wait(cluster, "slurmctld (scontrol ping)", ctld_up, timeout)

        launch("slurmd", [binaries["slurmd"], "-D", "-f", str(conf), "-N", host], log_dir / "slurmd.out", cwd=workdir)

        def node_idle():
            r = cluster.run("sinfo", "-h", "-N", "-n", host, "-o", "%T", check=False, timeout=10)
            return r.stdout.strip() == "idle", (r.stdout + r.stderr).strip()

        _wait(cluster, f"node {host} idle in sinfo", node_idle, timeout)
    except SlurmClusterError:
        raise
    except BaseException as e:
        logs = cluster.logs()
        cluster.stop()
        if isinstance(e, OSError):
            raise SlurmClusterError(f"could not start the daemons: {e}\n{logs}") from e
        raise
    cluster.started_in_s = time.monotonic() - t0
    atexit.register(cluster.stop)  # daemons run in their own sessions: stop them even if nobody calls stop()
    return cluster


def slurm_cluster_fixture(tmp_path_factory, cpus: int = 4):
    """Generator for a session-scoped pytest fixture: yields a running Cluster, or skips with the
    reason when one cannot start (packages missing, not root, daemon failure). In conftest:

        @pytest.fixture(scope="session")
        def slurm_cluster(tmp_path_factory):
            yield from slurm_cluster_fixture(tmp_path_factory)

    4 CPUs by default (config_overrides makes that legal on a smaller machine) so that a test of
    array_parallelism=2 is limited by the array throttle, not by the node's CPU count.
    """
    import pytest

    try:
        cluster = start_cluster(tmp_path_factory.mktemp("slurm"), cpus=cpus)
    except SlurmClusterError as e:
        pytest.skip(f"no SLURM test cluster: {e}")
    try:
        yield cluster
    finally:
        cluster.stop()


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most (start, end) intervals open at one time: how many jobs or runs ran at once."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])  # an end sorts before a start
    current = best = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best
