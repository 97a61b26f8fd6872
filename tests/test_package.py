"""The package as other research code uses it: what it declares and installs, its public
names, its arguments, the previous release's names (deprecated), logging, and the command
line as an installed module (`python -m rnnlm_jax`)."""

import ast
import importlib.metadata
import json
import logging
import os
import subprocess
import sys
import tomllib
import warnings

import flax.linen as nn
import jax
import optax
import pytest
from conftest import ROOT, package_source

import rnnlm_jax
from rnnlm_jax import RNNLayer, data, train
from rnnlm_jax.train import metrics

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
OPTIONAL = ("matplotlib", "submitit", "tensorboardX")


def python(*args, cwd=ROOT, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def _version(spec: str) -> tuple:
    """`>=3.11` -> (3, 11)."""
    return tuple(int(x) for x in spec.strip().removeprefix(">=").split("."))


def test_requires_python_is_what_the_dependencies_need():
    ours = _version(PYPROJECT["project"]["requires-python"])
    for requirement in PYPROJECT["project"]["dependencies"]:
        name = requirement.split(">")[0].split("=")[0].strip()
        needed = importlib.metadata.metadata(name).get("Requires-Python")
        if needed and needed.startswith(">="):
            assert ours >= _version(needed.split(",")[0]), (name, needed)


def test_plotting_clusters_and_tensorboard_are_extras_imported_only_when_used():
    deps = " ".join(PYPROJECT["project"]["dependencies"]).lower()
    extras = PYPROJECT["project"]["optional-dependencies"]
    for module, extra in (("matplotlib", "plot"), ("submitit", "cluster"),
                          ("tensorboardx", "tensorboard")):  # fmt: skip
        assert module not in deps
        assert any(module in r.lower() for r in extras[extra]) and any(
            module in r.lower() for r in extras["all"]
        )
    code = (
        "import sys, rnnlm_jax, rnnlm_jax.run.cli, rnnlm_jax.run.sweeps, rnnlm_jax.jobs.lm;"
        f"print([m for m in {OPTIONAL!r} if m in sys.modules])"
    )
    r = python("-c", code)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr


def _without_extras(*argv):
    """main.py's command line in a process where the optional packages cannot be imported."""
    code = (
        "import sys\n"
        f"for m in {OPTIONAL!r}: sys.modules[m] = None\n"
        f"sys.argv = ['main.py', *{list(argv)!r}]\n"
        "sys.path.insert(0, '.')\n"
        "from rnnlm_jax.run import app\n"
        "app.run()\n"
    )
    return python("-c", code)


def test_without_the_extras_a_run_trains_and_says_what_it_skipped(tmp_path):
    r = _without_extras("--config=configs/timemachine.py:smoke", "--config.num_epochs=2",
                        f"--workdir={tmp_path / 'w'}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "pip install 'rnnlm_jax[tensorboard]'" in r.stderr
    assert "pip install 'rnnlm_jax[plot]'" in r.stderr
    assert (tmp_path / "w" / "metrics.jsonl").is_file()
    assert not (tmp_path / "w" / "perplexity.png").exists()
    r = _without_extras("--config=configs/timemachine.py:smoke", "--mode=sweep",
                        "--cluster=local", f"--workdir={tmp_path / 's'}")  # fmt: skip
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(
        "error: --mode=sweep needs submitit: pip install 'rnnlm_jax[cluster]'"
    )


def test_the_package_is_typed_and_its_lazy_names_are_visible_to_type_checkers():
    assert (ROOT / "rnnlm_jax" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["rnnlm_jax"]
    tree = ast.parse((ROOT / "rnnlm_jax" / "__init__.py").read_text())
    typed = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for imp in node.body:
                typed |= {a.name for a in imp.names}
    assert typed == set(rnnlm_jax.__all__)


def test_the_public_names_the_docs_list_exist():
    from rnnlm_jax import infer
    from rnnlm_jax import nn as rnn_nn

    assert rnnlm_jax.sample is infer.sample and rnnlm_jax.predict is infer.predict
    assert rnn_nn.RNNLayer is RNNLayer and rnn_nn.RNNModel is rnnlm_jax.RNNModel
    assert infer.score is rnnlm_jax.score and callable(infer.load_trained)
    # Nothing names the module that is now rnnlm_jax.train.
    for path in [*(ROOT / "rnnlm_jax").rglob("*.py"), *(ROOT / "docs").glob("*.md")]:
        if path.name == "_compat.py":
            continue
        text = path.read_text()
        assert "`training`" not in text and "training.train_" not in text, path


class CharLM(nn.Module):  # docs/api.md's way of writing your own model
    vocab_size: int
    hidden: int = 16
    logits_layout = "batch_major"

    @nn.compact
    def __call__(self, tokens, state, deterministic=True):
        x = nn.Embed(self.vocab_size, 8)(tokens)
        h, state = RNNLayer(cell="gru", num_hiddens=self.hidden, time_major=False)(x, state)
        return nn.Dense(self.vocab_size)(h), state

    def begin_state(self, batch_size):
        return RNNLayer(cell="gru", num_hiddens=self.hidden).begin_state(batch_size)


def test_your_own_model_in_the_calls_the_docs_show():
    model = CharLM(28)
    state0 = model.begin_state(3)  # on the unbound module, called directly
    assert state0.shape == (1, 3, 16)
    # Any optax optimizer, with no book-specific arguments.
    state = train.create_train_state(model, jax.random.key(0), tx=optax.adam(1e-3))
    corpus, vocab = data.load_corpus(data.find_time_machine().read_text(), "char", 200)
    a = rnnlm_jax.predict(model, state.params, vocab, "time", 5)
    b = rnnlm_jax.sample(model, state.params, vocab, "time", 5, temperature=0.0)[0]
    s = rnnlm_jax.score(model, state.params, vocab, "the time")  # the same order
    assert a == b and len(a) == 9 and s.num_scored == 7
    with pytest.warns(DeprecationWarning, match=r"predict\(model, params, vocab"):
        assert rnnlm_jax.predict(state.params, "time", 5, vocab, model) == a


def test_a_vocab_of_your_own_tokens_keeps_them_as_they_are():
    vocab = rnnlm_jax.Vocab(list("Hi! Ho!"))
    assert vocab.tokens_of("Hi!") == ["H", "i", "!"] and vocab.cleaning == "none"
    assert rnnlm_jax.Vocab(list("ab"), cleaning="book").tokens_of("A!b") == ["a", " ", "b"]


def test_the_previous_release_names_work_and_warn():
    for old, new in (("generation", "infer.generation"), ("training", "train"),
                     ("scoring", "infer.scoring"), ("layer", "nn.layer"),
                     ("models", "nn.models"), ("experiment", "jobs.lm")):  # fmt: skip
        sys.modules.pop(f"rnnlm_jax.{old}", None)
        with pytest.warns(DeprecationWarning, match=f"import rnnlm_jax.{new} instead"):
            module = __import__(f"rnnlm_jax.{old}", fromlist=["x"])
        target = sys.modules[f"rnnlm_jax.{new}"]
        public = [n for n in dir(target) if not n.startswith("_")]
        assert public and all(getattr(module, n) is getattr(target, n) for n in public)
    from rnnlm_jax.generation import predict  # the README's example of the old release
    from rnnlm_jax.training import begin_state, train_step

    assert predict is rnnlm_jax.predict and train_step is train.train_step
    assert begin_state is train.begin_state
    with pytest.warns(DeprecationWarning, match="use impl='flax'"):
        assert RNNLayer(custom_vjp=False).impl == "flax"
    with pytest.warns(DeprecationWarning, match="use impl='fast'"):
        layer = RNNLayer(cell="lstm", lstm_impl="scan")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clone (as flax makes) does not warn again
        assert layer.clone().impl == "fast"
    changelog = (ROOT / "CHANGELOG.md").read_text()
    for name in ("custom_vjp", "rnnlm_jax.training", "predict(", "cleaning", "eval_loss"):
        assert name in changelog, name


def test_library_messages_go_through_logging_and_can_be_silenced(tmp_path, capfd):
    from configs import timemachine

    config = timemachine.get_config("smoke")
    config.num_epochs = 1
    logger = logging.getLogger("rnnlm_jax")
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        rnnlm_jax.train_and_evaluate(config, str(tmp_path / "w"))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    out, _ = capfd.readouterr()
    assert out == ""  # nothing printed: the lines went to the log
    lines = [r.getMessage() for r in records]
    assert any(x.startswith("perplexity ") for x in lines)
    assert any(x.startswith("trained 1 epochs") for x in lines)


def test_metrics_follow_flax_naming_by_step_and_old_records_still_read(tmp_path):
    record = {"epoch": 2, "step": 40, **metrics.loss_record("train", 1.0)}
    record.update(metrics.loss_record("eval", 2.0))
    assert record["eval_perplexity"] == pytest.approx(7.389, rel=1e-3)
    assert record["train_bits_per_token"] == pytest.approx(1.4427, rel=1e-4)
    logger = metrics.MetricsLogger(tmp_path)
    seen = []

    class Board:  # TensorBoard's x-axis: the step
        def add_scalar(self, key, value, x):
            seen.append((key, x))

        def close(self):
            pass

    logger._tb = Board()
    logger.write(metrics.with_legacy_keys(record))
    logger.close()
    assert ("eval_loss", 40) in seen and all(x == 40 for _, x in seen)
    assert not {"perplexity", "val_perplexity", "loss"} & {k for k, _ in seen}
    old = {"epoch": 3, "perplexity": 5.0, "val_perplexity": 6.0}  # the previous release's
    assert metrics.value(old, "eval_perplexity") == 6.0
    assert metrics.value(old, "train_perplexity") == 5.0


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The package built and installed into a folder of its own (no checkout beside it)."""
    site = tmp_path_factory.mktemp("site")
    source = package_source(tmp_path_factory.mktemp("source"))
    r = python("-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
               "--no-build-isolation", f"--target={site}", str(source), timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    return site


def test_the_installed_command_line(installed, tmp_path):
    """`pip install` into a folder of its own, then the command line from elsewhere."""
    env = dict(os.environ, PYTHONPATH=str(installed))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "rnnlm_jax", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)  # fmt: skip

    probe = subprocess.run([sys.executable, "-c", "import rnnlm_jax; print(rnnlm_jax.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True)  # fmt: skip
    assert probe.stdout.startswith(str(installed)), probe  # the install, not the checkout
    r = cli("--help")
    assert r.returncode == 0 and "--workdir" in r.stdout and "--num_preds" in r.stdout
    r = cli()
    assert r.returncode == 2 and "--config=timemachine" in r.stderr, r.stderr
    # The configs ship in the wheel, found by name; JAX's own flags are taken; a sweep's
    # trials run `python -m rnnlm_jax` from the install (no checkout, no main.py).
    r = cli("--config=timemachine:smoke", "--mode=sweep", "--cluster=local",
            "--config.num_epochs=1", "--jax_platforms=cpu",
            f"--workdir={tmp_path / 'sweep'}")  # fmt: skip
    assert r.returncode == 0, r.stderr + r.stdout
    assert "submitted 3 trials (local)" in r.stdout and "| seed=1 |" in r.stdout
    trial = json.loads((tmp_path / "sweep" / "seed=1" / "config.json").read_text())
    assert trial["num_hiddens"] == 32 and trial["seed"] == 1
    for flag in ("--seed=7", "--num_preds=3", "--text=abc"):
        r = cli("--config=timemachine:smoke", flag, f"--workdir={tmp_path / 'x'}")
        assert r.returncode == 2 and r.stderr.startswith(f"error: {flag.split('=')[0]} is for")
        assert r.stderr.count("\n") == 1
    assert not (tmp_path / "x").exists()
