"""Each matrix-state layer's own equations (the projections, the short convolution, the gates
with their scales, clamps and caps, Mamba-2's dt and D skip, the key and query
normalisation, rotary positions, the per-head norm, the output gate) against a float64 NumPy
reference built from the layer's parameters; and the float32 hazards: the mLSTM's normaliser
under a large input gate, every recurrence at T 4096 with extreme gates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_matrix_cells import (
    reference_delta_product,
    reference_gated_delta,
    reference_gla,
    reference_mlstm,
    reference_rwkv7,
)

from rnnlm_jax.nn import chunkwise
from rnnlm_jax.nn.matrix_cells import MATRIX_CELLS, MatrixLayer
from rnnlm_jax.nn.rwkv7 import RWKV7TimeMix

T, B, D, H, N = 9, 2, 5, 8, 2  # K = V = H / N = 4


def _silu(x):
    return x / (1.0 + np.exp(-x))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softplus(x):
    return np.log1p(np.exp(x))


def _heads(x):
    """[T, B, N d] -> [B, N, T, d]."""
    return x.reshape(x.shape[0], x.shape[1], N, -1).transpose(1, 2, 0, 3)


def _rotary(x, positions):
    """GPT-NeoX's rotary embedding of x [B, N, T, d] at positions [B, T], base 10,000."""
    half = x.shape[-1] // 2
    angles = positions[:, None, :, None] * 10000.0 ** (-np.arange(half) / half)
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * np.cos(angles) - x2 * np.sin(angles),
                           x2 * np.cos(angles) + x1 * np.sin(angles)], -1)  # fmt: skip


def _unit(x):
    return x / np.sqrt(np.sum(x * x, -1, keepdims=True) + 1e-6)


def reference_layer(cell, params, x, carry, n_h=2, cap=15.0, lower_bound=None):
    """The layer's output `[T, B, H]` and final matrix state, in float64, from the paper's
    and the layer's equations (matrix_cells' docstring)."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x = np.asarray(x, np.float64)
    K = V = H // N
    n = n_h if cell == "deltaproduct" else 1
    widths = {"q": N * K, "k": n * N * K, "v": n * N * V}
    widths |= {"gla": {"gate_low": 16, "z": N * V}, "mamba2": {"dt": N, "z": N * V},
               "gated_deltanet": {"beta": N, "a": N, "z": N * V},
               "deltanet": {"beta": N, "z": N * V},
               "deltaproduct": {"beta": n * N, "a": N, "z": N * V}, "retnet": {"z": N * V},
               "hgrn2": {},
               "mlstm": {"igate": N, "fgate": N, "og": N * V}}[cell]  # fmt: skip
    proj = x @ p["in_proj"]
    pieces = dict(zip(widths, np.split(proj, np.cumsum(list(widths.values()))[:-1], -1)))
    q, k, v = pieces["q"], pieces["k"], pieces["v"]
    if cell not in ("mlstm", "retnet", "hgrn2"):  # the causal depthwise convolution, then SiLU
        qkv = np.concatenate([q, k, v], -1)
        ext = np.concatenate([np.swapaxes(np.asarray(carry[1], np.float64), 0, 1), qkv])
        w, b = p["conv_1d"]["w"], p["conv_1d"]["b"]
        qkv = _silu(b + sum(ext[j : j + T] * w[j] for j in range(4)))
        q, k, v = np.split(qkv, np.cumsum([N * K, n * N * K]), -1)
    q, k, v = _heads(q), _heads(k), _heads(v)
    S0 = carry[0]
    per_head = lambda a: a.transpose(1, 2, 0)  # noqa: E731  [T, B, N] -> [B, N, T]
    if cell == "retnet":
        positions = np.asarray(carry[1])[:, None] + np.arange(T)
        q, k = _rotary(q, positions), _rotary(k, positions)
        g = np.broadcast_to(np.log(1 - 2.0 ** (-5.0 - np.arange(N)))[:, None], (B, N, T))
        o, S = reference_gla(q * K**-0.5, k, v, g, S0)
    elif cell == "hgrn2":  # HGRN2 (Qin et al. 2024): f >= the lower bound, its key 1 - f
        f = _sigmoid(pieces["k"])
        if lower_bound is not None:
            f = lower_bound + (1 - lower_bound) * f
        g = np.maximum(np.log(f), -4.0)
        o, S = reference_gla(_heads(_silu(pieces["q"])) * K**-0.5, _heads(1 - np.exp(g)), v,
                             _heads(g), S0)  # fmt: skip
    elif cell == "gla":
        g = np.log(_sigmoid(pieces["gate_low"] @ p["gate_up"] + p["gate_bias"])) / 16.0
        o, S = reference_gla(q * K**-0.5, k, v, _heads(np.maximum(g, -4.0)), S0)
    elif cell == "mlstm":
        capped = lambda a: cap * np.tanh(a / cap)  # noqa: E731
        log_i = per_head(capped(pieces["igate"] + p["igate_bias"]))
        log_f = np.log(_sigmoid(per_head(capped(pieces["fgate"] + p["fgate_bias"]))))
        o, S, _ = reference_mlstm(q, k * K**-0.5, v, log_i, log_f, S0, carry[1])
    else:
        g = np.zeros((B, N, T))
        if cell != "deltanet":
            raw = pieces["dt" if cell == "mamba2" else "a"]
            dt = per_head(_softplus(raw + p["dt_bias"]))
            g = -np.exp(p["A_log"])[:, None] * dt
        if cell == "mamba2":
            o, S = reference_gla(q, k, v * dt[..., None], g, S0)
            o = o + p["D"][:, None, None] * v
        else:
            q = _unit(q) * K**-0.5
            beta = per_head(_sigmoid(pieces["beta"]))
            if cell == "deltaproduct":
                beta = beta.reshape(B, N, n, T).transpose(0, 1, 3, 2)
                k, v = k.reshape(B, N, T, n, K), v.reshape(B, N, T, n, V)
                o, S = reference_delta_product(q, _unit(k), v, beta, g, S0)
            else:
                o, S = reference_gated_delta(q, _unit(k), v, beta, g, S0)
    o = o.transpose(2, 0, 1, 3)
    if cell == "hgrn2":  # one norm over every head, no output gate
        o = o.reshape(T, B, N * V)
    o = o / np.sqrt(np.mean(o * o, -1, keepdims=True) + 1e-6)
    o = o.reshape(T, B, N * V) * p["norm_scale"]
    if cell != "hgrn2":
        o = o * (_sigmoid(pieces["og"]) if cell == "mlstm" else _silu(pieces["z"]))
    return o @ p["out"], S


def _layer_case(cell, seed=0, **kw):
    layer = MatrixLayer(cell, H, num_heads=N, chunk_size=4, num_householder=2, **kw)
    ks = jax.random.split(jax.random.key(seed), 4)
    x = jax.random.normal(ks[0], (T, B, D))
    carry = layer_carry(cell, ks[1])
    params = layer.init(ks[2], carry, x)["params"]
    # Every parameter away from its initial value, so each one shows in the output.
    leaves, tree = jax.tree.flatten(params)
    noise = jax.random.split(ks[3], len(leaves))
    params = jax.tree.unflatten(tree, [a + 0.3 * jax.random.normal(r, a.shape)
                                       for a, r in zip(leaves, noise)])  # fmt: skip
    return layer, params, x, carry


def layer_carry(cell, key):
    """A carry away from zero: the state, and the conv window (or the mLSTM's normaliser
    and stabiliser at 0; RetNet's position at 5 and 11)."""
    K = V = H // N
    ks = jax.random.split(key, 2)
    S = 0.5 * jax.random.normal(ks[0], (B, N, K, V))
    if cell == "mlstm":
        return S, 0.3 * jnp.ones((B, N, K)), jnp.zeros((B, N))
    if cell == "retnet":
        return S, jnp.array([5, 11], jnp.int32)
    if cell == "hgrn2":
        return (S,)
    n = 2 if cell == "deltaproduct" else 1
    return S, 0.5 * jax.random.normal(ks[1], (B, 3, N * (K + n * (K + V))))


@pytest.mark.parametrize("cell", [c for c in MATRIX_CELLS if c != "rwkv7"])
@pytest.mark.parametrize("form", ["recurrent", "chunkwise"])
def test_the_layer_computes_its_equations(cell, form):
    layer, params, x, carry = _layer_case(cell, form=form)
    (state, *_), y = layer.apply({"params": params}, carry, x)
    want_y, want_state = reference_layer(cell, params, x, carry)
    rel = lambda a, b: np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b))  # noqa: E731
    assert rel(y, want_y) < 1e-5, cell
    if cell == "mlstm":  # the stabilised state times exp(m) is the unstabilised one
        m = np.asarray(layer.apply({"params": params}, carry, x)[0][2], np.float64)
        state = np.asarray(state, np.float64) * np.exp(m)[..., None, None]
    assert rel(state, want_state) < 1e-5, cell


def reference_rwkv7_layer(params, x, carry):
    """RWKV-7's time mix (`rwkv7`'s docstring; fla's `RWKV7Attention`) in float64."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x = np.asarray(x, np.float64)
    S0, x_last = (np.asarray(c, np.float64) for c in carry)
    K = H // N
    xx = np.concatenate([x_last[None], x[:-1]]) - x
    xr, xw, xk, xv, xa, xg = (x + xx * p["mix"][i] for i in range(6))

    def lora(z, q, act=lambda a: a):
        return act(z @ q["A"]) @ q["B"] + q.get("b", 0.0)

    r, k, v = xr @ p["r_proj"], xk @ p["k_proj"], xv @ p["v_proj"]
    log_w = -np.exp(-0.5) * _sigmoid(lora(xw, p["w_lora"], np.tanh))
    a = _sigmoid(lora(xa, p["a_lora"]))
    g = lora(xg, p["g_lora"], _sigmoid)
    kk = _heads(k * p["k_k"])
    kk = kk / np.sqrt(np.sum(kk * kk, -1, keepdims=True) + 1e-12)
    k = k * (1 + (a - 1) * p["k_a"])
    r, k, v, a = _heads(r), _heads(k), _heads(v), _heads(a)
    o, S = reference_rwkv7(r, np.exp(_heads(log_w)), k, v, kk, a, S0)
    o = (o - o.mean(-1, keepdims=True)) / np.sqrt(o.var(-1, keepdims=True) + K * 1e-5)
    o = o * p["norm_scale"] + p["norm_bias"]
    o = o + np.sum(r * k * p["r_k"][:, None], -1, keepdims=True) * v
    o = o.transpose(2, 0, 1, 3).reshape(T, B, H) * g
    return o @ p["o_proj"], S


@pytest.mark.parametrize("form", ["recurrent", "chunkwise"])
def test_the_rwkv7_time_mix_computes_its_equations(form):
    layer = RWKV7TimeMix(H, N, form, 4)
    ks = jax.random.split(jax.random.key(0), 4)
    x = jax.random.normal(ks[0], (T, B, H))
    carry = (
        0.5 * jax.random.normal(ks[1], (B, N, H // N, H // N)),
        jax.random.normal(ks[2], (B, H)),
    )
    params = layer.init(ks[3], carry, x)["params"]
    leaves, tree = jax.tree.flatten(params)
    noise = jax.random.split(jax.random.key(9), len(leaves))
    params = jax.tree.unflatten(tree, [a + 0.3 * jax.random.normal(r, a.shape)
                                       for a, r in zip(leaves, noise)])  # fmt: skip
    (S, x_last), y = layer.apply({"params": params}, carry, x)
    want_y, want_S = reference_rwkv7_layer(params, x, carry)
    assert np.max(np.abs(np.asarray(y) - want_y)) / np.max(np.abs(want_y)) < 1e-5
    assert np.max(np.abs(np.asarray(S) - want_S)) / np.max(np.abs(want_S)) < 1e-5
    np.testing.assert_array_equal(x_last, x[-1])


def test_hgrn2_forget_gates_keep_to_the_lower_bound_given():
    layer, params, x, carry = _layer_case("hgrn2")
    bound = jnp.linspace(0.1, 0.9, H // N * N)
    (state,), y = layer.apply({"params": params}, carry, x, None, bound)
    want_y, want_state = reference_layer("hgrn2", params, x, carry, lower_bound=np.asarray(bound))
    assert np.max(np.abs(np.asarray(y) - want_y)) / np.max(np.abs(want_y)) < 1e-5
    assert np.max(np.abs(np.asarray(state) - want_state)) / np.max(np.abs(want_state)) < 1e-5
    free = layer.apply({"params": params}, carry, x)[1]
    assert np.max(np.abs(np.asarray(free) - np.asarray(y))) > 1e-3  # the bound matters


def test_hgrn2s_bounds_rise_with_depth_from_zero():
    from rnnlm_jax.nn.layer import hgrn2_lower_bounds

    logits = jax.random.normal(jax.random.key(0), (4, 6))
    bounds = np.asarray(hgrn2_lower_bounds(logits))
    assert np.all(bounds[0] == 0) and np.all(np.diff(bounds, axis=0) > 0) and np.all(bounds < 1)
    p = np.exp(logits) / np.exp(logits).sum(0)
    np.testing.assert_allclose(bounds, np.cumsum(p, 0) - p[0], atol=1e-6)


def test_the_mlstm_gates_are_soft_capped_as_xlstm_7b():
    """At 15 by default; a pre-activation far past it changes nothing past the cap."""
    layer, params, x, carry = _layer_case("mlstm")
    big = dict(params, igate_bias=params["igate_bias"] + 1e4, fgate_bias=params["fgate_bias"] + 1e4)
    y = layer.apply({"params": big}, carry, x)[1]
    assert np.all(np.isfinite(np.asarray(y)))
    want, _ = reference_layer("mlstm", big, x, carry)
    assert np.max(np.abs(np.asarray(y) - want)) / np.max(np.abs(want)) < 1e-5
    uncapped = MatrixLayer("mlstm", H, num_heads=N, gate_soft_cap=0.0)
    want, _ = reference_layer("mlstm", params, x, carry, cap=1e12)
    y = uncapped.apply({"params": params}, carry, x)[1]
    assert np.max(np.abs(np.asarray(y) - want)) / np.max(np.abs(want)) < 1e-5


@pytest.mark.parametrize("form", ["recurrent", "chunkwise", "parallel"])
def test_the_mlstm_reads_zero_not_nan_under_a_large_input_gate(form):
    """log i >= 88: exp(-m) underflows in float32; a zero query must read 0 (xLSTM's
    normaliser has an epsilon), not 0 / 0."""
    ks = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(ks[0], (1, 2, 12, 4)).at[:, :, 5].set(0.0)
    k = jax.random.normal(ks[1], (1, 2, 12, 4))
    v = jax.random.normal(ks[2], (1, 2, 12, 4))
    log_i = jnp.full((1, 2, 12), 95.0)
    log_f = jnp.full((1, 2, 12), -0.1)
    state = (jnp.zeros((1, 2, 4, 4)), jnp.zeros((1, 2, 4)), jnp.zeros((1, 2)))
    h, _ = chunkwise.mlstm(q, k, v, log_i, log_f, state, form, 4)
    h = np.asarray(h)
    assert np.all(np.isfinite(h)), form
    assert np.all(h[:, :, 5] == 0.0)
    assert np.any(h[:, :, 6] != 0.0)


def test_the_decays_start_as_their_references():
    """Mamba-2's A from [1, 16]; flash-linear-attention's Gated DeltaNet's from (0, 16)."""
    x = jnp.zeros((2, 1, 4))
    for cell, low in [("mamba2", 1.0), ("gated_deltanet", 0.0), ("deltaproduct", 0.0)]:
        layer = MatrixLayer(cell, 512, num_heads=512, key_dim=1, value_dim=1, num_householder=2)
        carry = jax.tree.map(lambda s: s[0], layer_state(cell, 512))
        A = np.exp(np.asarray(jax.jit(layer.init)(jax.random.key(0), carry, x)["params"]["A_log"]))
        assert A.min() > low and A.max() < 16.0, cell
        assert A.min() < low + 0.1 and A.max() > 15.9, cell  # the whole interval drawn


def layer_state(cell, num_heads):
    from rnnlm_jax.nn.matrix_cells import matrix_state

    return matrix_state(cell, (1, 1), num_heads, 1, 1, 2)


# --- float32 at T 4096 with extreme gates, against float64 --------------------------------

LONG = 4096


def _extreme(seed):
    """Inputs of one head at T 4096 whose decays run from near 0 to near 1 in stretches,
    GLA's at its clamp's edge (-4) and at -1e-4."""
    ks = jax.random.split(jax.random.key(seed), 6)
    q, k, v = (jax.random.normal(r, (1, 1, LONG, 4)) for r in ks[:3])
    k_unit = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    stretch = (jnp.arange(LONG) // 256) % 3  # near 1, near 0, mixed
    g = jnp.where(stretch == 0, -1e-4, jnp.where(stretch == 1, -4.0, -jax.nn.softplus(
        3 * jax.random.normal(ks[3], (LONG,)))))  # fmt: skip
    g_head = jnp.maximum(g, -4.0)[None, None]
    g_key = jnp.maximum(g_head[..., None] * jnp.linspace(0.5, 1.0, 4), -4.0)
    beta = jax.nn.sigmoid(jax.random.normal(ks[4], (1, 1, LONG)))
    S0 = jax.random.normal(ks[5], (1, 1, 4, 4))
    return q, k, k_unit, v, g_head, g_key, beta, S0


@pytest.mark.parametrize("name", ["gla", "mamba2", "gated_deltanet", "deltanet", "mlstm"])
def test_float32_at_4096_steps_with_extreme_gates_stays_near_float64(name):
    q, k, k_unit, v, g_head, g_key, beta, S0 = _extreme(7)
    zero = jnp.zeros_like(g_head)
    if name == "mlstm":
        log_i = 3.0 * g_head + 2.0
        state = (S0, jnp.ones((1, 1, 4)), jnp.zeros((1, 1)))
        run = lambda f: chunkwise.mlstm(q, k / 2, v, log_i, g_head, state, f)  # noqa: E731
        want, *_ = reference_mlstm(q, k / 2, v, log_i, g_head, S0, state[1])
    elif name in ("gated_deltanet", "deltanet"):
        g = g_head if name == "gated_deltanet" else zero
        run = lambda f: chunkwise.gated_delta(q, k_unit, v, beta, g, S0, f, 32)  # noqa: E731
        want, _ = reference_gated_delta(q, k_unit, v, beta, g, S0)
    else:
        g = g_key if name == "gla" else g_head
        run = lambda f: chunkwise.linear_attention(q, k, v, g, S0, f, 32)  # noqa: E731
        want, _ = reference_gla(q, k, v, g, S0)
    scale = np.max(np.abs(want))
    for form in ("recurrent", "chunkwise"):
        got = np.asarray(jax.jit(run, static_argnums=0)(form)[0], np.float64)
        assert np.all(np.isfinite(got)), (name, form)
        assert np.max(np.abs(got - want)) / scale < 1e-4, (name, form)
