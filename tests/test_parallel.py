"""Data parallel over devices and processes: the same parameters as one device.

Fake CPU devices need flags before JAX starts, so each run is its own process.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
from conftest import ROOT

from rnnlm_jax.config.checks import model_from_config
from rnnlm_jax.train import abstract_train_state, checkpoints

SMOKE = ["--config=configs/timemachine.py:smoke,val", "--config.num_epochs=3"]


def run_main(workdir, *args, devices=1, timeout=300):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), *SMOKE, f"--workdir={workdir}", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc, timeout=300):
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:  # never leave a worker behind
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-2000:]
    return out


def params_of(workdir):
    config = checkpoints.read_config(workdir)
    model = model_from_config(config, len(checkpoints.read_vocab(workdir)))
    return jax.device_get(checkpoints.restore(workdir, abstract_train_state(model, config))[0])


def assert_close(a, b, atol=1e-5):
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0)


def test_four_devices_equal_one(tmp_path):
    one = finish(run_main(tmp_path / "one"))
    four = finish(run_main(tmp_path / "four", devices=4))
    assert_close(params_of(tmp_path / "one"), params_of(tmp_path / "four"))
    # The same continuations.
    assert one.splitlines()[-3:-1] == four.splitlines()[-3:-1]


def test_batch_not_divisible_by_devices_is_a_config_error(tmp_path):
    proc = run_main(tmp_path, devices=3)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "not divisible by the 3 devices" in err


def test_two_processes_equal_one(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    finish(run_main(tmp_path / "one"))
    workers = [
        run_main(
            tmp_path / "two",
            f"--coordinator_address=127.0.0.1:{port}",
            "--num_processes=2",
            f"--process_id={i}",
            devices=2,
        )
        for i in range(2)
    ]
    outs = [finish(w, timeout=240) for w in workers]
    assert_close(params_of(tmp_path / "one"), params_of(tmp_path / "two"))
    # Gloo's own connection lines (under load one may reach stdout split in two) are not ours.
    gloo = ("[Gloo]", "Expected number of connected peer ranks")
    spoken = [[x for x in out.splitlines() if not x.startswith(gloo)] for out in outs]
    assert any(x.startswith("perplexity") for x in spoken[0])
    assert spoken[1] == []  # only process 0 speaks
    records = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert len(records) == 3  # written once, by process 0


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_signal_to_one_process_stops_both_at_the_same_step_and_resumes(tmp_path):
    workdir, port = tmp_path / "two", _port()

    def workers(*args):
        return [
            run_main(
                workdir,
                f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={i}",
                *args,
                devices=2,
            )  # fmt: skip
            for i in range(2)
        ]

    procs = workers("--config.num_epochs=100000")
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 240
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        assert time.time() < deadline, "the run did not start"
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)  # only process 1 is signalled
    outs = [finish(p, timeout=240) for p in procs]  # both exit 0, neither waits for the other
    stopped = [x for x in outs[0].splitlines() if x.startswith("stopped by SIGTERM after epoch")]
    assert stopped, outs[0]
    epoch = int(stopped[0].split("after epoch ")[1].split()[0].rstrip(":"))
    # Both processes saved the same step: Orbax's multi-process save completes only when
    # every process takes part, and it holds the epoch the run says it stopped after.
    assert checkpoints.steps(workdir) and checkpoints.latest_epoch(workdir) == epoch
    procs = workers(f"--config.num_epochs={epoch + 2}")
    outs = [finish(p, timeout=240) for p in procs]
    assert f"resuming {workdir} after epoch {epoch}" in outs[0]
    assert checkpoints.latest_epoch(workdir) == epoch + 2
