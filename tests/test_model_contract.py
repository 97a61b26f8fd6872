"""The training API's model contract: stated logits layout, checked at the first call with a
one-line error; any optax optimizer."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnnlm_jax import train
from rnnlm_jax.nn.models import RNNModel, zero_state

V, H, B, T = 11, 16, 4, 5


class BatchMajorLM(nn.Module):
    """The book's model with its logits turned to `[B, T, V]`, stated as such."""

    logits_layout = "batch_major"

    def setup(self):
        self.lm = RNNModel(vocab_size=V, num_hiddens=H)

    def __call__(self, tokens, state, deterministic=True):
        logits, state = self.lm(tokens, state, deterministic)
        return logits.reshape(tokens.shape[1], tokens.shape[0], V).swapaxes(0, 1), state

    @nn.nowrap
    def begin_state(self, batch_size):
        return zero_state("rnn", 1, batch_size, H)


class FlatBatchMajorLM(BatchMajorLM):
    """Flattened batch-major logits `[B * T, V]`, stated as batch-major: refused. (Stated as
    time-major they would have the right shape and misaligned targets: the layout is the
    model's statement, which is why it must be made.)"""

    def __call__(self, tokens, state, deterministic=True):
        logits, state = super().__call__(tokens, state, deterministic)
        return logits.reshape(-1, V), state


class MisstatedLM(BatchMajorLM):
    logits_layout = "time_major"


class Unstated(BatchMajorLM):
    logits_layout = None


class NoDeterministic(BatchMajorLM):
    def __call__(self, tokens, state):
        return super().__call__(tokens, state)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.integers(0, V, (B, T)), jnp.int32) for _ in range(2))


def test_batch_major_logits_train_as_the_time_major_model():
    X, Y = _batch()
    key = jax.random.key(0)
    book = RNNModel(vocab_size=V, num_hiddens=H)
    a = train.create_train_state(book, key, 1.0, 1.0, B, T)
    b = train.create_train_state(BatchMajorLM(), key, 1.0, 1.0, B, T)
    assert a.logits_layout == "time_major" and b.logits_layout == "batch_major"
    same = {"lm": jax.tree.map(jnp.copy, a.params)}  # train_step donates its state
    b = b.replace(params=same, opt_state=b.tx.init(same))
    a, _, ma = train.train_step(a, book.begin_state(B), X, Y)
    b, _, mb = train.train_step(b, book.begin_state(B), X, Y)
    np.testing.assert_allclose(ma["loss_sum"], mb["loss_sum"], rtol=1e-6)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6), a.params, b.params["lm"])
    ev = train.evaluate(b, X[None], Y[None], book.begin_state(B))
    assert np.isfinite(float(ev["loss_sum"]))


@pytest.mark.parametrize(
    "model, match",
    [
        (Unstated(), "logits_layout is None"),
        (FlatBatchMajorLM(), r"must be \[B, T, V\], but they are \[20, 11\]"),
        (MisstatedLM(), r"must be \[T \* B, V\], but they are \[4, 5, 11\]"),
        (NoDeterministic(), "deterministic"),
    ],
)
def test_contract_errors_are_one_line(model, match):
    with pytest.raises(ValueError, match=match) as e:
        train.create_train_state(model, jax.random.key(0), 1.0, 1.0, B, T)
    assert "\n" not in str(e.value)


def test_stated_layout_is_checked_when_the_loss_is_traced():
    book = RNNModel(vocab_size=V, num_hiddens=H)
    state = train.create_train_state(book, jax.random.key(0), 1.0, 1.0, B, T)
    wrong = state.replace(logits_layout="batch_major")  # a state stating the wrong layout
    X, Y = _batch()
    with pytest.raises(ValueError, match=r"must be \[B, T, V\]"):
        train.train_step(wrong, book.begin_state(B), X, Y)


def test_any_optax_optimizer():
    book = RNNModel(vocab_size=V, num_hiddens=H, initializer="flax")
    tx = optax.adam(1e-2)
    state = train.create_train_state(book, jax.random.key(0), None, None, B, T, tx=tx)
    assert state.tx is tx and isinstance(state.opt_state[0], optax.ScaleByAdamState)
    X, Y = _batch()
    losses = []
    for _ in range(30):
        state, _, m = train.train_step(state, book.begin_state(B), X, Y)
        losses.append(float(m["loss_sum"]))
    assert losses[-1] < 0.5 * losses[0]
    with pytest.raises(ValueError, match="lr and clip"):
        train.create_train_state(book, jax.random.key(0), None, None, B, T)
