"""Sweeps (one trial, a typo, a whole sweep through submitit's local executor, the summary)
and population mode (equal to the individual runs)."""

import csv
import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import ROOT

from configs import timemachine
from rnnlm_jax import data, train
from rnnlm_jax.config.checks import ConfigError, model_from_config
from rnnlm_jax.jobs import population
from rnnlm_jax.jobs.lm import load_data
from rnnlm_jax.run import sweeps

SMOKE = "--config=configs/timemachine.py:smoke"


def run_main(*args, cwd=ROOT, timeout=600):
    """Runs main.py in its own process group, killed whole (submitit's local workers too)
    if it outlives `timeout`."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_sweep_index_runs_that_trial_in_its_folder_and_resumes(tmp_path):
    r = run_main(SMOKE, f"--workdir={tmp_path}", "--sweep_index=1")
    assert r.returncode == 0, r.stderr
    trial = tmp_path / "lr=1.0,clip=0.5"
    config = json.loads((trial / "config.json").read_text())
    assert config["lr"] == 1.0 and config["clip"] == 0.5
    assert json.loads((trial / "trial.json").read_text()) == {
        "index": 1,
        "overrides": {"lr": 1.0, "clip": 0.5},
    }
    # The same command again (a requeued job) resumes from the trial's checkpoint.
    r = run_main(SMOKE, f"--workdir={tmp_path}", "--sweep_index=1", "--config.num_epochs=5")
    assert r.returncode == 0 and "resuming" in r.stdout and "after epoch 4" in r.stdout


def test_sweep_index_out_of_range(tmp_path):
    r = run_main(SMOKE, f"--workdir={tmp_path}", "--sweep_index=3")
    assert r.returncode == 2 and "out of range" in r.stderr and r.stderr.count("\n") == 1


@pytest.fixture
def typo_config(tmp_path):
    path = tmp_path / "typo.py"
    path.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from configs.timemachine import get_config  # noqa: F401\n\n\n"
        "def get_sweep(arg=None):\n"
        "    return [{'lr': 0.5}, {'lrr': 0.1}]\n"
    )
    return path


@pytest.mark.parametrize("mode", ["--sweep_index=1", "--mode=sweep"])
def test_a_typo_in_an_override_is_an_error_not_a_new_field(typo_config, tmp_path, mode):
    workdir = tmp_path / "runs"
    cluster = ["--cluster=local"] if mode == "--mode=sweep" else []
    r = run_main(f"--config={typo_config}:smoke", f"--workdir={workdir}", mode, *cluster)
    assert r.returncode == 2, r.stderr
    assert "sweep override 'lrr': the config has no such field" in r.stderr
    assert r.stderr.count("\n") == 1
    assert not (workdir / "submitit").exists()  # nothing was submitted


def test_apply_trial_on_a_locked_config():
    config = timemachine.get_config("smoke")
    config.lock()
    sweeps.apply_trial(config, {"lr": 0.25, "cell": "gru"})
    assert config.lr == 0.25 and config.cell == "gru"
    with pytest.raises(ConfigError, match="no such field"):
        sweeps.apply_trial(config, {"learning_rate": 0.1})
    with pytest.raises(ConfigError, match="batch_size"):
        sweeps.apply_trial(config, {"batch_size": "many"})
    assert sweeps.trial_name({"cell": "gru", "lr": 0.5}) == "cell=gru,lr=0.5"


def test_a_whole_sweep_through_submitit_and_its_summary(tmp_path):
    workdir = tmp_path / "sweep"
    r = run_main(SMOKE, f"--workdir={workdir}", "--mode=sweep", "--cluster=local")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "submitted 3 trials (local)" in r.stdout
    for name in ("lr=0.5", "lr=1.0,clip=0.5", "seed=1"):
        assert (workdir / name / "checkpoints").is_dir(), name
    with open(workdir / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["trial"] for r in rows] == ["lr=0.5", "lr=1.0,clip=0.5", "seed=1"]
    assert all(r["epoch"] == "4" and r["step"] == "28" for r in rows)
    for r in rows:  # each row is its trial's last record, and each trial learned
        history = [json.loads(x) for x in (workdir / r["trial"] / "metrics.jsonl").open()]
        assert float(r["train_perplexity"]) == history[-1]["train_perplexity"]
        assert history[-1]["train_perplexity"] < 0.85 * history[0]["train_perplexity"]
    assert len({r["train_perplexity"] for r in rows}) == 3  # three different runs
    # A trial that leaves a swept field at its default shows the value it ran with.
    assert [(r["lr"], r["clip"], r["seed"]) for r in rows] == [
        ("0.5", "1.0", "0"),
        ("1.0", "0.5", "0"),
        ("1.0", "1.0", "1"),
    ]
    md = (workdir / "summary.md").read_text()
    assert md.startswith("| index | trial |") and md.count("\n") == 5
    r = run_main(f"--workdir={workdir}", "--mode=summary")
    assert r.returncode == 0 and r.stdout == md


def test_population_members_equal_their_individual_runs():
    config = timemachine.get_config("smoke")
    loaded = load_data(config)
    corpus, vocab = loaded.train, loaded.vocab
    model = model_from_config(config, len(vocab))
    seeds, lrs, clips = [0, 1, 2], [0.5, 1.0, 2.0], [1.0, 0.5, 0.1]
    B, T = config.batch_size, config.num_steps
    states = population.create_population(model, seeds, lrs, clips, B, T)
    begin = model.begin_state(B)
    for epoch in range(3):
        X, Y = population.population_batches(corpus, config, seeds, epoch)
        states, _ = population.train_population_epoch(states, X, Y, begin, reset_each_batch=False)
    for k in range(3):
        state = train.create_train_state(model, jax.random.key(seeds[k]), lrs[k], clips[k], B, T)
        for epoch in range(3):
            X, Y = data.epoch_batches(corpus, B, T, "sequential", seeds[k], epoch)
            state, _ = train.train_epoch(state, X, Y, begin, reset_each_batch=False)
        member = jax.tree.map(lambda x, k=k: x[k], states.params)
        for a, b in zip(jax.tree.leaves(member), jax.tree.leaves(state.params)):
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_population_mode_from_main(tmp_path):
    r = run_main(SMOKE, f"--workdir={tmp_path}", "--mode=population")
    assert r.returncode == 0, r.stderr
    table = (tmp_path / "population.md").read_text().splitlines()
    assert len(table) == 2 + 3 and "| 2 | 1 | 1.0 | 1.0 | 4 |" in table[-1]


def test_population_refuses_shape_changing_trials():
    with pytest.raises(ConfigError, match="differ only in"):
        population.members_from_trials(timemachine.get_config(), [{"lr": 1.0}, {"cell": "gru"}])
