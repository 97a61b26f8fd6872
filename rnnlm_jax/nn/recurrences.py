"""The time loops of the fast layers: pure functions of arrays with hand-written backward passes.

Each function runs one recurrent layer over a time-major sequence whose input projection
`xp = x W_x + b` was computed beforehand for all T*B tokens at once. Inside the loop a step is
one fused `[B, H] @ [H, k*H]` matmul (k = 1, 3, 4 for tanh, GRU, LSTM) and elementwise gates.
The backward pass (`jax.custom_vjp`) is a reverse-time scan that carries `dL/dh` (and `dL/dc`)
and emits `dL/d(pre-activation)` per step; the recurrent weight gradient is then ONE
`[H, T*B] @ [T*B, k*H]` matmul instead of T small ones, and `dL/dxp` is those same
pre-activation gradients (the caller's autodiff takes it through the input projection).

The maths is flax's cells' (`nn.SimpleCell`, `nn.GRUCell`, `nn.LSTMCell` with its `(c, h)`
carry); the gate order inside the fused `k*H` axis is flax's names in order: `r, z, n` for the
GRU, `i, f, g, o` for the LSTM. `dtype` is the dtype of the matmul operands (bfloat16 or
float32); carries, gates and accumulation stay float32.

All functions take `(…, unroll)` static arguments last and return `(final carry, hs [T, B, H])`;
the LSTM's sequence is the carry at every step, `(cs, hs)`, so its cell state over time is
reachable too.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def matmul(a: jax.Array, b: jax.Array, dtype: Any) -> jax.Array:
    """`a @ b` with operands in `dtype` and a float32 result (so bfloat16 accumulates safely)."""
    return jnp.matmul(a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


def on_cpu() -> bool:
    """Whether the computation being traced runs on XLA:CPU, where the tricks below were
    measured; other backends get the plain forms."""
    return jax.default_backend() == "cpu"


def sigmoid(x: jax.Array) -> jax.Array:
    """The logistic function; on XLA:CPU as `0.5 * tanh(0.5 x) + 0.5`: the same values (to
    float rounding), and there about 4x cheaper than `jax.nn.sigmoid` (measured in the time
    loop). Elsewhere `jax.nn.sigmoid`."""
    if on_cpu():
        return 0.5 * jnp.tanh(0.5 * x) + 0.5
    return jax.nn.sigmoid(x)


def _previous(h0: jax.Array, hs: jax.Array) -> jax.Array:
    """`h_{t-1}` for every step: `[h0, hs[:-1]]`, `[T, B, H]`."""
    return jnp.concatenate([h0[None], hs[:-1]], axis=0)


def _weight_grad(h_prev: jax.Array, G: jax.Array, dtype: Any) -> jax.Array:
    """`sum_t h_{t-1}^T G_t` as one `[H, T*B] @ [T*B, kH]` matmul."""
    return matmul(h_prev.reshape(-1, h_prev.shape[-1]).T, G.reshape(-1, G.shape[-1]), dtype)


# --- tanh: h' = tanh(xp + h W) ------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def tanh_rnn(xp, h0, W, dtype=jnp.float32, unroll=1):
    """Vanilla RNN layer. `xp [T, B, H]`, `h0 [B, H]`, `W [H, H]` -> `(h_T, hs [T, B, H])`."""
    return _tanh_fwd(xp, h0, W, dtype, unroll)[0]


def _tanh_fwd(xp, h0, W, dtype, unroll):
    W_c = W.astype(dtype)

    def step(h, xp_t):
        h = jnp.tanh(xp_t + matmul(h, W_c, dtype))
        return h, h

    h_last, hs = jax.lax.scan(step, h0, xp, unroll=unroll)
    return (h_last, hs), (h0, hs, W)


def _tanh_bwd(dtype, unroll, residuals, cotangents):
    h0, hs, W = residuals
    d_last, d_hs = cotangents
    W_T = W.T.astype(dtype)  # transposed once, outside the loop

    def step(dh, inputs):
        dy, h = inputs
        g = (dy + dh) * (1.0 - h * h)
        return matmul(g, W_T, dtype), g

    dh0, G = jax.lax.scan(step, d_last, (d_hs, hs), reverse=True, unroll=unroll)
    return G, dh0, _weight_grad(_previous(h0, hs), G, dtype)


tanh_rnn.defvjp(_tanh_fwd, _tanh_bwd)


# --- GRU (flax's GRUCell) -------------------------------------------------------------------
#   r = sigmoid(xr + h W_hr), z = sigmoid(xz + h W_hz), n = tanh(xn + r * (h W_hn + b_hn)),
#   h' = (1 - z) * n + z * h
# Every gradient of a step is `d = dL/dh'` times a factor of the forward's values alone, so the
# factors are computed for all T steps at once before the reverse loop, and the loop is only
#   d = dy + dh,  dxp = U * [d, d, d],  dh_prev = d * z + (dxp * [1, 1, r]) @ W^T
# (U: the factors of `dL/dxp`; r takes xn's gradient to that of `h W_hn + b_hn`).


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def gru(xp, h0, W, b_hn, dtype=jnp.float32, unroll=1):
    """GRU layer. `xp [T, B, 3H]` (r, z, n), `h0 [B, H]`, `W [H, 3H]`, `b_hn [H]`
    -> `(h_T, hs [T, B, H])`."""
    return _gru_fwd(xp, h0, W, b_hn, dtype, unroll)[0]


def _gru_fwd(xp, h0, W, b_hn, dtype, unroll):
    H = h0.shape[-1]
    W_c = W.astype(dtype)

    def step(h, xp_t):
        u = matmul(h, W_c, dtype)
        r = sigmoid(xp_t[:, :H] + u[:, :H])
        z = sigmoid(xp_t[:, H : 2 * H] + u[:, H : 2 * H])
        un = u[:, 2 * H :] + b_hn
        n = jnp.tanh(xp_t[:, 2 * H :] + r * un)
        h = n + z * (h - n)
        return h, (h, jnp.stack([r, z, n, un], axis=1))

    h_last, (hs, acts) = jax.lax.scan(step, h0, xp, unroll=unroll)
    return (h_last, hs), (h0, hs, acts, W)


def _gru_bwd(dtype, unroll, residuals, cotangents):
    h0, hs, acts, W = residuals
    d_last, d_hs = cotangents
    H = hs.shape[-1]
    W_T = W.T.astype(dtype)  # transposed once, outside the loop
    r, z, n, un = (acts[:, :, k] for k in range(4))
    h_prev = _previous(h0, hs)
    dn = (1.0 - z) * (1.0 - n * n)  # d(xn + r * un) / dh'
    # d(xp) / dh' for r, z, n, and the factor that takes d(xp) to d(h W + [0, 0, b_hn]).
    U = jnp.concatenate([dn * un * r * (1.0 - r), (h_prev - n) * z * (1.0 - z), dn], axis=-1)
    R = jnp.concatenate([jnp.ones_like(r), jnp.ones_like(r), r], axis=-1)

    def step(dh, inputs):
        dy, U_t, R_t, z_t = inputs
        d = dy + dh
        dxp_t = U_t * jnp.concatenate([d, d, d], axis=-1)
        return d * z_t + matmul(dxp_t * R_t, W_T, dtype), dxp_t

    dh0, dxp = jax.lax.scan(step, d_last, (d_hs, U, R, z), reverse=True, unroll=unroll)
    dU = dxp * R
    return dxp, dh0, _weight_grad(h_prev, dU, dtype), dU[..., 2 * H :].sum(axis=(0, 1))


gru.defvjp(_gru_fwd, _gru_bwd)


# --- LSTM (flax's LSTMCell, carry (c, h)) -----------------------------------------------------
#   i, f, o = sigmoid(.), g = tanh(.) of xp + h W (gates in that order), c' = f * c + i * g,
#   h' = o * tanh(c')
# As for the GRU, the gate gradients are `dc` (i, f, g) or `d` (o) times factors of the forward's
# values, computed for all steps before the reverse loop, which is only
#   dc = dc + dcy + dh * o (1 - tanh(c)^2),  dxp = P * [dc, dc, dc, dy + dh],  dh_prev = dxp @ W^T,
#   dc_prev = dc * f
# (dcy: the outputs' own cotangents' share of dc', also computed beforehand). The loop emits
# dxp itself, so nothing is left to compute per step after it.

# On XLA:CPU, tanh(s a) for the gates on axis 1 gives sigmoid for i, f, o with one tanh.
# (numpy: importing creates no array.)
_LSTM_SCALE = np.array([0.5, 0.5, 1.0, 0.5], np.float32)[:, None]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def lstm(xp, carry, W, dtype=jnp.float32, unroll=1):
    """LSTM layer. `xp [T, B, 4H]` (i, f, g, o; biases included), `carry = (c0, h0)` each
    `[B, H]`, `W [H, 4H]` -> `((c_T, h_T), (cs, hs))`, the cell and hidden states of every
    step, each `[T, B, H]`."""
    return _lstm_fwd(xp, carry, W, dtype, unroll)[0]


def _lstm_fwd(xp, carry, W, dtype, unroll):
    c0, h0 = carry
    H = h0.shape[-1]
    W_c = W.astype(dtype)
    cpu = on_cpu()

    def step(carry, xp_t):
        c, h = carry
        a = (xp_t + matmul(h, W_c, dtype)).reshape(-1, 4, H)  # gates on axis 1
        if cpu:
            t = jnp.tanh(a * _LSTM_SCALE)  # one tanh for all four gates
            i, f, o = (0.5 * t[:, k] + 0.5 for k in (0, 1, 3))
        else:  # the gates' activations themselves, [i, f, g, o]
            t = jnp.concatenate(
                [jax.nn.sigmoid(a[:, :2]), jnp.tanh(a[:, 2:3]), jax.nn.sigmoid(a[:, 3:])], axis=1
            )
            i, f, o = (t[:, k] for k in (0, 1, 3))
        c = f * c + i * t[:, 2]
        h = o * jnp.tanh(c)
        return (c, h), (h, c, t)

    (c_last, h_last), (hs, cs, ts) = jax.lax.scan(step, (c0, h0), xp, unroll=unroll)
    return ((c_last, h_last), (cs, hs)), (c0, h0, hs, cs, ts, W)


def _lstm_bwd(dtype, unroll, residuals, cotangents):
    c0, h0, hs, cs, ts, W = residuals
    (dc_last, dh_last), (d_cs, d_hs) = cotangents
    W_T = W.T.astype(dtype)  # transposed once, outside the loop
    if on_cpu():  # ts: tanh(s a), see _lstm_fwd
        i, f, o = (0.5 * ts[:, :, k] + 0.5 for k in (0, 1, 3))
    else:
        i, f, o = (ts[:, :, k] for k in (0, 1, 3))
    g = ts[:, :, 2]
    tc = jnp.tanh(cs)
    c_prev = _previous(c0, cs)
    # d(pre-activation) / dc for i, f, g and / dh' for o: [T, B, 4H]
    P = jnp.concatenate(
        [g * i * (1.0 - i), c_prev * f * (1.0 - f), i * (1.0 - g * g), tc * o * (1.0 - o)], axis=-1
    )
    Q = o * (1.0 - tc * tc)  # dc' / dh'
    dcy = d_cs + d_hs * Q  # what the outputs' cotangents add to dc'

    def step(carry, inputs):
        dh, dc = carry
        dy, dcy_t, P_t, Q_t, f_t = inputs
        dc = dc + dcy_t + dh * Q_t
        dxp_t = P_t * jnp.concatenate([dc, dc, dc, dy + dh], axis=-1)
        return (matmul(dxp_t, W_T, dtype), dc * f_t), dxp_t

    (dh0, dc0), dxp = jax.lax.scan(
        step, (dh_last, dc_last), (d_hs, dcy, P, Q, f), reverse=True, unroll=unroll
    )
    return dxp, (dc0, dh0), _weight_grad(_previous(h0, hs), dxp, dtype)


lstm.defvjp(_lstm_fwd, _lstm_bwd)
