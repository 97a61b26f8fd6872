"""minGRU, minLSTM, RG-LRU and LRU in `RNNLayer` against per-step references written from
their equations: values and gradients, both scans, stacked, bidirectional, variable lengths,
a carried state; RG-LRU and Griffin's convolution against recurrentgemma's computation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlm_jax.nn.blocks import Conv1D
from rnnlm_jax.nn.layer import RNNLayer
from rnnlm_jax.nn.linear_cells import RGLRU, ring_init, sqrt_bounded_grad

CELLS = ("mingru", "minlstm", "rglru", "lru")


def _close(a, b, rtol=2e-4):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        scale = float(jnp.abs(y).max())
        assert scale > 0, "all zeros tests nothing"
        np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-5 * scale)


# --- per-step references, from the equations (one sequence, one step at a time) ----------


def _step(cell, p, h, x):
    """One step of `cell` with the layer's parameters `p`: `(h, x [D]) -> (h, y)`."""
    sig = jax.nn.sigmoid
    if cell == "mingru":
        H = h.shape[-1]
        xp = x @ p["kernel"] + p["bias"]
        z, cand = sig(xp[:H]), xp[H:]
        h = (1 - z) * h + z * cand
        return h, h
    if cell == "minlstm":
        H = h.shape[-1]
        xp = x @ p["kernel"] + p["bias"]
        f, i, cand = sig(xp[:H]), sig(xp[H : 2 * H]), xp[2 * H :]
        h = f / (f + i) * h + i / (f + i) * cand
        return h, h
    if cell == "rglru":
        xp = x @ p["kernel"] + p["bias"]
        q = p["rg_lru"]
        n = q["input_gate"]["w"].shape[0]

        def block(g):  # block-diagonal: head k maps its slice of xp with w[k]
            parts = jnp.split(xp, n)
            return jnp.concatenate([parts[k] @ g["w"][k] + g["b"][k] for k in range(n)])

        r, i = sig(block(q["a_gate"])), sig(block(q["input_gate"]))
        a = jnp.exp(-8.0 * r * jax.nn.softplus(q["a_param"]))
        h = a * h + jnp.sqrt(1 - a**2) * (i * xp)
        return h, h
    # lru: complex arithmetic, step by step
    lam = jnp.exp(-jnp.exp(p["nu_log"]) + 1j * jnp.exp(p["theta_log"]))
    gamma = jnp.exp(p["gamma_log"])
    Bm, Cm = p["B_re"] + 1j * p["B_im"], p["C_re"] + 1j * p["C_im"]
    hc = h[0] + 1j * h[1]
    hc = lam * hc + gamma * (x @ Bm)
    Dx = x * p["D"] if p["D"].ndim == 1 else x @ p["D"]
    return (hc.real, hc.imag), (hc @ Cm).real + Dx


def reference(cell, params, x, state, lengths, layers, bidirectional):
    """The stack one step after another (`lax.scan` of `_step` over time, vmapped over the
    batch); a sequence's state stops changing past its length; the reverse direction
    reads each sequence from its last valid step (indices computed here in numpy)."""
    K = 2 if bidirectional else 1
    T, B = x.shape[:2]
    t = np.arange(T)[:, None]
    rev = np.where(t < lengths[None], lengths[None] - 1 - t, t)  # [T, B] time index
    valid = jnp.asarray(t < lengths[None])
    finals = []
    for layer in range(layers):
        outs = []
        for k in range(K):
            p = params[f"layer_{layer}" + ("_reverse" if k else "")]
            h0 = jax.tree.map(lambda s, row=layer * K + k: s[row], state)
            xk = jnp.take_along_axis(x, jnp.asarray(rev)[..., None], axis=0) if k else x
            step = jax.vmap(functools.partial(_step, cell, p))

            def body(h, inputs, step=step):
                x_t, ok = inputs
                new, y = step(h, x_t)
                keep = lambda a, b: jnp.where(ok[:, None], a, b)  # noqa: E731
                return jax.tree.map(keep, new, h), jnp.where(ok[:, None], y, 0.0)

            h, ys = jax.lax.scan(body, h0, (xk, valid))
            if k:
                ys = jnp.take_along_axis(ys, jnp.asarray(rev)[..., None], axis=0)
            outs.append(ys)
            finals.append(h)
        x = jnp.concatenate(outs, axis=-1)
    return x, jax.tree.map(lambda *f: jnp.stack(f), *finals)


def _setup(cell, layers, bidirectional, T=6, B=3, D=5, H=4):
    layer = RNNLayer(cell=cell, num_hiddens=H, num_layers=layers, bidirectional=bidirectional,
                     initializer="flax", num_heads=2)  # fmt: skip
    x = jax.random.normal(jax.random.key(1), (T, B, D))
    rows = layers * (2 if bidirectional else 1)
    state = jax.tree.map(
        lambda s: 0.5 * jax.random.normal(jax.random.key(2), s.shape), layer.begin_state(B)
    )
    assert jax.tree.leaves(state)[0].shape == (rows, B, H)
    params = layer.init(jax.random.key(0), x, state)["params"]
    if cell == "lru":  # phases large enough that the imaginary parts matter
        params = jax.tree_util.tree_map_with_path(
            lambda path, v: v + 1.0 if "theta_log" in jax.tree_util.keystr(path) else v, params
        )
    return layer, params, x, state


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(
    "layers,bidirectional,lengths",
    [(1, True, (6, 3, 0)), (2, False, None)],
)
def test_layer_equals_its_per_step_reference(cell, layers, bidirectional, lengths):
    """Outputs, final states and the gradients of both with respect to the parameters,
    the inputs and the carried initial state, by either scan."""
    layer, params, x, state = _setup(cell, layers, bidirectional)
    B = x.shape[1]
    lens = jnp.array(lengths if lengths else (x.shape[0],) * B)
    kw = {"seq_lengths": lens} if lengths else {}
    width = layer.num_hiddens * (1 + bidirectional)
    w = jax.random.normal(jax.random.key(3), (x.shape[0], B, width))

    def loss(run, params, x, state):
        y, final = run(params, x, state)
        return jnp.sum(y * w) + sum(jnp.sum(jnp.sin(f)) for f in jax.tree.leaves(final))

    def both(run):
        grads = jax.grad(functools.partial(loss, run), argnums=(0, 1, 2))
        return jax.jit(lambda p, x, s: (run(p, x, s), grads(p, x, s)))(params, x, state)

    n = np.asarray(lens)
    ref = both(lambda p, x, s: reference(cell, p, x, s, n, layers, bidirectional))
    for scan in ("associative", "sequential"):
        run = functools.partial(layer.clone(scan=scan).apply, **kw)
        ours = both(lambda p, x, s, run=run: run({"params": p}, x, s))
        _close(ours[0], ref[0])
        _close(ours[1], ref[1], rtol=1e-3)


@pytest.mark.parametrize("cell", CELLS)
def test_token_ids_are_their_one_hots_and_state_carries_across_minibatches(cell):
    """Int ids read rows (the one-hot's product); two halves with the state carried equal
    the whole sequence; associative == sequential at length 300 (values and gradients)."""
    V, H, T, B = 7, 8, 200, 2
    layer = RNNLayer(cell=cell, num_hiddens=H, vocab_size=V, initializer="flax", num_heads=2)
    ids = jax.random.randint(jax.random.key(4), (T, B), 0, V)
    params = layer.init(jax.random.key(0), ids)["params"]
    apply = jax.jit(layer.apply)
    y_ids, s_ids = apply({"params": params}, ids)
    y_hot, s_hot = apply({"params": params}, jax.nn.one_hot(ids, V))
    _close((y_ids, s_ids), (y_hot, s_hot), rtol=1e-5)
    y1, s1 = apply({"params": params}, ids[:100])
    y2, s2 = apply({"params": params}, ids[100:], s1)
    _close((jnp.concatenate([y1, y2]), s2), (y_ids, s_ids), rtol=1e-4)

    def loss(scan, p):
        y, s = layer.clone(scan=scan).apply({"params": p}, ids)
        return jnp.sum(jnp.tanh(y)) + sum(jnp.sum(f) for f in jax.tree.leaves(s))

    for scan in ("associative", "sequential"):
        f = jax.jit(jax.value_and_grad(functools.partial(loss, scan)))
        if scan == "associative":
            first = f(params)
        else:
            _close(f(params), first, rtol=1e-4)


# --- recurrentgemma's RG-LRU, ported from google-deepmind/recurrentgemma,
# --- recurrentgemma/jax/layers.py (RGLRU.__call__, BlockDiagonalLinear.__call__,
# --- rnn_real_param_init) and recurrentgemma/jax/scan.py (the linear scan), batch-major.


def _rg_block_diagonal(x, w, b):
    n = w.shape[0]
    xb = x.reshape(x.shape[:-1] + (n, x.shape[-1] // n))  # "... (h i) -> ... h i"
    y = jnp.einsum("... h i, h i j -> ... h j", xb, w) + b
    return y.reshape(y.shape[:-2] + (-1,))


def _rg_rglru(params, x, segment_pos, h0):
    gate_x = jax.nn.sigmoid(_rg_block_diagonal(x, **params["input_gate"]))
    gate_a = jax.nn.sigmoid(_rg_block_diagonal(x, **params["a_gate"]))
    log_a = -8.0 * gate_a * jax.nn.softplus(params["a_param"])
    a, a_squared = jnp.exp(log_a), jnp.exp(2 * log_a)
    gated_x = x * gate_x
    reset = (segment_pos == 0).astype(a.dtype)
    multiplier = jnp.sqrt(1 - a_squared)
    multiplier = reset[..., None] + (1 - reset)[..., None] * multiplier
    normalized_x = gated_x * multiplier
    a = a * (1 - reset[..., None])
    h, ys = h0, []
    for t in range(x.shape[1]):  # scan.linear_scan: h_t = a_t * h_{t-1} + x_t
        h = a[:, t] * h + normalized_x[:, t]
        ys.append(h)
    return jnp.stack(ys, axis=1), h


def _rg_real_param_init(key, shape, min_rad=0.9, max_rad=0.999, eps=1e-8):
    unif = jax.random.uniform(key, shape=shape)
    a_real = 0.5 * jnp.log(unif * (max_rad**2 - min_rad**2) + min_rad**2 + eps)
    return jnp.log(jnp.exp(-a_real) - 1.0)


@pytest.mark.parametrize("scan", ["associative", "sequential"])
def test_rglru_equals_recurrentgemma(scan):
    B, T, H, heads = 2, 9, 8, 2
    rglru = RGLRU(H, heads, scan=scan)
    x = jax.random.normal(jax.random.key(0), (T, B, H))
    h0 = jax.random.normal(jax.random.key(1), (B, H))
    params = rglru.init(jax.random.key(2), h0, x)["params"]
    assert params["input_gate"]["w"].shape == (heads, H // heads, H // heads)
    ours = rglru.apply({"params": params}, h0, x)
    # Every step continues the sequence (segment_pos > 0): the state is carried in.
    theirs, last = _rg_rglru(params, jnp.swapaxes(x, 0, 1), jnp.ones((B, T), jnp.int32), h0)
    _close(ours, jnp.swapaxes(theirs, 0, 1), rtol=1e-5)
    _close(ours[-1], last, rtol=1e-5)
    # The initialisation: the same draws, and a = exp(-softplus(Lambda)) on [0.9, 0.999].
    key = jax.random.key(5)
    _close(ring_init()(key, (1000,)), _rg_real_param_init(key, (1000,)), rtol=1e-6)
    a = jnp.exp(-jax.nn.softplus(ring_init()(key, (1000,))))
    assert 0.9 <= float(a.min()) and float(a.max()) <= 0.999 and float(a.std()) > 0.02


def test_sqrt_gradient_is_bounded_as_recurrentgemma_bounds_it():
    g = jax.grad(lambda x: sqrt_bounded_grad(x, 1000.0))
    assert float(g(1e-12)) == pytest.approx(1000.0, rel=1e-4)  # not 5e5
    assert float(g(0.25)) == pytest.approx(1.0, rel=1e-6)


def _rg_conv1d(x, w, b):
    """recurrentgemma's `Conv1D.__call__` in training mode (no cache, one document)."""
    temporal_width, T = w.shape[0], x.shape[1]
    out = 0.0
    for shift in range(temporal_width):
        window = x[:, : T - shift]
        window = jnp.pad(window, ((0, 0), (shift, 0), (0, 0)))
        out = out + window * w[temporal_width - shift - 1][None, None, :]
    return out + b[None, None]


def test_conv1d_equals_recurrentgemma_and_carries_its_window():
    T, B, H = 7, 2, 6
    conv = Conv1D()
    x = jax.random.normal(jax.random.key(0), (T, B, H))
    cache = jnp.zeros((B, 3, H))
    params = conv.init(jax.random.key(1), cache, x)["params"]
    params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.key(3), p.shape), params)
    y, _ = conv.apply({"params": params}, cache, x)
    theirs = _rg_conv1d(jnp.swapaxes(x, 0, 1), params["w"], params["b"])
    _close(y, jnp.swapaxes(theirs, 0, 1), rtol=1e-5)
    y1, c1 = conv.apply({"params": params}, cache, x[:2])  # shorter than the window
    y2, _ = conv.apply({"params": params}, c1, x[2:])
    _close(jnp.concatenate([y1, y2]), y, rtol=1e-5)


def test_the_lru_trains_gamma_as_a_parameter_initialised_from_lambda():
    """The paper's reference: gamma is a parameter of its own (`gamma_log`), initialised to
    log sqrt(1 - |lambda|^2), with a gradient, and what the layer uses (not recomputed)."""
    layer = RNNLayer(cell="lru", num_hiddens=8)
    x = jax.random.normal(jax.random.key(0), (5, 2, 3))
    params = layer.init(jax.random.key(1), x)["params"]
    p = params["layer_0"]
    lam_abs = jnp.exp(-jnp.exp(p["nu_log"]))
    np.testing.assert_allclose(p["gamma_log"], 0.5 * jnp.log(1 - lam_abs**2), rtol=1e-5)

    def loss(params):
        return jnp.sum(layer.apply({"params": params}, x)[0] ** 2)

    grads = jax.grad(loss)(params)["layer_0"]
    assert float(jnp.abs(grads["gamma_log"]).max()) > 0
    # Moving gamma alone (lambda unchanged) changes the outputs: it is the layer's input scale.
    moved = jax.tree.map(lambda a: a, params)
    moved["layer_0"] = {**p, "gamma_log": p["gamma_log"] + 0.5}
    a, b = layer.apply({"params": params}, x)[0], layer.apply({"params": moved}, x)[0]
    assert float(jnp.abs(a - b).max()) > 1e-3
