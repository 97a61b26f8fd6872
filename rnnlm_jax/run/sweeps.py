"""Sweeps: the trials a config file's `get_sweep()` lists, one workdir each, launched as one
job array through submitit, and the table that gathers their final metrics.

A config file may define `get_sweep(arg=None)` returning a list of override dicts (the `arg`
is the `:variant` of `--config`). Trial i is the locked config with override set i applied
(a field the config does not have is an error, never a new field); it runs in
`<workdir>/<name made of its overrides>`, so a preempted or requeued trial finds its
checkpoint there and resumes. `--sweep_index=i` runs one trial (e.g. `$SLURM_ARRAY_TASK_ID`
from your own sbatch script); `--mode=sweep` submits them all with submitit's
`AutoExecutor`: `--cluster=slurm` (sbatch), `local` (processes on this machine) or `auto`
(submitit's choice: SLURM where `srun` exists). Each trial runs `python -m rnnlm_jax`, so an
installed package sweeps without the repository beside it.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import ml_collections
import submitit

from rnnlm_jax.config.checks import ConfigError
from rnnlm_jax.files import write_text_atomic
from rnnlm_jax.train import metrics

TRIAL_FILE = "trial.json"
CLUSTERS = ("auto", "slurm", "local")
# The folder that holds the package (a checkout's root, or site-packages): on the trials'
# PYTHONPATH, so `python -m rnnlm_jax` finds this very package, installed or not.
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def load_sweep(config_filename: str) -> list[dict[str, Any]]:
    """The trials of `path/to/config.py[:arg]`: its `get_sweep(arg)` as a list of dicts."""
    path, _, arg = config_filename.partition(":")
    spec = importlib.util.spec_from_file_location("_sweep_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_sweep"):
        raise ConfigError(f"{path} defines no get_sweep(): it has no sweep to run")
    trials = [dict(t) for t in module.get_sweep(arg or None)]
    if not trials:
        raise ConfigError(f"{path}: get_sweep({arg or None!r}) returned no trials")
    return trials


def apply_trial(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> None:
    """Sets each override (`field` or `a.b` for a nested field) on the locked config; a field
    the config does not have is a `ConfigError`, never a new field."""
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
        if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
            raise ConfigError(f"sweep override {key!r}: the config has no such field")
        try:
            node[leaf] = value
        except (TypeError, ValueError) as e:
            raise ConfigError(f"sweep override {key}={value!r}: {e}") from None


def trial_name(overrides: dict[str, Any]) -> str:
    """A folder name made of the overrides, e.g. `cell=gru,lr=0.5`."""
    name = ",".join(f"{k}={_short(v)}" for k, v in overrides.items()) or "base"
    return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", name)


def _short(value) -> str:
    if isinstance(value, (list, tuple)):
        return "+".join(map(str, value))
    return str(value)


def trial_workdir(workdir: str | Path, config_filename: str, index: int) -> tuple[Path, dict]:
    """The folder and overrides of trial `index`; an index out of range is a `ConfigError`."""
    trials = load_sweep(config_filename)
    if not 0 <= index < len(trials):
        raise ConfigError(f"--sweep_index={index} is out of range: the sweep has {len(trials)}")
    return Path(workdir) / trial_name(trials[index]), trials[index]


def write_trial_file(workdir: Path, index: int, overrides: dict[str, Any]) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        workdir / TRIAL_FILE, json.dumps({"index": index, "overrides": overrides}, indent=2) + "\n"
    )


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
    if cluster not in CLUSTERS:
        raise ConfigError(f"--cluster={cluster!r} is not one of {CLUSTERS}")
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
    print(f"submitted {len(jobs)} trials ({executor.cluster}): {jobs[0].job_id} ...", flush=True)
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


def summarize(workdir: str | Path) -> tuple[str, str]:
    """Gathers each trial's final metrics into `summary.md` and `summary.csv` in `workdir`;
    returns both texts. Trials without metrics yet are listed as not started."""
    workdir = Path(workdir)
    rows = []
    for trial_file in sorted(workdir.glob(f"*/{TRIAL_FILE}")):
        trial = json.loads(trial_file.read_text())
        records = metrics.read_jsonl(trial_file.parent / metrics.METRICS_FILE)
        last = records[-1] if records else {}
        row = {"index": trial["index"], "trial": trial_file.parent.name, **trial["overrides"]}
        for key in ("epoch", "perplexity", "val_perplexity", "tokens_per_sec"):
            row[key] = last.get(key, "")
        rows.append(row)
    if not rows:
        raise ConfigError(f"{workdir} holds no trials (no */{TRIAL_FILE})")
    rows.sort(key=lambda r: r["index"])
    metric_keys = ("epoch", "perplexity", "val_perplexity", "tokens_per_sec")
    overrides = [k for r in rows for k in r if k not in ("index", "trial", *metric_keys)]
    overrides = list(dict.fromkeys(overrides))
    for r in rows:  # a trial that leaves a swept field at its default shows that value
        missing = [k for k in overrides if k not in r]
        if missing:
            ran = _trial_config(workdir / r["trial"])
            r.update({k: ran.get(k, "") for k in missing})
    columns = ["index", "trial", *overrides, *metric_keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns)
    writer.writeheader()
    writer.writerows(rows)
    csv_text = buf.getvalue()
    cells = [[_cell(r.get(c, "")) for c in columns] for r in rows]
    md_text = metrics.markdown_table(columns, cells)
    write_text_atomic(workdir / "summary.csv", csv_text)
    write_text_atomic(workdir / "summary.md", md_text)
    return md_text, csv_text


def _trial_config(trial_dir: Path) -> dict:
    """The config a trial ran with (its `config.json`), or {} before it started."""
    try:
        return json.loads((trial_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 1000 else f"{value:.4g}"
    return str(value)
