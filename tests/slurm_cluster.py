"""A real one-node SLURM for the tests: `munged`, `slurmctld` and `slurmd` (Debian's `munge`
and `slurm-wlm`) started in a temporary folder with a config of their own, on free loopback
ports, and stopped afterwards. `.ci/run` installs the packages; elsewhere the tests that use
it skip, saying why.

    with one_node_slurm(tmp_path) as slurm:
        subprocess.run(["sbatch", ...], env=slurm.env)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")

# cred_expire: how long a requeued job waits before it may start again (default 120 s).
SLURM_CONF = """\
ClusterName=rnnlmtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket},cred_expire=10
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobRequeue=1
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=30
InactiveLimit=0
MinJobAge=300
SlurmdTimeout=300
NodeName={host} NodeAddr=127.0.0.1 CPUs=4 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


@dataclasses.dataclass
class Slurm:
    root: Path
    env: dict

    def run(self, *cmd: str, timeout: float = 60, check: bool = True):
        r = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode:
            raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
        return r

    def job_state(self, job_id: str) -> str:
        """The job's state (`squeue`, then `scontrol` once it has left the queue)."""
        r = self.run("scontrol", "show", "job", job_id, check=False)
        for word in r.stdout.split():
            if word.startswith("JobState="):
                return word.split("=", 1)[1]
        return "UNKNOWN"

    def wait_job(self, job_id: str, states=("COMPLETED",), timeout: float = 600) -> str:
        """Waits until the job (every task of an array) is in a final state; returns it."""
        final = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.run("squeue", "-h", "-j", job_id, "-o", "%T", check=False)
            if r.returncode == 0 and not r.stdout.strip():
                state = self.job_state(job_id)
                if state in final or state == "UNKNOWN":
                    return state
            time.sleep(0.5)
        raise TimeoutError(f"job {job_id} still running after {timeout} s")


def missing() -> str | None:
    """Why a one-node SLURM cannot be started here (None if it can)."""
    absent = [d for d in DAEMONS if not shutil.which(d, path="/usr/sbin:/usr/bin:/sbin")]
    if absent:
        names = ", ".join(absent)
        return f"needs SLURM and munge ({names} not installed: apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "needs root to start slurmd"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def one_node_slurm(root: Path, timeout: float = 60):
    """Starts munged, slurmctld and slurmd under `root`; yields a `Slurm` whose `env` points
    the SLURM commands at them; stops them (and every job) on the way out."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    for sub in ("state", "spool", "munge"):
        (root / sub).mkdir(exist_ok=True)
    (root / "munge").chmod(0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    socket_path = root / "munge" / "munge.socket"
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(
        SLURM_CONF.format(
            host=host,
            root=root,
            ctld_port=_free_port(),
            slurmd_port=_free_port(),
            munge_socket=socket_path,
        )
    )
    path = "/usr/sbin:/usr/bin:/sbin:/bin:" + os.environ.get("PATH", "")
    env = dict(os.environ, SLURM_CONF=str(conf), PATH=path)
    for var in [v for v in env if v.startswith("SLURM_") and v != "SLURM_CONF"]:
        del env[var]  # a test run inside a SLURM job must not leak that job into these
    procs = []

    def start(*cmd):
        log = open(root / f"{Path(cmd[0]).name}.out", "w")
        procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=log))

    try:
        start("munged", "--foreground", "--force", f"--socket={socket_path}",
              f"--key-file={key}", f"--log-file={root / 'munge' / 'munged.log'}",
              f"--pid-file={root / 'munge' / 'munged.pid'}",
              f"--seed-file={root / 'munge' / 'munged.seed'}")  # fmt: skip
        _wait(lambda: socket_path.exists(), timeout, "munged", root)
        start("slurmctld", "-D", "-i", "-f", str(conf))
        start("slurmd", "-D", "-f", str(conf), "-N", host)
        slurm = Slurm(root, env)

        def idle():
            r = slurm.run("sinfo", "-h", "-o", "%T", check=False)
            return r.returncode == 0 and r.stdout.strip() == "idle"

        _wait(idle, timeout, "the node to be idle", root)
        yield slurm
    finally:
        with contextlib.suppress(Exception):
            subprocess.run(["scancel", "--full", "-u", "root"], env=env, timeout=30)
            time.sleep(1)
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait(ready, timeout: float, what: str, root: Path) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            logs = {p.name: p.read_text()[-800:] for p in root.glob("*.log") if p.is_file()}
            logs.update({p.name: p.read_text()[-800:] for p in root.glob("*.out")})
            raise RuntimeError(f"waited {timeout:.0f} s for {what}; logs: {logs}")
        time.sleep(0.2)
