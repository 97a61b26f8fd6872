"""RNNLayer as research code uses it: either layout, optional state, variable lengths,
bidirectional stacks, any flax cell, every layer's sequence; parity with flax's `nn.RNN` and
`nn.Bidirectional` with the same parameters."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlm_jax.nn.layer import CELLS, RNNLayer

T, B, D, H = 6, 3, 5, 4
LENGTHS = jnp.array([6, 2, 4])


def _inputs(seed=0, shape=(T, B, D)):
    return jax.random.normal(jax.random.key(seed), shape)


def _close(a, b, tol=1e-5):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=tol, atol=tol), a, b)


def _layer(cell, **kw):
    return RNNLayer(cell=cell, num_hiddens=H, initializer="pytorch", **kw)


def _init(layer, x, **kw):
    return layer.init(jax.random.key(1), x, **kw)["params"]


def _mask(t_axis=0):
    m = np.arange(T)[:, None] < np.asarray(LENGTHS)[None, :]
    return jnp.asarray(m if t_axis == 0 else m.T)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("impl, bidirectional", [("fast", False), ("fast", True), ("flax", True)])
def test_padded_batch_matches_each_unpadded_sequence(cell, impl, bidirectional):
    layer = _layer(cell, impl=impl, bidirectional=bidirectional, num_layers=2)
    x = _inputs()
    params = _init(layer, x, seq_lengths=LENGTHS)
    rows = 4 if bidirectional else 2
    state0 = jax.tree.map(lambda s: s + 0.1, layer.begin_state(B))
    out, state = layer.apply({"params": params}, x, state0, seq_lengths=LENGTHS)
    assert out.shape == (T, B, (2 if bidirectional else 1) * H)
    for b, n in enumerate(np.asarray(LENGTHS)):
        alone = jax.tree.map(lambda s, b=b: s[:, b : b + 1], state0)
        ref_out, ref_state = layer.apply({"params": params}, x[:n, b : b + 1], alone)
        _close(out[:n, b], ref_out[:, 0])
        np.testing.assert_array_equal(out[n:, b], 0.0)  # zero past the end
        for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(ref_state)):
            assert got.shape[0] == rows
            _close(got[:, b], want[:, 0])  # h and, for the LSTM, c at the last valid step


def test_zero_length_sequence_keeps_the_initial_state():
    layer = _layer("lstm")
    x = _inputs()
    params = _init(layer, x)
    state0 = jax.tree.map(lambda s: s + 0.5, layer.begin_state(B))
    lengths = jnp.array([0, 3, 6])
    out, (c, h) = layer.apply({"params": params}, x, state0, seq_lengths=lengths)
    np.testing.assert_array_equal(out[:, 0], 0.0)
    _close(c[:, 0], state0[0][:, 0])
    _close(h[:, 0], state0[1][:, 0])


def _to_flax_rnn(params, name):
    return {"cell": params[name]}


def _flax_masked(ref):
    """flax's `nn.RNN` / `nn.Bidirectional` (batch-major, `LENGTHS`), outputs past the end
    zeroed as ours are: `(params, x) -> (outputs, carry)`."""

    def run(p, x):
        carry, out = ref.apply({"params": p}, x, seq_lengths=LENGTHS)
        return jnp.where(_mask(t_axis=1)[..., None], out, 0.0), carry

    return run


def _parity(ours, theirs, params, fparams, x, w):
    """Checks `ours(params, x)` == `theirs(fparams, x)` (outputs, final carries) and the
    gradients of one loss through both w.r.t. `x`; returns the parameter gradients."""

    def loss(f, p, x):
        out, carry = f(p, x)
        return (out * w).sum() + sum(jnp.sum(c**2) for c in jax.tree.leaves(carry))

    _close(ours(params, x), theirs(fparams, x))
    g_ours, gx_ours = jax.grad(functools.partial(loss, ours), argnums=(0, 1))(params, x)
    g_theirs, gx_theirs = jax.grad(functools.partial(loss, theirs), argnums=(0, 1))(fparams, x)
    _close(gx_ours, gx_theirs, 1e-4)
    return g_ours, g_theirs


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_matches_flax_rnn_with_seq_lengths(cell):
    layer = _layer(cell, time_major=False)
    x = _inputs(shape=(B, T, D))
    params = _init(layer, x, seq_lengths=LENGTHS)
    ref = nn.RNN(CELLS[cell](H), return_carry=True)
    fparams = _to_flax_rnn(params, "layer_0")
    w = _inputs(2, (B, T, H))

    def ours(p, x):
        out, state = layer.apply({"params": p}, x, seq_lengths=LENGTHS)
        return out, jax.tree.map(lambda s: s[0], state)

    g_ours, g_theirs = _parity(ours, _flax_masked(ref), params, fparams, x, w)
    _close(_to_flax_rnn(g_ours, "layer_0"), g_theirs, 1e-4)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_bidirectional_matches_flax_bidirectional(cell):
    layer = _layer(cell, bidirectional=True, time_major=False)
    x = _inputs(shape=(B, T, D))
    params = _init(layer, x, seq_lengths=LENGTHS)
    ref = nn.Bidirectional(nn.RNN(CELLS[cell](H)), nn.RNN(CELLS[cell](H)), return_carry=True)
    fparams = {
        "forward_rnn": _to_flax_rnn(params, "layer_0"),
        "backward_rnn": _to_flax_rnn(params, "layer_0_reverse"),
    }
    w = _inputs(3, (B, T, 2 * H))

    def ours(p, x):
        out, state = layer.apply({"params": p}, x, seq_lengths=LENGTHS)
        return out, tuple(jax.tree.map(lambda s, k=k: s[k], state) for k in range(2))

    g_ours, g_theirs = _parity(ours, _flax_masked(ref), params, fparams, x, w)
    _close(g_ours["layer_0"], g_theirs["forward_rnn"]["cell"], 1e-4)
    _close(g_ours["layer_0_reverse"], g_theirs["backward_rnn"]["cell"], 1e-4)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_fast_backward_with_lengths_and_directions_matches_flax_cells(cell):
    """The hand-written backward pass, through a padded bidirectional 2-layer stack with
    dropout, against `jax.grad` through flax's cells with the same parameters."""
    fast = _layer(cell, bidirectional=True, num_layers=2, dropout=0.3)
    slow = fast.clone(impl="flax")
    x = _inputs()
    params = _init(fast, x, seq_lengths=LENGTHS)
    state0 = jax.tree.map(lambda s: s + 0.2, fast.begin_state(B))
    rngs = {"dropout": jax.random.key(7)}

    def loss(layer, p, x, s):
        out, state = layer.apply({"params": p}, x, s, False, seq_lengths=LENGTHS, rngs=rngs)
        return jnp.sum(jnp.sin(out)) + sum(jnp.sum(c**2) for c in jax.tree.leaves(state))

    _close(loss(fast, params, x, state0), loss(slow, params, x, state0))
    g_fast = jax.grad(functools.partial(loss, fast), argnums=(0, 1, 2))(params, x, state0)
    g_slow = jax.grad(functools.partial(loss, slow), argnums=(0, 1, 2))(params, x, state0)
    _close(g_fast, g_slow, 1e-4)


def test_stacked_bidirectional_matches_flax_composition():
    layer = _layer("gru", bidirectional=True, num_layers=2, time_major=False)
    x = _inputs(shape=(B, T, D))
    params = _init(layer, x, seq_lengths=LENGTHS)
    out, state = layer.apply({"params": params}, x, seq_lengths=LENGTHS)
    h, carries = x, []
    for layer_index in range(2):
        bi = nn.Bidirectional(nn.RNN(nn.GRUCell(H)), nn.RNN(nn.GRUCell(H)), return_carry=True)
        p = {
            "forward_rnn": {"cell": params[f"layer_{layer_index}"]},
            "backward_rnn": {"cell": params[f"layer_{layer_index}_reverse"]},
        }
        carry, h = bi.apply({"params": p}, h, seq_lengths=LENGTHS)
        carries += list(carry)
        h = jnp.where(_mask(t_axis=1)[..., None], h, 0.0)
    _close(out, h)
    _close(state, jnp.stack(carries))  # PyTorch's h_n order: layer-major, forward first


def test_batch_major_is_unambiguous_when_batch_equals_steps():
    n = 4
    ids = jax.random.randint(jax.random.key(0), (n, n), 0, 7)  # [B, T] with B == T
    bm = RNNLayer(num_hiddens=H, vocab_size=7, time_major=False)
    tm = bm.clone(time_major=True)
    params = _init(bm, ids)
    out_bm, s_bm = bm.apply({"params": params}, ids)
    out_tm, s_tm = tm.apply({"params": params}, ids.T)
    _close(out_bm, jnp.swapaxes(out_tm, 0, 1))
    _close(s_bm, s_tm)
    misread, _ = tm.apply({"params": params}, ids)  # the same array read as [T, B]
    assert not np.allclose(misread, out_tm)


def test_batch_major_input_with_a_time_major_state_fails_in_one_line():
    layer = RNNLayer(num_hiddens=H, vocab_size=7)
    ids = jnp.zeros((2, 5), jnp.int32)  # [B, T], but the layer is time-major
    params = _init(layer, ids.T)
    with pytest.raises(ValueError, match="time_major") as e:
        layer.apply({"params": params}, ids, layer.begin_state(2))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="seq_lengths"):
        layer.apply({"params": params}, ids.T, seq_lengths=jnp.array([5, 5, 5]))


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_state_is_optional(cell):
    layer = _layer(cell, num_layers=2, bidirectional=True)
    x = _inputs()
    params = _init(layer, x)
    _close(
        layer.apply({"params": params}, x),
        layer.apply({"params": params}, x, layer.begin_state(B)),
    )


def test_any_flax_cell_class():
    x = _inputs()
    named = _layer("lstm", num_layers=2)
    params = _init(named, x)
    for cell in (nn.OptimizedLSTMCell, functools.partial(nn.OptimizedLSTMCell)):
        other = _layer(cell, num_layers=2)
        assert jax.tree.structure(_init(other, x)) == jax.tree.structure(params)
        _close(
            other.apply({"params": params}, x, seq_lengths=LENGTHS),
            named.apply({"params": params}, x, seq_lengths=LENGTHS),
        )

    class LeakyCell(nn.RNNCellBase):  # a research cell with its own carry and fields
        features: int
        leak: float = 0.5

        @nn.compact
        def __call__(self, carry, x):
            h = (1 - self.leak) * carry + self.leak * jnp.tanh(nn.Dense(self.features)(x))
            return h, h

        @nn.nowrap
        def initialize_carry(self, rng, input_shape):
            return jnp.zeros((*input_shape[:-1], self.features))

        @property
        def num_feature_axes(self):
            return 1

    leaky = _layer(LeakyCell, bidirectional=True, time_major=False)
    xb = jnp.swapaxes(x, 0, 1)
    lp = _init(leaky, xb)
    assert set(lp) == {"layer_0", "layer_0_reverse"}
    out, state = leaky.apply({"params": lp}, xb, seq_lengths=LENGTHS)
    assert out.shape == (B, T, 2 * H) and state.shape == (2, B, H)
    assert leaky.begin_state(B).shape == (2, B, H)


def test_all_layers_and_lstm_cell_states_over_time():
    layer = _layer("lstm", num_layers=2, bidirectional=True, time_major=False)
    x = _inputs(shape=(B, T, D))
    params = _init(layer, x)
    out, (c, h) = layer.apply({"params": params}, x, seq_lengths=LENGTHS)
    (cs, hs), state = layer.apply(
        {"params": params}, x, seq_lengths=LENGTHS, return_all_layers=True
    )
    assert cs.shape == hs.shape == (2, B, T, 2 * H)
    _close(hs[-1], out)
    _close(state, (c, h))
    for b, n in enumerate(np.asarray(LENGTHS)):  # the forward direction's last valid step
        _close(cs[1, b, n - 1, :H], c[2, b])
        _close(hs[0, b, n - 1, :H], h[0, b])
        _close(cs[0, b, 0, H:], c[1, b])  # the reverse direction ends at step 0
    np.testing.assert_array_equal(cs[:, 1, 2:], 0.0)


def test_forward_mode_autodiff_names_the_switch():
    layer = _layer("lstm")
    x = _inputs()
    params = _init(layer, x)
    f = lambda x: layer.apply({"params": params}, x)[0].sum()  # noqa: E731
    with pytest.raises(TypeError, match="impl='flax'"):
        jax.jvp(f, (x,), (x,))
    slow = layer.clone(impl="flax")
    g = lambda x: slow.apply({"params": params}, x)[0].sum()  # noqa: E731
    _, tangent = jax.jvp(g, (x,), (x,))
    np.testing.assert_allclose(tangent, jnp.vdot(jax.grad(g)(x), x), rtol=1e-4)
