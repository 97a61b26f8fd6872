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
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections

from rnnlm_jax.config.checks import ConfigError
from rnnlm_jax.extras import require
from rnnlm_jax.files import write_text_atomic
from rnnlm_jax.train import metrics

TRIAL_FILE = "trial.json"
CLUSTERS = ("auto", "slurm", "local")
# The summary's columns of each trial's last record (a record of the previous release's
# names is read too: `metrics.value`).
METRIC_KEYS = ("epoch", "step", "train_perplexity", "eval_perplexity", "eval_loss",
               "tokens_per_sec")  # fmt: skip
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
    try:
        trials = list(module.get_sweep(arg or None))
    except TypeError as e:
        raise ConfigError(f"{path}: get_sweep() must return a list of dicts ({e})") from None
    bad = [t for t in trials if not isinstance(t, Mapping)]
    if bad:
        raise ConfigError(
            f"{path}: get_sweep() must return a list of dicts of config fields, one per "
            f"trial; it returned {bad[0]!r} among them"
        )
    trials = [dict(t) for t in trials]
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


def launch(
    argv: list[str], workdir: Path, num_trials: int, slurm: dict[str, Any], wait: bool | None
) -> list:
    """Submits every trial as one job array (`rnnlm_jax.run.cluster.launch`; needs the
    `cluster` extra, submitit)."""
    if slurm.get("cluster", "auto") not in CLUSTERS:
        raise ConfigError(f"--cluster={slurm['cluster']!r} is not one of {CLUSTERS}")
    require("submitit", "--mode=sweep")
    from rnnlm_jax.run import cluster

    return cluster.launch(argv, workdir, num_trials, slurm, wait)


def summarize(workdir: str | Path) -> tuple[str, str]:
    """Gathers each trial's final metrics into `summary.md` and `summary.csv` in `workdir`;
    returns both texts. Trials without metrics yet are listed as not started."""
    workdir = Path(workdir)
    rows, bad = [], []
    for trial_file in sorted(workdir.glob(f"*/{TRIAL_FILE}")):
        try:
            trial = json.loads(trial_file.read_text(encoding="utf-8"))
            if not (isinstance(trial, dict) and isinstance(trial.get("index"), int)
                    and isinstance(trial.get("overrides"), dict)):  # fmt: skip
                raise ValueError("not a trial record (index, overrides)")
        except (OSError, ValueError) as e:
            bad.append(f"{trial_file.parent.name}/{TRIAL_FILE} ({_first_line(e)})")
            continue
        records = metrics.read_jsonl(trial_file.parent / metrics.METRICS_FILE)
        last = records[-1] if records else {}
        row = {"index": trial["index"], "trial": trial_file.parent.name, **trial["overrides"]}
        for key in METRIC_KEYS:
            row[key] = metrics.value(last, key, "")
        rows.append(row)
    if not rows:
        why = f": unreadable {', '.join(bad)}" if bad else f" (no */{TRIAL_FILE})"
        raise ConfigError(f"{workdir} holds no trials{why}")
    rows.sort(key=lambda r: r["index"])
    overrides = [k for r in rows for k in r if k not in ("index", "trial", *METRIC_KEYS)]
    overrides = list(dict.fromkeys(overrides))
    for r in rows:  # a trial that leaves a swept field at its default shows that value
        missing = [k for k in overrides if k not in r]
        if missing:
            ran = _trial_config(workdir / r["trial"])
            r.update({k: ran.get(k, "") for k in missing})
    columns = ["index", "trial", *overrides, *METRIC_KEYS]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns)
    writer.writeheader()
    writer.writerows(rows)
    csv_text = buf.getvalue()
    cells = [[_cell(r.get(c, "")) for c in columns] for r in rows]
    md_text = metrics.markdown_table(columns, cells)
    if bad:
        md_text += f"\nNot summarised, unreadable: {'; '.join(bad)}\n"
    write_text_atomic(workdir / "summary.csv", csv_text)
    write_text_atomic(workdir / "summary.md", md_text)
    return md_text, csv_text


def _trial_config(trial_dir: Path) -> dict:
    """The config a trial ran with (its `config.json`), or {} before it started."""
    try:
        return json.loads((trial_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:120]


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 1000 else f"{value:.4g}"
    return str(value)
