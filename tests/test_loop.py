"""The one run loop: every job resumes bit-exact after SIGTERM and after kill -9, mid-epoch
too; chunks are cut where the config says; the package's layers import one way; the field
tables hold every field the code reads."""

import ast
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from conftest import ROOT
from test_ptb import smoke_args, write_ptb_like

from rnnlm_jax.config import fields
from rnnlm_jax.train import checkpoints, loop

PACKAGE = ROOT / "rnnlm_jax"
# Each layer imports only from itself and the layers before it.
LAYERS = ["files", "extras", "nn", "data", "config", "train", "infer", "jobs", "run", "_compat"]


def main(*args, **popen):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def saved(workdir: Path):
    """The metas of the complete checkpoints (checksums written), oldest first."""
    metas = []
    for step in reversed(checkpoints.steps(workdir)):
        path = workdir / checkpoints.CHECKPOINT_DIR / str(step)
        meta = checkpoints.read_meta(path)
        if meta and (path / checkpoints.CHECKSUM_FILE).is_file():
            metas.append(meta)
    return metas


def interrupt(args, workdir, how, when, timeout=240):
    """Starts a run, waits until `when(metas)` holds for its saved checkpoints, then stops
    it with SIGTERM or kills it (-9); returns (returncode, stdout)."""
    proc = main(*args, f"--workdir={workdir}")
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if when(saved(workdir)):
            proc.send_signal(signal.SIGTERM if how == "SIGTERM" else signal.SIGKILL)
            break
        time.sleep(0.02)
    code, out, err = finish(proc)
    return code, out, err


def final_state(workdir: Path):
    """The leaves of the newest checkpoint's state, as numpy arrays."""
    import orbax.checkpoint as ocp

    step = checkpoints.steps(workdir)[0]
    with ocp.PyTreeCheckpointer() as ckpt:
        tree = ckpt.restore(workdir / checkpoints.CHECKPOINT_DIR / str(step) / "state")
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


TIMING = ("seconds", "tokens_per_sec", "mlp_seconds", "rnn_seconds")


def records(workdir: Path):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING} for x in lines]


def assert_same_run(a: Path, b: Path):
    assert records(a) == records(b)
    for x, y in zip(final_state(a), final_state(b), strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y)


def uninterrupted(args, workdir: Path) -> Path:
    code, out, err = finish(main(*args, f"--workdir={workdir}"))
    assert code == 0, err
    return workdir


def check_resumes(args, straight, tmp_path, how, when, mid_epoch=False):
    stopped = tmp_path / "stopped"
    code, out, err = interrupt(args, stopped, how, when)
    if how == "SIGTERM":
        assert code == 0 and "stopped by SIGTERM" in out, (code, out, err)
    else:
        assert code == -9, (code, out, err)
    at = saved(stopped)[-1]
    assert at["epoch"] < records(straight)[-1]["epoch"]  # it was stopped before the end
    if mid_epoch:
        assert at["position"] > 0, at
    code, out, err = finish(main(*args, f"--workdir={stopped}"))
    assert code == 0 and "resuming" in out, err
    assert_same_run(straight, stopped)
    return out


POPULATION = [
    "--config=configs/timemachine.py:smoke",
    "--mode=population",
    "--config.num_epochs=20",
    "--config.steps_per_chunk=2",
    "--config.checkpoint_every_steps=6",
    "--config.checkpoint_every_epochs=5",
]


@pytest.fixture(scope="module")
def population_run(tmp_path_factory):
    return uninterrupted(POPULATION, tmp_path_factory.mktemp("population") / "straight")


def test_population_resumes_bit_exact_after_sigterm(population_run, tmp_path):
    # The loop is one for every job: each way of stopping once per job is enough here
    # (the language model's own tests take both).
    check_resumes(POPULATION, population_run, tmp_path, "SIGTERM", lambda metas: len(metas) >= 1)
    table = (tmp_path / "stopped" / "population.md").read_text()
    assert table == (population_run / "population.md").read_text()
    lines = (tmp_path / "stopped" / "population.jsonl").read_text().splitlines()
    assert len(lines) == 20 * 3  # each epoch and member once


SINE = [
    "--config=configs/sine.py:smoke",
    "--config.num_epochs=25",
    "--config.checkpoint_every_epochs=1",
]


@pytest.fixture(scope="module")
def sine_run(tmp_path_factory):
    return uninterrupted(SINE, tmp_path_factory.mktemp("sine") / "straight")


def test_sine_resumes_bit_exact_after_kill_9(sine_run, tmp_path):
    check_resumes(SINE, sine_run, tmp_path, "kill", lambda metas: len(metas) >= 2)
    a = json.loads((sine_run / "sine_results.json").read_text())
    b = json.loads((tmp_path / "stopped" / "sine_results.json").read_text())
    for name in ("mlp", "rnn"):
        a[name].pop("seconds"), b[name].pop("seconds")
    assert a == b


@pytest.fixture(scope="module")
def ptb_dir(tmp_path_factory):
    return write_ptb_like(tmp_path_factory.mktemp("ptb_format"))


def test_a_ptb_format_run_killed_mid_epoch_resumes_bit_identical(tmp_path, ptb_dir):
    args = [
        *smoke_args(ptb_dir),  # PTB's recipe (lr decay from epoch 3, read from token 0)
        "--config.max_tokens=8000",  # 19 minibatches an epoch
        "--config.num_epochs=3",
        "--config.num_layers=1",
        "--config.num_hiddens=16",
        "--config.embed_dim=16",
        "--config.steps_per_chunk=1",  # one chunk length to compile (the cuts: test below)
        "--config.checkpoint_every_steps=5",
        "--config.checkpoint_every_epochs=100",
    ]
    straight = uninterrupted(args, tmp_path / "straight")
    out = check_resumes(
        args, straight, tmp_path, "kill", lambda m: any(x["position"] for x in m), mid_epoch=True
    )
    assert re.search(r"resuming .* after epoch \d+ and \d+ of epoch \d+'s \d+ steps", out), out
    progress = (tmp_path / "stopped" / "progress.jsonl").read_text().splitlines()
    steps = [json.loads(x)["step"] for x in progress]
    assert steps == sorted(set(steps))  # each chunk's record once, in order


class _Job(loop.Job):
    def __init__(self, steps, chunk, every):
        self.steps_per_epoch = steps
        self.config = ml_collections.ConfigDict(
            {"steps_per_chunk": chunk, "checkpoint_every_steps": every, "num_epochs": 10}
        )


def test_chunks_cut_at_the_chunk_size_and_at_checkpoint_steps():
    assert loop.chunk_bounds(_Job(10, 4, 0), 0) == [(0, 4), (4, 8), (8, 10)]
    assert loop.chunk_bounds(_Job(10, 4, 6), 0) == [(0, 4), (4, 6), (6, 8), (8, 10)]
    # Epoch 1 covers the run's minibatches 10-19: checkpoints after 12 and 18.
    assert loop.chunk_bounds(_Job(10, 4, 6), 1) == [(0, 2), (2, 4), (4, 8), (8, 10)]
    assert loop.chunk_bounds(_Job(8, 0, 0), 3) == [(0, 8)]  # an epoch of no known FLOPs


def test_the_chunk_lengths_of_a_run_come_from_one_period_of_cuts():
    job = _Job(10, 4, 6)
    job.config.num_epochs = 1_000_000  # read in 3 epochs: the cuts repeat every 6 / 2
    assert loop.chunk_lengths(job, 0) == {2, 4}
    assert loop.chunk_lengths(_Job(10, 4, 0), 5) == {4, 2} and loop.chunk_lengths(
        _Job(8, 0, 0), 0
    ) == {8}


def test_an_automatic_chunk_is_sized_by_flops():
    job = _Job(1000, 0, 0)
    job.flops_per_step = loop.CHUNK_FLOPS / 10
    assert loop.auto_chunk(job) == 10
    job.flops_per_step = loop.CHUNK_FLOPS * 5  # a step bigger than a chunk: one step each
    assert loop.auto_chunk(job) == 1


def _imports(path: Path):
    """The `rnnlm_jax.<layer>` each import in `path` names (function-level ones too)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "rnnlm_jax" and len(parts) > 1 and parts[1] in LAYERS:
                yield parts[1], node.lineno
                break


def test_imports_flow_one_way():
    layered = set()
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in ("__init__.py", "__main__.py"):
            continue
        layer = relative.parts[0].removesuffix(".py")
        assert layer in LAYERS, f"{relative} is in no layer of {LAYERS}"
        layered.add(layer)
        for imported, line in _imports(path):
            assert LAYERS.index(imported) <= LAYERS.index(layer), (
                f"{relative}:{line} imports rnnlm_jax.{imported}, a later layer than {layer}"
            )
    assert layered == set(LAYERS)


def test_every_config_field_the_code_reads_is_in_a_table():
    known = set().union(*fields.TABLES.values())
    methods = set(dir(ml_collections.ConfigDict))
    read = set()

    def is_config(node):  # `config`, `c` (its short name), `self.config`, `saved`
        if isinstance(node, ast.Name):
            return node.id in ("config", "c", "saved")
        jax_config = isinstance(node, ast.Attribute) and getattr(node.value, "id", "") == "jax"
        return isinstance(node, ast.Attribute) and node.attr == "config" and not jax_config

    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and is_config(node.value):
                read.add(node.attr)
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and is_config(node.func.value)
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                read.add(node.args[0].value)
    read -= methods
    assert read, "the scan found no field reads"
    assert read <= known, f"fields read but in no table: {sorted(read - known)}"


def test_defaults_fill_an_older_config_and_translate_its_fields():
    old = {"cell": "gru", "num_hiddens": 16, "custom_vjp": False, "lr": 0.5}
    filled = fields.fill_defaults(ml_collections.ConfigDict(old))
    assert filled.impl == "flax" and "custom_vjp" not in filled
    assert filled.checkpoint_every_steps == 0 and filled.job == "lm"
    assert filled.cell == "gru" and filled.lr == 0.5
    for name, field in fields.LM.items():
        if name not in old and name != "impl":
            assert filled[name] == field.default, name
    sine = fields.fill_defaults(ml_collections.ConfigDict({"task": "sine", "T": 300}))
    assert sine.job == "sine" and sine.tau == 4 and sine.T == 300


def test_the_model_spec_is_the_models_fields():
    import dataclasses

    from rnnlm_jax.nn.layer import DEPRECATED_FIELDS
    from rnnlm_jax.nn.models import RNNModel
    from rnnlm_jax.nn.spec import ModelSpec

    spec = {f.name for f in dataclasses.fields(ModelSpec)}
    model = {f.name for f in dataclasses.fields(RNNModel)} - {"parent", "name", "vocab_size",
                                                              *DEPRECATED_FIELDS}  # fmt: skip
    assert spec == model
    for name in spec:  # one default, in the spec; the table takes it from there
        assert fields.LM[name].default == getattr(ModelSpec(), name)
