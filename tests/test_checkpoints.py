"""Checkpoints that never lose work: resume, preemption, kill -9, wrong shapes, sampling.

Driven through `main.py` in subprocesses on the smoke config, as a cluster would run it.
"""

import hashlib
import json
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import ROOT

from rnnlm_jax.config.checks import model_from_config
from rnnlm_jax.train import abstract_train_state, checkpoints
from rnnlm_jax.train import workdir as workdirs

SMOKE = "--config=configs/timemachine.py:smoke"


def main_cmd(workdir, *args):
    return [sys.executable, str(ROOT / "main.py"), SMOKE, f"--workdir={workdir}", *args]


def run(workdir, *args, **kwargs):
    return subprocess.run(
        main_cmd(workdir, *args), cwd=ROOT, capture_output=True, text=True, timeout=300, **kwargs
    )


def final_state(workdir):
    config = checkpoints.read_config(workdir)
    model = model_from_config(config, len(checkpoints.read_vocab(workdir)))
    state, meta = checkpoints.restore(workdir, abstract_train_state(model, config))
    return jax.device_get(state), meta


def assert_states_equal(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b) > 0
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(x, y)  # bit-exact


def tree_digest(directory: Path) -> str:
    h = hashlib.sha1()
    for p in sorted(directory.rglob("*")):
        h.update(str(p.relative_to(directory)).encode())
        if p.is_file():
            h.update(p.read_bytes())
            h.update(str(p.stat().st_mtime_ns).encode())
    return h.hexdigest()


def start_long_run(workdir, *args):
    """Starts a run that would take very long; returns once it has finished an epoch."""
    proc = subprocess.Popen(
        main_cmd(workdir, "--config.num_epochs=1000000", *args),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = Path(workdir) / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 3):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the run did not start"
        time.sleep(0.05)
    return proc


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted 6-epoch smoke run."""
    workdir = tmp_path_factory.mktemp("straight")
    r = run(workdir, "--config.num_epochs=6")
    assert r.returncode == 0, r.stderr
    return workdir


def test_resume_is_bit_identical_to_an_uninterrupted_run(straight, tmp_path):
    r1 = run(tmp_path, "--config.num_epochs=3")
    assert r1.returncode == 0, r1.stderr
    assert checkpoints.latest_epoch(tmp_path) == 3
    r2 = run(tmp_path, "--config.num_epochs=6")
    assert r2.returncode == 0, r2.stderr
    assert "resuming" in r2.stdout and "after epoch 3" in r2.stdout
    a, meta_a = final_state(straight)
    b, meta_b = final_state(tmp_path)
    assert meta_a == meta_b == {"epoch": 6, "position": 0, "seed": 0, "step": 6 * 7, "sums": {}}
    assert_states_equal(a, b)
    # One metrics record per epoch, and the same ones (up to timings).
    ma = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in mb] == list(range(1, 7))
    assert [x["perplexity"] for x in ma] == [x["perplexity"] for x in mb]


def test_finished_run_is_not_trained_again(straight):
    before = tree_digest(straight / "checkpoints")
    r = run(straight, "--config.num_epochs=6")
    assert r.returncode == 0 and "perplexity" in r.stdout, r.stderr
    assert tree_digest(straight / "checkpoints") == before


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_signal_saves_a_checkpoint_and_the_restart_continues(tmp_path, sig, status):
    proc = start_long_run(tmp_path)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err
    stop_lines = [line for line in out.splitlines() if line.startswith("stopped by")]
    assert len(stop_lines) == 1 and sig.name in stop_lines[0], out
    epoch = checkpoints.latest_epoch(tmp_path)
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert epoch is not None and epoch == records[-1]["epoch"] >= 3
    assert not list((tmp_path / "checkpoints").glob("*tmp*"))
    if sig == signal.SIGINT:
        return  # the checkpoint is SIGTERM's: the restart below is the same for both
    # The restart continues from there and ends where an uninterrupted run ends.
    r = run(tmp_path, f"--config.num_epochs={epoch + 2}")
    assert r.returncode == 0 and f"after epoch {epoch}" in r.stdout, r.stderr
    straight = tmp_path / "straight"
    assert run(straight, f"--config.num_epochs={epoch + 2}").returncode == 0
    assert_states_equal(final_state(tmp_path)[0], final_state(straight)[0])


def test_kill_9_during_saves_leaves_a_restorable_workdir(tmp_path):
    # A checkpoint every epoch (about a millisecond each): saves are in flight all the time.
    args = ("--config.checkpoint_every_epochs=1", "--config.max_to_keep=2")
    proc = start_long_run(tmp_path, *args)
    time.sleep(0.5)
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert (tmp_path / ".lock").is_file()  # the dead run's lock file: it must not block
    epoch = checkpoints.latest_epoch(tmp_path)
    assert epoch is not None
    r = run(tmp_path, f"--config.num_epochs={epoch + 2}", *args)
    assert r.returncode == 0, r.stderr
    assert f"after epoch {epoch}" in r.stdout
    assert checkpoints.latest_epoch(tmp_path) == epoch + 2
    assert not list((tmp_path / "checkpoints").glob("*tmp*"))  # cleaned up
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in records] == list(range(1, epoch + 3))


def test_restoring_into_another_shape_is_refused_untouched(straight):
    before = tree_digest(straight)
    r = run(straight, "--config.num_epochs=8", "--config.num_hiddens=128", "--config.cell=gru")
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "num_hiddens 32 (checkpoint) vs 128" in r.stderr and "cell 'rnn'" in r.stderr
    assert tree_digest(straight) == before


def test_sampling_needs_only_the_workdir(straight, tmp_path):
    env_args = {"RNNLM_JAX_DATA_DIR": str(tmp_path / "no-data-here"), "PATH": "/usr/bin:/bin"}
    r = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), f"--workdir={straight}", "--mode=sample"]
        + ["--prefix=time traveller", "--num_preds=30"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env_args,
    )
    assert r.returncode == 0, r.stderr
    (line,) = r.stdout.rstrip("\n").splitlines()
    assert line.startswith("time traveller") and len(line) == 14 + 30
    # The library does the same for research code.
    from rnnlm_jax import load_trained, predict

    model, params, vocab, config = load_trained(straight)
    assert predict(model, params, vocab, "time traveller", 30) == line
    assert config.num_hiddens == 32


def test_sampling_an_empty_workdir_is_one_line(tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), f"--workdir={tmp_path}", "--mode=sample"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "config.json" in r.stderr


def test_tensorboard_events_hold_the_curves(straight):
    tags = {}
    for events in sorted(straight.glob("events.out.tfevents.*")):
        for value_tag, step in _scalars(events):
            tags.setdefault(value_tag, []).append(step)
    steps = [7 * e for e in range(1, 7)]  # by step: the smoke config's epoch is 7 minibatches
    for tag in ("train_loss", "train_perplexity", "train_bits_per_token", "tokens_per_sec",
                "grad_norm"):  # fmt: skip
        assert tags[tag] == steps, tag
    assert "perplexity" not in tags and "loss" not in tags  # the old names: metrics.jsonl only
    assert any(t.startswith("sample") for t in tags)


def _scalars(path):
    """(tag, step) of every summary value in a TFRecord event file."""
    from tensorboardX.proto import event_pb2

    data = path.read_bytes()
    i = 0
    while i < len(data):
        (length,) = struct.unpack("<Q", data[i : i + 8])
        event = event_pb2.Event.FromString(data[i + 12 : i + 12 + length])
        i += 12 + length + 4
        for value in event.summary.value:
            yield value.tag, event.step


def test_a_waiting_reader_comes_before_the_next_save(tmp_path):
    read = []

    def reader():
        with workdirs.checkpoint_lock(tmp_path, shared=True, timeout=30):
            read.append(True)

    with workdirs.checkpoint_lock(tmp_path, shared=False):  # a save in flight
        thread = threading.Thread(target=reader)
        thread.start()
        time.sleep(0.5)  # the reader now waits, at the turnstile's far side
        assert not read
    # The next save, right after, finds the turnstile held until the reader is in.
    with workdirs.checkpoint_lock(tmp_path, shared=False, timeout=30):
        assert read == [True]
    thread.join()
    # A reader refused after its timeout: one error naming the run's lock holder.
    with workdirs.checkpoint_lock(tmp_path, shared=False):
        with pytest.raises(workdirs.WorkdirInUse, match="being saved"):
            with workdirs.checkpoint_lock(tmp_path, shared=True, timeout=0.2):
                pass
