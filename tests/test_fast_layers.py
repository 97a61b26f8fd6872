"""The fast layers against flax's cells: same parameter trees, same outputs, same gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import rnn as jax_rnn

from rnnlm_jax.nn.fast_layers import FastGRU, FastLSTM, FastRNN, pack_cudnn_lstm_weights
from rnnlm_jax.nn.models import RNNModel

FLAX_CELLS = {
    "rnn": (FastRNN, nn.SimpleCell),
    "gru": (FastGRU, nn.GRUCell),
    "lstm": (FastLSTM, nn.LSTMCell),
    "optimized_lstm": (FastLSTM, nn.OptimizedLSTMCell),
}


def _close_trees(a, b, rtol=1e-4):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        scale = float(jnp.abs(y).max())
        assert scale > 0, "a gradient that is all zeros tests nothing"
        np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-6 * scale)


@pytest.mark.parametrize("name", sorted(FLAX_CELLS))
def test_fast_layer_is_flax_cell_under_scan(name):
    """Parameters move both ways; outputs, final carry and every gradient agree."""
    fast_cls, flax_cls = FLAX_CELLS[name]
    T, B, D, H = 9, 3, 5, 8
    x = jax.random.normal(jax.random.key(0), (T, B, D))
    flax_layer = nn.scan(
        flax_cls,
        variable_broadcast="params",
        split_rngs={"params": False},
        in_axes=0,
        out_axes=0,
    )(features=H)
    carry = flax_cls(features=H).initialize_carry(jax.random.key(1), (B, D))
    carry = jax.tree.map(lambda c: c + 0.2 * jax.random.normal(jax.random.key(2), c.shape), carry)
    params = flax_layer.init(jax.random.key(3), carry, x)["params"]
    fast = fast_cls(H)
    assert jax.tree.map(jnp.shape, fast.init(jax.random.key(3), carry, x)["params"]) == (
        jax.tree.map(jnp.shape, params)
    )

    def loss(layer, p, carry, x):
        final, ys = layer.apply({"params": p}, carry, x)
        return jnp.sum(jnp.sin(3 * ys)) + sum(jnp.sum(jnp.cos(c)) for c in jax.tree.leaves(final))

    np.testing.assert_allclose(
        loss(fast, params, carry, x), loss(flax_layer, params, carry, x), rtol=1e-5
    )
    g_fast = jax.grad(loss, argnums=(1, 2, 3))(fast, params, carry, x)
    g_flax = jax.grad(loss, argnums=(1, 2, 3))(flax_layer, params, carry, x)
    _close_trees(g_fast, g_flax)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("num_layers,dropout", [(1, 0.0), (2, 0.0), (2, 0.3)])
def test_fast_model_gradients_equal_jax_grad_through_flax_cells(cell, num_layers, dropout):
    """Whole model, token-id inputs, through the logits and the final state, with dropout."""
    kwargs = dict(
        vocab_size=11,
        cell=cell,
        num_hiddens=16,
        num_layers=num_layers,
        dropout=dropout,
        initializer="pytorch",
    )
    fast, plain = RNNModel(**kwargs), RNNModel(**kwargs, impl="flax")
    tokens = jax.random.randint(jax.random.key(1), (4, 10), 0, 11)
    state = jax.tree.map(lambda s: s + 0.3, fast.begin_state(4))
    params = fast.init(jax.random.key(0), tokens, state)["params"]
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(
        jnp.shape, plain.init(jax.random.key(0), tokens, state)["params"]
    )
    rngs = {"dropout": jax.random.key(5)}

    def loss(model, p, state):
        logits, final = model.apply({"params": p}, tokens, state, dropout == 0.0, rngs=rngs)
        final_term = sum(jnp.sum(s**2) for s in jax.tree.leaves(final))
        return jnp.mean(jax.nn.log_softmax(logits)[:, 3]) + 0.1 * final_term

    np.testing.assert_allclose(loss(fast, params, state), loss(plain, params, state), rtol=1e-5)
    _close_trees(
        jax.grad(loss, argnums=(1, 2))(fast, params, state),
        jax.grad(loss, argnums=(1, 2))(plain, params, state),
    )


def test_cudnn_weight_packing_matches_lstm_ref_and_fast_lstm():
    """The cuDNN path's conversion, checked on the CPU through jax's own `lstm_ref`."""
    T, B, D, H = 6, 2, 5, 7
    x = jax.random.normal(jax.random.key(0), (T, B, D))
    c0, h0 = (jax.random.normal(jax.random.key(i), (B, H)) for i in (1, 2))
    layer = FastLSTM(H)
    params = layer.init(jax.random.key(3), (c0, h0), x)["params"]
    params = jax.tree.map(lambda p: p + 0.1, params)  # non-zero biases too
    (c_fast, h_fast), ys_fast = layer.apply({"params": params}, (c0, h0), x)

    weights = pack_cudnn_lstm_weights(params)
    assert weights.size == jax_rnn.get_num_params_in_lstm(D, H, 1, False)
    W_ih, W_hh, b_ih, b_hh = jax_rnn.unpack_lstm_weights(weights, D, H, 1, False)
    ys, h_n, c_n = jax_rnn.lstm_ref(
        jnp.swapaxes(x, 0, 1),
        h0[None],
        c0[None],
        W_ih,
        W_hh,
        b_ih,
        b_hh,
        jnp.full((B,), T, jnp.int32),
        D,
        H,
        1,
        0.0,
        False,
    )
    np.testing.assert_allclose(jnp.swapaxes(ys, 0, 1), ys_fast, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_n[0], h_fast, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c_n[0], c_fast, rtol=1e-5, atol=1e-6)


def test_pytorch_initializer_bounds():
    """Weights U(-k, k), k = 1/sqrt(H); recurrent biases b_ih + b_hh, two such draws; the
    head's bias one draw (PyTorch's nn.LSTM and nn.Linear defaults)."""
    H = 64
    k = H**-0.5
    model = RNNModel(vocab_size=28, cell="lstm", num_hiddens=H, initializer="pytorch")
    params = model.init(jax.random.key(0), jnp.zeros((2, 3), jnp.int32), model.begin_state(2))
    flat = {
        "/".join(p.key for p in path): v
        for path, v in jax.tree_util.tree_leaves_with_path(params["params"])
    }
    for name, value in flat.items():
        top = float(jnp.abs(value).max())
        if name.endswith("kernel") or name == "dense/bias":
            assert 0.9 * k < top <= k, name
        else:  # a recurrent bias: a sum of two draws reaches past k
            assert k < top <= 2 * k, name
