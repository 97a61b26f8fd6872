"""`main.py` end to end on the smoke config, and its one-line errors."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT


def run_main(*args, env=None, cwd=ROOT):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_smoke_run_writes_plot_metrics_and_config(tmp_path):
    workdir = tmp_path / "run"
    r = run_main("--config=configs/timemachine.py:smoke", f"--workdir={workdir}")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    final = [line for line in lines if line.startswith("perplexity ")]
    assert len(final) == 1 and "tokens/sec on cpu" in final[0], r.stdout
    assert lines[lines.index(final[0]) + 1].startswith("time traveller")
    assert lines[lines.index(final[0]) + 2].startswith("traveller")
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in records] == [1, 2, 3, 4]
    assert all({"perplexity", "tokens_per_sec"} <= set(x) for x in records)
    assert records[-1]["perplexity"] < records[0]["perplexity"]
    config = json.loads((workdir / "config.json").read_text())
    assert config["num_hiddens"] == 32 and config["cell"] == "rnn"
    assert (workdir / "perplexity.png").read_bytes()[:4] == b"\x89PNG"
    assert "Traceback" not in r.stderr


def test_overrides_apply(tmp_path):
    r = run_main(
        "--config=configs/timemachine.py:smoke",
        "--config.num_epochs=1",
        "--config.cell=gru",
        f"--workdir={tmp_path}",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "config.json").read_text())["cell"] == "gru"
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def test_missing_data_is_one_line_with_how_to_fix(tmp_path):
    r = run_main(
        "--config=configs/ptb.py:smoke",
        "--config.data_url=http://127.0.0.1:9/ptb.{split}.txt",
        f"--workdir={tmp_path / 'run'}",
        env={"RNNLM_JAX_DATA_DIR": str(tmp_path / "nodata")},
    )
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "RNNLM_JAX_DATA_DIR" in r.stderr and "ptb.train.txt is missing" in r.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "nodata").exists()


def test_the_book_job_runs_offline_with_no_data_folder(tmp_path):
    """A fresh machine: no data folder, an empty HOME, no network: the book is the package's."""
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "RNNLM_JAX_DATA_DIR": ""}
    r = run_main(
        f"--config={ROOT / 'configs' / 'timemachine.py'}:smoke",
        "--config.data_url=http://127.0.0.1:9/timemachine.txt",
        f"--workdir={tmp_path / 'run'}",
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "time traveller" in r.stdout and not (home / ".cache" / "rnnlm_jax").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config.batch_size=-1"], "batch_size"),
        (["--config.cell=transformer"], "cell"),
        (["--config.num_steps=100000"], "too short"),
        (["--config.no_such_field=1"], "no_such_field"),
        (["--config.lr=abc"], "lr"),
        (["--no_such_flag"], "no_such_flag"),
    ],
)
def test_bad_config_is_one_line_and_status_2(tmp_path, args, message):
    r = run_main("--config=configs/timemachine.py:smoke", *args, f"--workdir={tmp_path / 'w'}")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    "config, message",
    [("configs/timemachine.py:nope", "unknown variant"), ("configs/none.py", "none.py"), ("", "")],
)
def test_bad_config_file_is_one_line_and_status_2(config, message):
    r = run_main(*([f"--config={config}"] if config else []))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr


def test_diverging_loss_stops_the_run(tmp_path):
    r = run_main(
        "--config=configs/timemachine.py:smoke", "--config.lr=1e38", f"--workdir={tmp_path}"
    )
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert r.returncode == 1 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "loss became" in errors[0] and "epoch 1" in errors[0]
