"""Model shapes and state structure, as the section prints them."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlm_jax.nn.models import RNNLayer, RNNModel


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


@pytest.mark.parametrize("num_layers", [1, 2])
def test_custom_vjp_equals_jax_grad_of_flax_simple_cell(num_layers):
    """The hand-written backward pass against `jax.grad` through flax's `nn.SimpleCell` scan."""
    kwargs = dict(vocab_size=28, num_hiddens=64, num_layers=num_layers, initializer="flax")
    fast, plain = RNNModel(**kwargs), RNNModel(**kwargs, impl="flax")
    tokens = jax.random.randint(jax.random.key(1), (8, 12), 0, 28)
    state = fast.begin_state(8) + 0.3
    params = fast.init(jax.random.key(0), tokens, state)["params"]
    plain_params = plain.init(jax.random.key(0), tokens, state)["params"]
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, plain_params)

    def loss(model, p):  # depends on every output and on the final state
        logits, final = model.apply({"params": p}, tokens, state)
        return jnp.mean(jax.nn.log_softmax(logits)[:, 3]) + 0.1 * jnp.sum(final**2)

    np.testing.assert_allclose(loss(fast, params), loss(plain, params), rtol=1e-6)
    g_fast = jax.grad(lambda p: loss(fast, p))(params)
    g_plain = jax.grad(lambda p: loss(plain, p))(params)
    for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_plain)):
        assert float(jnp.abs(b).max()) > 0
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * float(jnp.abs(b).max()))


def test_rnn_layer_takes_floats_or_ids():
    layer = RNNLayer(num_hiddens=8, vocab_size=5)
    ids = jnp.array([[1, 4], [0, 2], [3, 3]])  # [T, B]
    params = layer.init(jax.random.key(0), ids, layer.begin_state(2))
    a, sa = layer.apply(params, ids, layer.begin_state(2))
    b, sb = layer.apply(params, jax.nn.one_hot(ids, 5), layer.begin_state(2))
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(sa, sb, rtol=1e-6)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_bfloat16_matmuls_keep_float32_state_and_logits(cell):
    model = RNNModel(vocab_size=28, cell=cell, num_hiddens=16, dtype=jnp.bfloat16)
    tokens = jnp.ones((2, 3), jnp.int32)
    params = model.init(jax.random.key(0), tokens, model.begin_state(2))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    logits, state = model.apply(params, tokens, model.begin_state(2))
    assert logits.dtype == jnp.float32
    assert all(s.dtype == jnp.float32 for s in jax.tree.leaves(state))
    ref = RNNModel(vocab_size=28, cell=cell, num_hiddens=16).apply(
        params, tokens, model.begin_state(2)
    )[0]
    # The logits of an initialised model are ~1e-3: compare against their own scale
    # (bfloat16 keeps 8 bits of mantissa, a relative error of 2^-8 per rounding).
    scale = float(jnp.abs(ref).max())
    assert scale > 0
    np.testing.assert_allclose(logits, ref, atol=0.03 * scale, rtol=0)
    assert float(jnp.abs(logits - ref).max()) > 0  # bfloat16 did run


def test_unroll_does_not_change_results():
    tokens = jax.random.randint(jax.random.key(1), (4, 10), 0, 28)
    a = RNNModel(vocab_size=28, num_hiddens=16)
    b = RNNModel(vocab_size=28, num_hiddens=16, unroll=5)
    params = a.init(jax.random.key(0), tokens, a.begin_state(4))
    np.testing.assert_allclose(
        a.apply(params, tokens, a.begin_state(4))[0],
        b.apply(params, tokens, b.begin_state(4))[0],
        rtol=1e-6,
    )


@pytest.mark.parametrize("dtype, tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 3e-2)])
def test_fast_head_is_flax_dense_with_its_gradients(dtype, tol):
    from rnnlm_jax.nn import head

    x = jax.random.normal(jax.random.key(0), (12, 8))
    fast, flax_dense = head.Dense(30, dtype=dtype), nn.Dense(30)
    params = flax_dense.init(jax.random.key(1), x)
    assert jax.tree.structure(fast.init(jax.random.key(1), x)) == jax.tree.structure(params)
    w = jax.random.normal(jax.random.key(2), (12, 30))

    def loss(module, p, x):  # a loss whose cotangent differs per logit
        return (jnp.sin(module.apply(p, x)) * w).sum()

    y = fast.apply(params, x)
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(y, flax_dense.apply(params, x), rtol=tol, atol=tol)
    got = jax.grad(loss, argnums=(1, 2))(fast, params, x)
    want = jax.grad(loss, argnums=(1, 2))(flax_dense, params, x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * 10)
