"""The benchmark script runs (on a tiny setting) and writes its JSON; no timing is asserted."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT


def test_benchmark_runs_tiny(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--tiny", f"--out={out}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    results = json.loads(out.read_text())
    assert set(results["cells"]) == {"rnn", "gru", "lstm"}
    for cell in results["cells"].values():
        assert cell["train_tokens_per_sec_median"] > 0 and cell["compile_s"] > 0
        assert cell["generate_compiled_s"] > 0 and cell["generate_loop_s"] > 0
    assert results["peak_rss_mib"] > 0


def test_dot_floor_runs_tiny():
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "dot_floor.py"),
            "--cells=rnn,lstm:2",
            "--hidden=16",
            "--batch=4",
            "--steps=3",
            "--vocab=5",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout.strip().splitlines()[-1])
    assert [(row["cell"], row["layers"]) for row in rows] == [("rnn", 1), ("lstm", 2)]
    for row in rows:
        assert row["minibatch_ms"] > row["chain_ms"] > 0
        assert row["max_tokens_per_sec"] == 4 * 3 / row["minibatch_ms"] * 1e3
    assert rows[0]["input_projection_ms"] == 0.0 and rows[1]["input_projection_ms"] > 0


@pytest.mark.parametrize(
    "script, args",
    [
        ("torch_book_rnn.py", ["--epochs=2", "--warmup=1", "--hidden=16", "--threads=1"]),
        ("torch_ptb_lstm.py", ["--epochs=1", "--no-test", "--threads=1"]),
    ],
)
def test_the_pytorch_baselines_run_from_the_checkout(script, args, tmp_path):
    """The baselines ship in benchmarks/ (torch is no dependency: skipped without it); the
    PTB one on small files in PTB's format."""
    pytest.importorskip("torch", reason="the PyTorch baselines need torch installed")
    from test_ptb import write_ptb_like

    env = dict(os.environ, RNNLM_JAX_DATA_DIR=str(write_ptb_like(tmp_path, (2000, 500, 500))))
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), *args]
    if script == "torch_ptb_lstm.py":
        cmd.append("--sha1s-unchecked")
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1].startswith("tokens_per_sec=")


def test_device_check_runs_tiny_on_the_cpu(tmp_path):
    out = tmp_path / "device_check.json"
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--tiny", f"--out={out}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    results = json.loads(out.read_text())
    assert results["backend"] == "cpu" and "skipped" in results["cudnn_vs_scan"]
    assert all(v > 0 for v in results["cells"].values()) and results["ptb"]["small"] > 0
    assert results["population"]["K"] == 2 and results["population"]["speedup"] > 0
    assert "| measure | float32 | bfloat16 |" in r.stdout  # the GPU table's form
