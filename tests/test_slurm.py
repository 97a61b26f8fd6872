"""Against a real one-node SLURM (`slurm_cluster.one_node_slurm`): a sweep submitted to
`sbatch` and its summary, an `sbatch --requeue` training job that `scontrol requeue`
interrupts and that resumes, and `srun -n 2` (two processes through `jax.distributed`)
ending where one process ends. Skipped, saying why, where SLURM is not installed."""

import json
import sys
import time

import pytest
from conftest import ROOT
from slurm_cluster import missing, one_node_slurm

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))

CONFIG = f"{ROOT / 'configs' / 'timemachine.py'}:smoke"
MAIN = str(ROOT / "main.py")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    with one_node_slurm(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


def metrics(workdir):
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_sweep_through_sbatch_and_its_summary(slurm, tmp_path):
    workdir = tmp_path / "sweep"
    r = slurm.run(sys.executable, MAIN, f"--config={CONFIG}", "--mode=sweep", "--cluster=slurm",
                  "--cpus_per_task=1", "--nowait", f"--workdir={workdir}", timeout=300)  # fmt: skip
    assert "submitted 3 trials (slurm)" in r.stdout, r.stdout + r.stderr
    assert "--mode=summary" in r.stdout  # not waited for: the summary comes later
    job = r.stdout.split(": ", 1)[1].split()[0].split("_")[0]
    assert slurm.wait_job(job, timeout=600) == "COMPLETED", slurm.run(
        "scontrol", "show", "job", job, check=False
    ).stdout
    for name in ("lr=0.5", "lr=1.0,clip=0.5", "seed=1"):
        assert [m["epoch"] for m in metrics(workdir / name)] == [1, 2, 3, 4], name
    r = slurm.run(sys.executable, MAIN, "--mode=summary", f"--workdir={workdir}")
    lines = r.stdout.splitlines()
    assert lines[0].startswith("| index | trial | lr | clip | seed |") and len(lines) == 5


def test_a_requeued_job_saves_on_sigterm_and_resumes(slurm, tmp_path):
    workdir, log = tmp_path / "w", tmp_path / "job.out"
    script = tmp_path / "train.sh"
    script.write_text(
        "#!/bin/bash\n"
        f"exec {sys.executable} {MAIN} --config={CONFIG} --workdir={workdir} "
        "--config.max_tokens=-1 --config.num_epochs=30 --config.log_every_epochs=100\n"
    )
    r = slurm.run("sbatch", "--parsable", "--requeue", "--open-mode=append", f"--output={log}",
                  str(script))  # fmt: skip
    job = r.stdout.strip()
    deadline = time.monotonic() + 300
    while len(metrics(workdir)) < 3:  # mid-run: a few epochs done, most to come
        assert time.monotonic() < deadline, log.read_text() if log.exists() else "no output"
        time.sleep(0.2)
    slurm.run("scontrol", "requeue", job)
    # The requeued job runs again and finishes.
    deadline = time.monotonic() + 600
    while "trained " not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, log.read_text() if log.exists() else "no output"
        time.sleep(0.5)
    out = log.read_text()
    assert "stopped by SIGTERM after epoch" in out, out
    stopped = int(out.split("stopped by SIGTERM after epoch ")[1].split(":")[0])
    assert f"resuming {workdir} after epoch {stopped}" in out, out
    assert 3 <= stopped < 30
    assert [m["epoch"] for m in metrics(workdir)] == list(range(1, 31))  # no epoch twice


def test_srun_with_two_processes_ends_where_one_process_ends(slurm, tmp_path):
    args = [f"--config={CONFIG}", "--config.num_epochs=3"]
    one = slurm.run(sys.executable, MAIN, *args, f"--workdir={tmp_path / 'one'}", timeout=300)
    assert "trained 3 epochs" in one.stdout, one.stderr
    two = slurm.run("srun", "-n", "2", "--cpus-per-task=1", sys.executable, MAIN, *args,
                    f"--workdir={tmp_path / 'two'}", timeout=600)  # fmt: skip
    assert two.stdout.count("trained 3 epochs") == 1, two.stdout + two.stderr  # process 0 speaks
    a, b = metrics(tmp_path / "one")[-1], metrics(tmp_path / "two")[-1]
    assert b["perplexity"] == pytest.approx(a["perplexity"], rel=1e-4)
