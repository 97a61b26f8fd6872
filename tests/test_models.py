"""Model shapes and state structure, as the section prints them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlm_jax.models import RNNLayer, RNNModel


def test_rnn_layer_shapes_as_in_the_book():
    layer = RNNLayer(num_hiddens=256)
    state = layer.begin_state(32)
    assert state.shape == (1, 32, 256)
    X = jax.random.uniform(jax.random.key(0), (35, 32, 28))
    params = layer.init(jax.random.key(1), X, state)
    Y, new_state = layer.apply(params, X, state)
    assert Y.shape == (35, 32, 256) and new_state.shape == (1, 32, 256)
    # The final state is the last output (one layer).
    np.testing.assert_allclose(new_state[0], Y[-1])


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("num_layers", [1, 3])
def test_model_shapes(cell, num_layers):
    model = RNNModel(vocab_size=28, cell=cell, num_hiddens=16, num_layers=num_layers)
    state = model.begin_state(4)
    leaves = state if cell == "lstm" else (state,)
    assert all(s.shape == (num_layers, 4, 16) for s in leaves)
    assert isinstance(state, tuple) == (cell == "lstm")
    tokens = jnp.zeros((4, 7), jnp.int32)
    params = model.init(jax.random.key(0), tokens, state)
    logits, new_state = model.apply(params, tokens, state)
    assert logits.shape == (7 * 4, 28) and logits.dtype == jnp.float32
    assert jax.tree.map(jnp.shape, new_state) == jax.tree.map(jnp.shape, state)
    assert sorted(params["params"]["rnn"]) == [f"layer_{i}" for i in range(num_layers)]


def test_deeper_layers_feed_on_the_layer_below():
    model = RNNModel(vocab_size=5, num_hiddens=8, num_layers=2)
    tokens = jnp.array([[1, 2, 3]])
    state = model.begin_state(1)
    params = model.init(jax.random.key(0), tokens, state)
    # Changing layer 0's input kernel changes the logits only through layer 1.
    p2 = jax.tree.map(lambda x: x, params)
    p2["params"]["rnn"]["layer_0"]["i"]["kernel"] = (
        params["params"]["rnn"]["layer_0"]["i"]["kernel"] * 3
    )
    a, sa = model.apply(params, tokens, state)
    b, sb = model.apply(p2, tokens, state)
    assert not np.allclose(a, b) and not np.allclose(sa[1], sb[1])


def test_normal_init_is_the_books():
    model = RNNModel(vocab_size=28, num_hiddens=256, initializer="normal")
    params = model.init(jax.random.key(0), jnp.zeros((2, 3), jnp.int32), model.begin_state(2))
    p = params["params"]
    w = p["rnn"]["layer_0"]["h"]["kernel"]
    assert abs(float(w.std()) - 0.01) < 0.001 and abs(float(w.mean())) < 0.001
    assert not p["rnn"]["layer_0"]["i"]["bias"].any() and not p["dense"]["bias"].any()


def test_time_major_logits_match_targets_order():
    """Row t * B + b of the logits is step t of sequence b (as `Y.T.reshape(-1)`)."""
    model = RNNModel(vocab_size=6, num_hiddens=8)
    tokens = jnp.array([[1, 2, 3], [4, 5, 1]])
    state = model.begin_state(2)
    params = model.init(jax.random.key(0), tokens, state)
    logits, _ = model.apply(params, tokens, state)
    one, _ = model.apply(params, tokens[1:], model.begin_state(1))
    np.testing.assert_allclose(logits.reshape(3, 2, 6)[:, 1], one, rtol=1e-5, atol=1e-6)
