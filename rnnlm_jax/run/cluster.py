"""Launching a sweep's trials as one job array through submitit (`--mode=sweep`): SLURM's
sbatch, or processes on this machine. Imported only when a sweep is launched (submitit is
the `cluster` extra)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import submitit

from rnnlm_jax.run.sweeps import CLUSTERS, PACKAGE_ROOT

log = logging.getLogger(__name__)


class Trial(submitit.helpers.Checkpointable):
    """One trial as a job: `python -m rnnlm_jax <the sweep's flags> --sweep_index=i`.

    Being `Checkpointable`, it is requeued when SLURM preempts it or its time runs out; the
    requeued command finds its checkpoint in the trial's workdir and resumes.
    """

    def __init__(self, argv: list[str], index: int):
        self.argv, self.index = list(argv), index

    def __call__(self) -> int:
        cmd = [sys.executable, "-m", "rnnlm_jax", *self.argv, f"--sweep_index={self.index}"]
        path = [str(PACKAGE_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
        return subprocess.run(cmd, check=True, env=env).returncode


def launch(
    argv: list[str], workdir: Path, num_trials: int, slurm: dict[str, Any], wait: bool | None
) -> list:
    """Submits every trial as one job array (submitit's logs in `<workdir>/submitit`).

    `slurm`: `cluster` (auto, slurm or local), and `partition`, `timeout_min`,
    `gpus_per_task`, `cpus_per_task`, `array_parallelism`, used where SLURM runs the jobs.
    Waits for the jobs when they run locally (or `wait` is True) and returns them.
    """
    cluster = slurm.get("cluster", "auto")
    assert cluster in CLUSTERS, cluster
    executor = submitit.AutoExecutor(
        folder=workdir / "submitit", cluster=None if cluster == "auto" else cluster
    )
    params = dict(
        name=f"rnnlm_jax:{workdir.name}",
        timeout_min=slurm["timeout_min"],
        cpus_per_task=slurm["cpus_per_task"],
        slurm_array_parallelism=slurm["array_parallelism"],
        slurm_additional_parameters={"requeue": True},
    )
    if slurm["gpus_per_task"]:
        params["slurm_gpus_per_task"] = slurm["gpus_per_task"]
    if slurm["partition"]:
        params["slurm_partition"] = slurm["partition"]
    executor.update_parameters(**params)
    with executor.batch():
        jobs = [executor.submit(Trial(argv, i)) for i in range(num_trials)]
    log.info(f"submitted {len(jobs)} trials ({executor.cluster}): {jobs[0].job_id} ...")
    if wait or (wait is None and executor.cluster == "local"):
        failed = []
        for i, job in enumerate(jobs):
            try:
                job.result()
            except Exception as e:  # the trial's own log says why
                failed.append(f"trial {i} ({job.paths.stdout}): {str(e).splitlines()[-1]}")
        if failed:
            raise RuntimeError("; ".join(failed))
    return jobs
