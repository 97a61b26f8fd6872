"""The matrix-state recurrences (mLSTM, GLA, Mamba-2, Gated DeltaNet, DeltaNet, DeltaProduct,
RetNet, HGRN2): every form against a
step-by-step reference written from the papers' equations, the forms against each other in
values and gradients, and the layer's contract (carried state, `seq_lengths`, layouts,
generation token by token, bad input)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_robustness import assert_one_error
from test_sweeps import run_main

from rnnlm_jax.config import checks, fields
from rnnlm_jax.config.checks import ConfigError
from rnnlm_jax.nn import chunkwise, models
from rnnlm_jax.nn.layer import RNNLayer
from rnnlm_jax.nn.matrix_cells import MATRIX_CELLS, retention_log_decays
from rnnlm_jax.nn.models import RNNModel

B, N, T, K, V = 2, 2, 19, 4, 3  # T 19: chunks of 8 leave a padded last chunk
SMOKE = "--config=configs/timemachine.py:smoke"  # the book's text ships in the package


def _inputs(seed=0):
    ks = jax.random.split(jax.random.key(seed), 8)
    q = jax.random.normal(ks[0], (B, N, T, K))
    k = jax.random.normal(ks[1], (B, N, T, K))
    v = jax.random.normal(ks[2], (B, N, T, V))
    g_head = -jax.nn.softplus(jax.random.normal(ks[3], (B, N, T)))
    g_key = jnp.maximum(-jax.nn.softplus(2 * jax.random.normal(ks[4], (B, N, T, K))), -4.0)
    beta = jax.nn.sigmoid(jax.random.normal(ks[5], (B, N, T)))
    S0 = 0.5 * jax.random.normal(ks[6], (B, N, K, V))
    log_i = 2.0 * jax.random.normal(ks[7], (B, N, T))
    return q, k, v, g_head, g_key, beta, S0, log_i


# --- the papers' equations, one step at a time, in float64 NumPy ----------------------------


def reference_gla(q, k, v, g, S):
    """GLA (Yang et al. 2024, eq. 3): S_t = diag(alpha_t) S_{t-1} + k_t^T v_t, o_t = q_t S_t."""
    q, k, v, g, S = (np.asarray(a, np.float64) for a in (q, k, v, g, S))
    alpha = np.exp(g if g.ndim == 4 else g[..., None])
    out = []
    for t in range(q.shape[2]):
        S = alpha[:, :, t, :, None] * S + k[:, :, t, :, None] * v[:, :, t, None, :]
        out.append(np.einsum("bnk,bnkv->bnv", q[:, :, t], S))
    return np.stack(out, 2), S


def reference_gated_delta(q, k, v, beta, g, S):
    """Gated DeltaNet (Yang et al. 2025, eq. 10), S of shape [V, K]:
    S_t = S_{t-1} (alpha_t (I - beta_t k_t k_t^T)) + beta_t v_t k_t^T, o_t = S_t q_t."""
    q, k, v, beta, g = (np.asarray(a, np.float64) for a in (q, k, v, beta, g))
    S = np.swapaxes(np.asarray(S, np.float64), -1, -2)  # [B, N, V, K]
    out = []
    eye = np.eye(q.shape[-1])
    for t in range(q.shape[2]):
        kt, bt, at = k[:, :, t], beta[:, :, t, None, None], np.exp(g[:, :, t])[..., None, None]
        S = S @ (at * (eye - bt * kt[..., :, None] * kt[..., None, :]))
        S = S + bt * v[:, :, t, :, None] * kt[..., None, :]
        out.append(np.einsum("bnvk,bnk->bnv", S, q[:, :, t]))
    return np.stack(out, 2), np.swapaxes(S, -1, -2)


def reference_delta_product(q, k, v, beta, g, S):
    """Gated DeltaProduct (Siems et al. 2025, eq. 5), S of shape [K, V]: per token, a decay,
    then n_h generalised Householder products, H_j = I - beta_j k_j k_j^T,
    S <- H_j S + beta_j k_j v_j^T; o_t = S_t^T q_t."""
    q, k, v, beta, g, S = (np.asarray(a, np.float64) for a in (q, k, v, beta, g, S))
    eye = np.eye(q.shape[-1])
    out = []
    for t in range(q.shape[2]):
        S = np.exp(g[:, :, t])[..., None, None] * S
        for j in range(k.shape[3]):
            kj, bj = k[:, :, t, j], beta[:, :, t, j, None, None]
            S = (eye - bj * kj[..., :, None] * kj[..., None, :]) @ S
            S = S + bj * kj[..., :, None] * v[:, :, t, j, None, :]
        out.append(np.einsum("bnk,bnkv->bnv", q[:, :, t], S))
    return np.stack(out, 2), S


def reference_rwkv7(r, w, k, v, kk, a, S):
    """RWKV-7 (Peng et al. 2025, eq. 17), S of shape [V, K]:
    S_t = S_{t-1} (diag(w_t) - kk_t^T (a_t kk_t)) + v_t^T k_t, o_t = S_t r_t."""
    r, w, k, v, kk, a = (np.asarray(x, np.float64) for x in (r, w, k, v, kk, a))
    S = np.swapaxes(np.asarray(S, np.float64), -1, -2)  # [B, N, V, K]
    out = []
    for t in range(r.shape[2]):
        kk_t = kk[:, :, t]
        transition = (np.eye(r.shape[-1]) * w[:, :, t, None, :]
                      - kk_t[..., :, None] * (a[:, :, t] * kk_t)[..., None, :])  # fmt: skip
        S = S @ transition + v[:, :, t, :, None] * k[:, :, t, None, :]
        out.append(np.einsum("bnvk,bnk->bnv", S, r[:, :, t]))
    return np.stack(out, 2), np.swapaxes(S, -1, -2)


def reference_mlstm(q, k, v, log_i, log_f, C, n):
    """mLSTM (Beck et al. 2024, eqs. 19-27) without the stabiliser, which leaves h as it is:
    C_t = f_t C_{t-1} + i_t v_t k_t^T, n_t = f_t n_{t-1} + i_t k_t,
    h_t = C_t q_t / max(|n_t^T q_t|, 1); C kept as [K, V]."""
    q, k, v, log_i, log_f, C, n = (np.asarray(a, np.float64)
                                   for a in (q, k, v, log_i, log_f, C, n))  # fmt: skip
    f, i = np.exp(log_f)[..., None], np.exp(log_i)[..., None]
    out = []
    for t in range(q.shape[2]):
        C = f[:, :, t, :, None] * C + (i[:, :, t] * k[:, :, t])[..., None] * v[:, :, t, None, :]
        n = f[:, :, t] * n + i[:, :, t] * k[:, :, t]
        num = np.einsum("bnk,bnkv->bnv", q[:, :, t], C)
        den = np.abs(np.einsum("bnk,bnk->bn", q[:, :, t], n))[..., None]
        out.append(num / np.maximum(den, 1.0))
    return np.stack(out, 2), C, n


def _cases():
    """Each recurrence as `f(form, chunk) -> (outputs, state)`, and its reference."""
    q, k, v, g_head, g_key, beta, S0, log_i = _inputs()
    k_unit = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    log_f = jax.nn.log_sigmoid(g_head + 3.0)
    m0 = jnp.zeros((B, N))
    n0 = 0.3 * jnp.ones((B, N, K))
    zero = jnp.zeros_like(g_head)
    # DeltaProduct's two keys, values and betas per token (the second from other draws).
    k2 = jnp.stack([k_unit, jnp.roll(k_unit, 1, axis=2)], axis=3)
    v2 = jnp.stack([v, 0.5 * jnp.roll(v, 3, axis=2)], axis=3)
    beta2 = jnp.stack([beta, jnp.roll(beta, 2, axis=2)], axis=3)
    retention = jnp.broadcast_to(retention_log_decays(N)[:, None], g_head.shape)
    a_key = jax.nn.sigmoid(g_key + 2.0)
    return {
        "gla": (lambda f, c: chunkwise.linear_attention(q, k, v, g_key, S0, f, c),
                lambda: reference_gla(q, k, v, g_key, S0)),
        "mamba2": (lambda f, c: chunkwise.linear_attention(q, k, v, g_head, S0, f, c),
                   lambda: reference_gla(q, k, v, g_head, S0)),
        "gated_deltanet": (
            lambda f, c: chunkwise.gated_delta(q, k_unit, v, beta, g_head, S0, f, c),
            lambda: reference_gated_delta(q, k_unit, v, beta, g_head, S0)),
        "mlstm": (lambda f, c: chunkwise.mlstm(q, k, v, log_i, log_f, (S0, n0, m0), f, c),
                  lambda: reference_mlstm(q, k, v, log_i, log_f, S0, n0)),
        "deltanet": (lambda f, c: chunkwise.gated_delta(q, k_unit, v, beta, zero, S0, f, c),
                     lambda: reference_gated_delta(q, k_unit, v, beta, zero, S0)),
        "deltaproduct": (
            lambda f, c: chunkwise.delta_product(q, k2, v2, beta2, g_head, S0, f, c),
            lambda: reference_delta_product(q, k2, v2, beta2, g_head, S0)),
        "retnet": (lambda f, c: chunkwise.linear_attention(q, k, v, retention, S0, f, c),
                   lambda: reference_gla(q, k, v, retention, S0)),
        # RWKV-7: the decay per key dimension, kk of unit length, a in (0, 1)
        "rwkv7": (lambda f, c: chunkwise.dplr(q, k, v, -k_unit, k_unit * a_key, g_key, S0, f, c),
                  lambda: reference_rwkv7(q, np.exp(g_key), k, v, k_unit, a_key, S0)),
        # HGRN2: GLA whose key is 1 - its forget gate
        "hgrn2": (lambda f, c: chunkwise.linear_attention(q, -jnp.expm1(g_key), v, g_key, S0, f, c),
                  lambda: reference_gla(q, -np.expm1(g_key), v, g_key, S0)),
    }  # fmt: skip


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)


@pytest.mark.parametrize("name", MATRIX_CELLS)
def test_every_form_equals_the_papers_equations(name):
    run, reference = _cases()[name]
    expected = reference()
    run = jax.jit(run, static_argnums=(0, 1))
    for form, chunk in [("recurrent", 8), ("chunkwise", 8), ("chunkwise", 4), ("parallel", 8)]:
        out, state = run(form, chunk)
        assert _rel(out, expected[0]) < 1e-4, (form, chunk)
        if name == "mlstm":  # the stabilised state times exp(m) is the paper's
            C, n, m = state
            scale = np.exp(np.asarray(m, np.float64))
            assert _rel(np.asarray(C) * scale[..., None, None], expected[1]) < 1e-4
            assert _rel(np.asarray(n) * scale[..., None], expected[2]) < 1e-4
        else:
            assert _rel(state, expected[1]) < 1e-4, (form, chunk)


def test_the_chunk_forms_have_the_recurrent_forms_gradients():
    """d(loss)/d(q, k, v, every gate, the initial state) through each form."""
    q, k, v, g_head, g_key, beta, S0, log_i = _inputs(1)
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    state = (S0, 0.3 * jnp.ones((B, N, K)), jnp.zeros((B, N)))
    fns = {
        "gla": lambda f, q, k, v, g, S: chunkwise.linear_attention(q, k, v, g, S, f, 8),
        "mamba2": lambda f, q, k, v, g, S: chunkwise.linear_attention(q, k, v, g, S, f, 8),
        "gated_deltanet": lambda f, q, k, v, g, S: chunkwise.gated_delta(
            q, k, v, beta, g, S, f, 8),
        "mlstm": lambda f, q, k, v, g, S: chunkwise.mlstm(
            q, k, v, log_i, jax.nn.log_sigmoid(g + 3.0), (S, *state[1:]), f, 8),
        "deltanet": lambda f, q, k, v, g, S: chunkwise.gated_delta(
            q, k, v, beta * jnp.exp(g), 0.0 * g, S, f, 8),
        "deltaproduct": lambda f, q, k, v, g, S: chunkwise.delta_product(
            q, jnp.stack([k, k[:, :, ::-1]], 3), jnp.stack([v, v[:, :, ::-1]], 3),
            jnp.stack([beta, beta[:, :, ::-1]], 3), g, S, f, 4),
    }  # fmt: skip
    weights = jax.random.normal(jax.random.key(2), (B, N, T, V))
    for name, fn in fns.items():
        g = g_key if name == "gla" else g_head

        def loss(form, *args, fn=fn):
            out, final = fn(form, *args)
            return jnp.sum(out * weights) + jnp.sum(jax.tree.leaves(final)[0] ** 2)

        grad = jax.jit(jax.grad(loss, argnums=(1, 2, 3, 4, 5)), static_argnums=0)
        grads = {form: grad(form, q, k, v, g, S0)
                 for form in ("recurrent", "chunkwise", "parallel")}  # fmt: skip
        for form in ("chunkwise", "parallel"):
            for got, want in zip(grads[form], grads["recurrent"]):
                assert _rel(got, want) < 1e-4, (name, form)


def test_the_chunked_scan_equals_the_sequential_one_with_its_gradients():
    from rnnlm_jax.nn.linear_scan import chunked_scan, linear_scan

    ks = jax.random.split(jax.random.key(3), 3)
    a = jax.nn.sigmoid(jax.random.normal(ks[0], (37, 3, 5)))
    b = jax.random.normal(ks[1], (37, 3, 5))
    h0 = jax.random.normal(ks[2], (3, 5))
    for fn in (lambda *x: linear_scan(*x, scan="chunked"), lambda *x: chunked_scan(*x, chunk=8)):
        assert _rel(fn(a, b, h0), linear_scan(a, b, h0, "sequential")) < 1e-5
        got = jax.grad(lambda *x, fn=fn: jnp.sum(fn(*x) ** 2), argnums=(0, 1, 2))(a, b, h0)
        want = jax.grad(lambda *x: jnp.sum(linear_scan(*x, "sequential") ** 2),
                        argnums=(0, 1, 2))(a, b, h0)  # fmt: skip
        for x, y in zip(got, want):
            assert _rel(x, y) < 1e-5


# --- the layer ----------------------------------------------------------------------------


def _layer(cell, **kw):
    return RNNLayer(cell=cell, num_hiddens=8, num_heads=2, chunk_size=4, **kw)


@pytest.mark.parametrize("cell", MATRIX_CELLS)
def test_the_layer_in_every_form_has_one_result_and_one_gradient(cell):
    x = jax.random.normal(jax.random.key(0), (11, 2, 8))  # width H: rwkv7 shifts its inputs
    layer = _layer(cell)
    state = jax.tree.map(lambda s: s + 0.1, layer.begin_state(2))
    params = layer.init(jax.random.key(1), x, state)

    def loss(form, params, x, state):
        out, final = _layer(cell, form=form).apply(params, x, state)
        return jnp.sum(out**2) + sum(jnp.sum(s) for s in jax.tree.leaves(final))

    grad = jax.jit(jax.value_and_grad(loss, argnums=(1, 2, 3)), static_argnums=0)
    value, want = grad("recurrent", params, x, state)
    for form in ("chunkwise", "parallel"):
        got_value, got = grad(form, params, x, state)
        assert abs(got_value / value - 1) < 1e-5
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            assert _rel(a, b) < 1e-4, (cell, form)


@pytest.mark.parametrize("cell", MATRIX_CELLS)
def test_state_carried_lengths_and_layouts(cell):
    x = jax.random.normal(jax.random.key(4), (12, 3, 8))
    layer = _layer(cell)
    params = layer.init(jax.random.key(5), x)
    apply = jax.jit(layer.apply)
    whole, final = apply(params, x)
    # Carried across two minibatches: the same outputs and final state.
    first, mid = apply(params, x[:7])
    second, end = apply(params, x[7:], mid)
    assert _rel(jnp.concatenate([first, second]), whole) < 1e-5
    for a, b in zip(jax.tree.leaves(end), jax.tree.leaves(final)):
        assert _rel(a, b) < 1e-5
    # seq_lengths: zeros past each end, the state at each end, as the truncated sequence,
    # from a state that is not zeros (length 0 must keep it, not reset it).
    init = jax.tree.map(lambda s: s + (3 if s.dtype == jnp.int32 else 0.25), layer.begin_state(3))
    lengths = jnp.array([12, 5, 0])
    out, state = apply(params, x, init, seq_lengths=lengths)
    assert not np.any(np.asarray(out[5:, 1])) and not np.any(np.asarray(out[:, 2]))
    short, short_state = apply(params, x[:5, 1:2], jax.tree.map(lambda s: s[:, 1:2], init))
    assert _rel(out[:5, 1], short[:, 0]) < 1e-5
    for a, b, start in zip(jax.tree.leaves(state), jax.tree.leaves(short_state),
                           jax.tree.leaves(init)):  # fmt: skip
        assert _rel(a[:, 1], b[:, 0]) < 1e-5
        assert np.array_equal(a[:, 2], start[:, 2])  # length 0 keeps the initial state
    # Batch-major layout: the same, transposed.
    bm = _layer(cell, time_major=False).apply(params, jnp.swapaxes(x, 0, 1))[0]
    assert _rel(jnp.swapaxes(bm, 0, 1), whole) < 1e-6


@pytest.mark.parametrize(
    "cell, block", [(c, "residual") for c in MATRIX_CELLS] + [("mlstm", "xlstm")]
)
def test_generation_token_by_token_equals_the_training_forward_pass(cell, block):
    model = RNNModel(11, cell=cell, block=block, num_hiddens=8, num_layers=2, num_heads=2,
                     chunk_size=4)  # fmt: skip
    tokens = jax.random.randint(jax.random.key(6), (2, 9), 0, 11)
    params = model.init(jax.random.key(7), tokens, model.begin_state(2))
    apply = jax.jit(model.apply)
    logits, final = apply(params, tokens, model.begin_state(2))
    state, steps = model.begin_state(2), []
    for t in range(9):  # one step: the recurrent form, the conv window carried
        step, state = apply(params, tokens[:, t : t + 1], state)
        steps.append(step)
    by_step = jnp.stack(steps).reshape(-1, 11)  # time-major rows, as the model's logits
    assert _rel(by_step, logits) < 1e-5
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(final)):
        assert _rel(a, b) < 1e-5


# --- xLSTM's mLSTM block ------------------------------------------------------------------


def _xlstm_reference(p, x, num_heads):
    """xLSTM's mLSTM block (appendix B of the paper) step by step in float64 NumPy, the
    mLSTM unstabilised (`C_t = f C + i k v^T`, `h = C^T q / max(|n^T q|, 1)`), from zeros:
    the block's output and the mLSTM's final `(C, n)`."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    r = p["recurrence"]
    x = np.asarray(x, np.float64)
    T, Bx, H = x.shape
    inner = 2 * H
    Nh, Kh = num_heads, inner // num_heads
    silu = lambda a: a / (1 + np.exp(-a))  # noqa: E731
    xn = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    x_m, z = np.split((xn * p["norm"]["scale"]) @ r["up"], 2, axis=-1)
    padded = np.concatenate([np.zeros((3, Bx, inner)), x_m])
    c = silu(r["conv_1d"]["b"] + sum(padded[j : j + T] * r["conv_1d"]["w"][j] for j in range(4)))

    def headwise(a, w):  # blocks of 4: a[..., g, i] w[g, i, o]
        return np.einsum("...gi,gio->...go", a.reshape(a.shape[:-1] + (-1, 4)), w).reshape(a.shape)

    q, k, v = (
        headwise(c, r["q"]["kernel"]),
        headwise(c, r["k"]["kernel"]),
        headwise(x_m, r["v"]["kernel"]),
    )
    gates = np.concatenate([q, k, v], -1) @ r["gates"] + np.concatenate(
        [r["igate_bias"], r["fgate_bias"]]
    )
    i_gate, f_gate = np.exp(gates[..., :Nh]), 1 / (1 + np.exp(-gates[..., Nh:]))
    heads = lambda a: a.reshape(T, Bx, Nh, Kh)  # noqa: E731
    q, k, v = heads(q), heads(k) / np.sqrt(Kh), heads(v)
    C, n, out = np.zeros((Bx, Nh, Kh, Kh)), np.zeros((Bx, Nh, Kh)), []
    for t in range(T):
        C = f_gate[t][..., None, None] * C + i_gate[t][..., None, None] * np.einsum(
            "bnk,bnv->bnkv", k[t], v[t]
        )
        n = f_gate[t][..., None] * n + i_gate[t][..., None] * k[t]
        num = np.einsum("bnk,bnkv->bnv", q[t], C)
        out.append(num / np.maximum(np.abs(np.einsum("bnk,bnk->bn", q[t], n)), 1.0)[..., None])
    h = np.stack(out)  # [T, B, N, K]
    h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5)
    h = h.reshape(T, Bx, inner) * r["head_norm"]["scale"]
    return x + ((h + r["skip"] * c) * silu(z)) @ r["down"], C, n


def test_the_xlstm_block_in_every_form_equals_its_equations_and_gradients():
    from rnnlm_jax.nn.blocks import ResidualBlock, block_state

    x = jax.random.normal(jax.random.key(20), (T, B, 8))
    state = jax.tree.map(lambda s: s[0], block_state("mlstm", 1, B, 8, "xlstm", num_heads=2))

    def block(form):
        return ResidualBlock("mlstm", 0, 0.0, {"num_heads": 2, "form": form, "chunk_size": 4},
                             kind="xlstm")  # fmt: skip

    params = block("recurrent").init(jax.random.key(21), x, state)
    # The gates' weights start at zero (xLSTM's): give every parameter a random part.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(22), len(leaves))
    params = tree.unflatten([a + 0.3 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)])
    expected, C_want, n_want = _xlstm_reference(params["params"], x, num_heads=2)

    def loss(params, x, form):
        y, final = block(form).apply(params, x, state)
        return jnp.sum(y**2) + sum(jnp.sum(s**2) for s in jax.tree.leaves(final)), (y, final)

    want = None
    for form in ("recurrent", "chunkwise", "parallel"):
        grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True), static_argnums=2)
        (_, (y, final)), grads = grad(params, x, form)
        assert _rel(y, expected) < 1e-4, form
        # The mLSTM's own state, before the head norm that would hide a scale of k or q:
        # the stabilised (C, n) times exp(m) is the unstabilised one.
        (C, n, m), _ = final
        scale = np.exp(np.asarray(m, np.float64))
        assert _rel(np.asarray(C) * scale[..., None, None], C_want) < 1e-5, form
        assert _rel(np.asarray(n) * scale[..., None], n_want) < 1e-5, form
        if want is None:
            want = grads
        # Per leaf, relative to its largest entry, or to 1% of the largest gradient where
        # a leaf is far smaller (the input gate's bias: float32 sums that nearly cancel).
        floor = 1e-2 * max(float(jnp.max(jnp.abs(b))) for b in jax.tree.leaves(want))
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(want)):
            scale = max(float(jnp.max(jnp.abs(b))), floor)
            assert float(jnp.max(jnp.abs(a - b))) / scale < 1e-4, form


def test_the_xlstm_block_trains_from_main(tmp_path):
    r = run_main(SMOKE, "--config.cell=mlstm", "--config.block=xlstm", "--config.num_heads=4",
                 "--config.num_epochs=1", f"--workdir={tmp_path / 'w'}")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "perplexity" in r.stdout + r.stderr


@pytest.mark.parametrize(
    "changes, words",
    [({"cell": "gla"}, ("block='xlstm'", "mlstm")), ({"key_dim": 4}, ("key_dim",)),
     ({"num_heads": 5}, ("num_heads=5", "inner width"))],
)  # fmt: skip
def test_bad_xlstm_blocks_are_refused_naming_the_field(changes, words):
    config = fields.defaults()
    config.update({"cell": "mlstm", "block": "xlstm", "num_hiddens": 32, **changes})
    with pytest.raises(ConfigError) as e:
        checks.validate(config)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_the_shakespeare_variants_of_the_block_and_of_nanogpts_time():
    from configs import shakespeare

    config = checks.validate(shakespeare.get_config("xlstm"))
    assert (config.cell, config.block) == ("mlstm", "xlstm")
    config = checks.validate(shakespeare.get_config("nanobest"))
    assert (config.cell, config.mlp_expansion, config.num_hiddens) == ("mingru", 1, 256)
    assert config.state_reset == 0.1 and config.train_steps == shakespeare.NANOBEST_STEPS
    assert config.conv_width == 4
    for variant in ("gla,nanobest", "xlstm,nanotime", "xlstm,nanobest"):
        with pytest.raises(ValueError, match="nanobest|nanotime"):
            shakespeare.get_config(variant)


def test_mlstm_in_bfloat16_keeps_its_recurrence_in_float32():
    x = jax.random.normal(jax.random.key(8), (40, 2, 8))
    layer = _layer("mlstm", dtype=jnp.bfloat16)
    params = layer.init(jax.random.key(9), x)
    out, (C, n, m) = layer.apply(params, 30.0 * x)  # large gates: the stabiliser at work
    assert C.dtype == n.dtype == m.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(out)))


# --- bad input ---------------------------------------------------------------------------


def test_heads_that_do_not_divide_the_width_are_one_line(tmp_path):
    r = run_main(
        SMOKE, "--config.cell=mlstm", "--config.num_heads=3", f"--workdir={tmp_path / 'w'}"
    )
    assert_one_error(r, 2, "num_heads=3", "num_hiddens=32")
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    "field, value",
    [("remat", "sometimes"), ("chunk_size", -1), ("key_dim", -2), ("value_dim", -1),
     ("form", "blocked"), ("num_heads", 0), ("num_householder", 0), ("gate_soft_cap", -1.0)],
)  # fmt: skip
def test_bad_matrix_fields_are_refused_naming_the_field(field, value):
    config = fields.defaults()
    config.cell = {"num_householder": "deltaproduct", "gate_soft_cap": "mlstm"}.get(field, "gla")
    config[field] = value
    with pytest.raises(ConfigError, match=field):
        checks.validate(config)


def test_a_bad_deltaproduct_is_one_line_and_writes_nothing(tmp_path):
    r = run_main(SMOKE, "--config.cell=deltaproduct", "--config.num_householder=0",
                 f"--workdir={tmp_path / 'w'}")  # fmt: skip
    assert_one_error(r, 2, "num_householder")
    assert not (tmp_path / "w").exists()


def test_remat_block_in_a_stack_needs_a_parallel_in_time_cell():
    config = fields.defaults()
    config.cell, config.remat = "lstm", "block"
    with pytest.raises(ConfigError, match="remat='block'"):
        checks.validate(config)
    config.remat = "chunk"  # per segment of time: any cell
    checks.validate(config)


def test_a_checkpoint_of_another_cell_is_refused_untouched(tmp_path):
    workdir = tmp_path / "w"
    r = run_main(SMOKE, "--config.cell=mlstm", "--config.num_epochs=1", f"--workdir={workdir}")
    assert r.returncode == 0, r.stderr[-2000:]
    before = sorted((p.name, p.stat().st_size) for p in workdir.rglob("*"))
    for flags in (("--config.cell=gla",), ("--config.key_dim=4",)):
        r = run_main(SMOKE, "--config.cell=mlstm", "--config.num_epochs=2", *flags,
                     f"--workdir={workdir}")  # fmt: skip
        assert_one_error(r, 2, "checkpoint")
    assert sorted((p.name, p.stat().st_size) for p in workdir.rglob("*")) == before


@pytest.mark.parametrize(
    "cell, block, remats",
    [("gla", "residual", ("block", "chunk")), ("mingru", "stack", ("block", "chunk")),
     ("mlstm", "xlstm", ("block",))],
)  # fmt: skip
def test_remat_changes_no_result(cell, block, remats, monkeypatch):
    monkeypatch.setattr(models, "REMAT_STEPS", 5)  # segments of 5, 5 and 2 steps
    tokens = jax.random.randint(jax.random.key(10), (2, 12), 0, 11)

    def grads(remat):
        model = RNNModel(11, cell=cell, block=block, num_hiddens=8, num_layers=2,
                         num_heads=2, chunk_size=4, remat=remat)  # fmt: skip
        params = model.init(jax.random.key(11), tokens, model.begin_state(2))

        def loss(params):
            logits, state = model.apply(params, tokens, model.begin_state(2))
            return jnp.mean(logits**2) + sum(jnp.mean(s**2) for s in jax.tree.leaves(state))

        return jax.jit(jax.value_and_grad(loss))(params)

    want = grads("none")
    for remat in remats:
        got = grads(remat)  # the same parameter tree: a checkpoint restores either way
        assert jax.tree.structure(got) == jax.tree.structure(want)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            assert _rel(a, b) < 1e-5, remat
