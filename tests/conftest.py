"""Shared fixtures: the verified Time Machine text from the shared data folder.

Tests never download: `$RNNLM_JAX_DATA_DIR` (set by `.ci/run`) or, failing
that, `../shared/data` beside the checkout must hold `timemachine.txt`.
"""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("RNNLM_JAX_DATA_DIR", str(SHARED_DATA))
DATA_DIR = Path(os.environ["RNNLM_JAX_DATA_DIR"])  # holds timemachine.txt and ptb/


@pytest.fixture(scope="session")
def text_path() -> Path:
    from rnnlm_jax import data

    return data.find_time_machine(url="http://127.0.0.1:9/unreachable")


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

    from rnnlm_jax.models import RNNModel

    _, vocab = corpus_vocab
    model = RNNModel(vocab_size=len(vocab), num_hiddens=32, initializer="flax")
    params = model.init(jax.random.key(3), jnp.zeros((1, 1), jnp.int32), model.begin_state(1))
    return model, params["params"], vocab
