"""Shared fixtures. The suite is hermetic: the book's text comes from the package, corpora's
pipelines run on small files the tests write, and only the tests of the real PTB and tiny
Shakespeare files read `$RNNLM_JAX_DATA_DIR` (`.ci/run` points it at a verified copy); they
skip, saying why, where it is unset or lacks the file.

Every test process gets a data folder and a JAX compilation cache of its own (empty, in
temporary folders), so no test reads or writes the user's `~/.cache/rnnlm_jax`, and the
subprocesses the tests start inherit them. No test downloads: the few that exercise
downloads serve files on loopback.
"""

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_real = os.environ.get("RNNLM_JAX_DATA_DIR")
REAL_DATA_DIR = Path(_real) if _real else None  # the real corpora, where the runner has them
os.environ["RNNLM_JAX_DATA_DIR"] = tempfile.mkdtemp(prefix="rnnlm_jax_test_data_")
# A compilation cache of the test process's own, which the `main.py` processes the tests
# start share: they compile the same small programs again and again (a sixth of the suite's
# time); never the user's cache, and removed at the end like the data folder.
os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="rnnlm_jax_test_jax_cache_")
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"


def real_data(relative: str) -> Path:
    """`$RNNLM_JAX_DATA_DIR/relative` as the runner set it; skips the test where it is absent."""
    if REAL_DATA_DIR is None:
        pytest.skip(f"needs the real {relative}: set $RNNLM_JAX_DATA_DIR to a folder holding it")
    path = REAL_DATA_DIR / relative
    if not path.exists():
        pytest.skip(f"needs the real {relative}: $RNNLM_JAX_DATA_DIR={REAL_DATA_DIR} lacks it")
    return path


def pytest_sessionfinish(session, exitstatus):
    import shutil

    shutil.rmtree(os.environ["RNNLM_JAX_DATA_DIR"], ignore_errors=True)
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def text_path() -> Path:
    from rnnlm_jax.data import sources

    return sources.packaged_time_machine()


@pytest.fixture(scope="session")
def text(text_path) -> str:
    return text_path.read_text()


@pytest.fixture(scope="session")
def corpus_vocab(text):
    from rnnlm_jax import data

    return data.load_corpus(text, "char", 10000)


@pytest.fixture(scope="session")
def small_lm(corpus_vocab):
    """An untrained 32-unit char model: `(model, params, vocab)`."""
    import jax
    import jax.numpy as jnp

    from rnnlm_jax.nn.models import RNNModel

    _, vocab = corpus_vocab
    model = RNNModel(vocab_size=len(vocab), num_hiddens=32, initializer="flax")
    params = model.init(jax.random.key(3), jnp.zeros((1, 1), jnp.int32), model.begin_state(1))
    return model, params["params"], vocab


def package_source(dest: Path) -> Path:
    """A copy of what `pip install` builds the package from (the build writes beside its
    source, so never in the checkout): `rnnlm_jax/`, `configs/`, pyproject.toml, README."""
    import shutil

    for folder in ("rnnlm_jax", "configs"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    return dest
