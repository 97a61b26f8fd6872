"""The matrix-state recurrences as pure functions of arrays, each in three forms with one
result: `recurrent` (one step at a time, what generation runs), `chunkwise` (inside a chunk
of C steps matrix products with a decay mask, across chunks the state passed on by a scan
of T / C steps) and `parallel` (the whole sequence as one chunk: quadratic in T, for short
sequences).

Shapes (B batch, N heads, T steps, K key width, V value width, all per head):
  q, k `[B, N, T, K]`, v `[B, N, T, V]`; gates `[B, N, T]` (per head) or `[B, N, T, K]`
  (per key dimension); the state `S [B, N, K, V]` (the mLSTM: `(C [B, N, K, V],
  n [B, N, K], m [B, N])`). Every function returns `(outputs [B, N, T, V], final state)`.
All in float32. A step with decay 1 (log decay 0) and no input (k = 0, or beta = 0, or
log i = `NO_INPUT`) leaves the state as it is: padding written so is free of effect.

  linear_attention  S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T,  o_t = S_t^T q_t
                    (gated linear attention, GLA, with g per key dimension; Mamba-2's SSD
                    with one g per head)
  gated_delta       S_t = exp(g_t) (I - b_t k_t k_t^T) S_{t-1} + b_t k_t v_t^T,
                    o_t = S_t^T q_t  (the gated delta rule; k_t unit length)
  delta_product     per token one decay, then n such updates without it (Gated
                    DeltaProduct), as gated_delta over the T n interleaved updates
  mlstm             m_t = max(log f_t + m_{t-1}, log i_t),
                    C_t = f'_t C_{t-1} + i'_t k_t v_t^T, n_t = f'_t n_{t-1} + i'_t k_t,
                    f'_t = exp(log f_t + m_{t-1} - m_t), i'_t = exp(log i_t - m_t),
                    h_t = C_t^T q_t / (max(|n_t^T q_t|, exp(-m_t)) + 1e-6)  (xLSTM's,
                    stabilised, with its epsilon)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

FORMS = ("auto", "recurrent", "chunkwise", "parallel")
NO_INPUT = -1e30  # a log input gate that writes nothing (finite: no inf - inf)
# GLA's decay per key dimension cannot factor through a [C, C] mask: its chunk form scales
# q and k by exp(+-(G - G_mid)), G the log decay summed within the chunk, which stays
# finite while |G - G_mid| <= GLA_MAX_LOG_DECAY * C / 2 <= 64.
GLA_MAX_LOG_DECAY = 4.0  # the layer clamps a step's log decay at -4 (a decay of 0.018)
GLA_MAX_CHUNK = 32
MLSTM_EPS = 1e-6  # added to the mLSTM's normaliser, as every xLSTM reference does


# Negative eigenvalues (Grazzi et al. 2025): a decay exp(g) in (0, 1] becomes a = 2 exp(g) - 1
# in (-1, 1]. With sigma_t the product of the signs of a_1..a_t, S~_t = sigma_t S_t obeys the
# same recurrence with decay |a_t| and keys sigma_t k_t, and o_t = S~_t^T (sigma_t q_t): every
# form runs on (sigma q, sigma k, log|a|) unchanged. |a| is floored at exp(floor) (a decay
# of 2e-9 by default) so its log stays finite.
NEGATIVE_LOG_FLOOR = -20.0


def signed_decay(g: jax.Array, floor: float = NEGATIVE_LOG_FLOOR):
    """`(log|a|, sigma)` of `a = 2 exp(g) - 1` for log decays `g` `[B, N, T]` or `[B, N, T, K]`:
    `log|a|` floored at `floor`, and `sigma_t`, the product of the signs of `a` over steps
    1..t (time is axis 2), +-1."""
    a = 2.0 * jnp.exp(g) - 1.0
    log_abs = jnp.log(jnp.maximum(jnp.abs(a), jnp.exp(floor)))
    flips = jnp.cumsum((a < 0).astype(jnp.int32), axis=2)
    sigma = (1 - 2 * (flips % 2)).astype(g.dtype)
    return log_abs, sigma


def resolve_form(form: str, T: int, chunk_size: int) -> str:
    """`recurrent`, `chunkwise` or `parallel` for `form` at length T; `auto`: recurrent for
    one step (generation), parallel up to one chunk, chunkwise beyond."""
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; expected one of {FORMS}")
    if form != "auto":
        return form
    if T == 1:
        return "recurrent"
    return "parallel" if T <= chunk_size else "chunkwise"


def _tril(C: int, strict: bool = False) -> jax.Array:
    return jnp.tril(jnp.ones((C, C), bool), -1 if strict else 0)


def _to_chunks(x: jax.Array, C: int, fill: float = 0.0) -> jax.Array:
    """`[B, N, T, ...]` -> `[B, N, T / C, C, ...]`, T padded to a multiple of C with `fill`."""
    T = x.shape[2]
    pad = -T % C
    if pad:
        widths = [(0, 0)] * x.ndim
        widths[2] = (0, pad)
        x = jnp.pad(x, widths, constant_values=fill)
    return x.reshape(x.shape[:2] + (x.shape[2] // C, C) + x.shape[3:])


def _from_chunks(x: jax.Array, T: int) -> jax.Array:
    return x.reshape(x.shape[:2] + (-1,) + x.shape[4:])[:, :, :T]


def _scan_chunks(step, carry, xs):
    """`jax.lax.scan` over the chunk axis (2) of every array in `xs`."""
    xs = jax.tree.map(lambda a: jnp.moveaxis(a, 2, 0), xs)
    carry, ys = jax.lax.scan(step, carry, xs)
    return carry, jax.tree.map(lambda a: jnp.moveaxis(a, 0, 2), ys)


def _chunk_size(form: str, T: int, chunk_size: int) -> int:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return T if form == "parallel" else min(chunk_size, T)


def _segsum(G: jax.Array) -> jax.Array:
    """`G_r - G_s` for s <= r, `-inf` above the diagonal: `[..., C] -> [..., C, C]`."""
    C = G.shape[-1]
    return jnp.where(_tril(C), G[..., :, None] - G[..., None, :], -jnp.inf)


# --- linear attention: GLA (decay per key dimension) and Mamba-2's SSD (per head) ----------


def linear_attention(q, k, v, g, S0, form="auto", chunk_size=64):
    """`S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T`, `o_t = S_t^T q_t`; `g` `[B, N, T]` (one
    decay per head) or `[B, N, T, K]` (per key dimension, each `>= -GLA_MAX_LOG_DECAY` for
    the chunk forms, whose chunks then hold at most `GLA_MAX_CHUNK` steps)."""
    T = q.shape[2]
    form = resolve_form(form, T, chunk_size)
    if form == "recurrent":
        return _linear_attention_recurrent(q, k, v, g, S0)
    C = _chunk_size(form, T, chunk_size)
    if g.ndim == 3:
        return _linear_attention_chunk_scalar(q, k, v, g, S0, C)
    # Clamped, not refused: the same result at any chunk size (the parallel form too).
    return _linear_attention_chunk_vector(q, k, v, g, S0, min(C, GLA_MAX_CHUNK))


def _linear_attention_recurrent(q, k, v, g, S0):
    decay = jnp.exp(g if g.ndim == 4 else g[..., None])  # [B, N, T, K]

    def step(S, inputs):
        q_t, k_t, v_t, a_t = inputs
        S = a_t[..., None] * S + k_t[..., :, None] * v_t[..., None, :]
        return S, jnp.einsum("bnk,bnkv->bnv", q_t, S)

    xs = jax.tree.map(lambda a: jnp.moveaxis(a, 2, 0), (q, k, v, decay))
    S, o = jax.lax.scan(step, S0, xs)
    return jnp.moveaxis(o, 0, 2), S


def _linear_attention_chunk_scalar(q, k, v, g, S0, C):
    T = q.shape[2]
    q, k, v, g = (_to_chunks(a, C) for a in (q, k, v, g))  # [B, N, n, C, ...]
    G = jnp.cumsum(g, axis=-1)  # [B, N, n, C]
    A = jnp.einsum("...rk,...sk->...rs", q, k) * jnp.exp(_segsum(G))
    o = A @ v  # within each chunk
    last = G[..., -1:]
    dS = jnp.einsum("...sk,...sv->...kv", k * jnp.exp(last - G)[..., None], v)

    def step(S, inputs):
        dS_c, a_c = inputs
        return a_c[..., None, None] * S + dS_c, S

    S, starts = _scan_chunks(step, S0, (dS, jnp.exp(last[..., 0])))
    o = o + jnp.einsum("...rk,...kv->...rv", q * jnp.exp(G)[..., None], starts)
    return _from_chunks(o, T), S


def _linear_attention_chunk_vector(q, k, v, g, S0, C):
    T = q.shape[2]
    q, k, v, g = (_to_chunks(a, C) for a in (q, k, v, g))
    G = jnp.cumsum(g, axis=-2)  # [B, N, n, C, K]
    mid = G[..., C // 2 : C // 2 + 1, :]  # the reference that keeps both factors finite
    A = jnp.einsum("...rk,...sk->...rs", q * jnp.exp(G - mid), k * jnp.exp(mid - G))
    o = jnp.where(_tril(C), A, 0.0) @ v
    last = G[..., -1:, :]
    dS = jnp.einsum("...sk,...sv->...kv", k * jnp.exp(last - G), v)

    def step(S, inputs):
        dS_c, a_c = inputs
        return a_c[..., None] * S + dS_c, S

    S, starts = _scan_chunks(step, S0, (dS, jnp.exp(last[..., 0, :])))
    o = o + jnp.einsum("...rk,...kv->...rv", q * jnp.exp(G), starts)
    return _from_chunks(o, T), S


# --- the gated delta rule -----------------------------------------------------------------


def gated_delta(q, k, v, beta, g, S0, form="auto", chunk_size=64):
    """`S_t = exp(g_t) (I - b_t k_t k_t^T) S_{t-1} + b_t k_t v_t^T`, `o_t = S_t^T q_t`;
    `beta`, `g` `[B, N, T]`; `k` of unit length per head."""
    T = q.shape[2]
    form = resolve_form(form, T, chunk_size)
    if form == "recurrent":
        return _gated_delta_recurrent(q, k, v, beta, g, S0)
    return _gated_delta_chunk(q, k, v, beta, g, S0, _chunk_size(form, T, chunk_size))


def _gated_delta_recurrent(q, k, v, beta, g, S0):
    def step(S, inputs):
        q_t, k_t, v_t, b_t, g_t = inputs
        S = jnp.exp(g_t)[..., None, None] * S
        delta = b_t[..., None] * (v_t - jnp.einsum("bnk,bnkv->bnv", k_t, S))
        S = S + k_t[..., :, None] * delta[..., None, :]
        return S, jnp.einsum("bnk,bnkv->bnv", q_t, S)

    xs = jax.tree.map(lambda a: jnp.moveaxis(a, 2, 0), (q, k, v, beta, g))
    S, o = jax.lax.scan(step, S0, xs)
    return jnp.moveaxis(o, 0, 2), S


def unit_lower_inverse(L: jax.Array) -> jax.Array:
    """`(I + L)^-1` for strictly lower triangular `L [..., C, C]`: with `N = -L` nilpotent,
    `(I - N)^-1 = (I + N)(I + N^2)(I + N^4)...`, 2 log2(C) batched matmuls."""
    C = L.shape[-1]
    N = -L
    inverse = jnp.eye(C, dtype=L.dtype) + N
    power = N
    for _ in range(max(C - 1, 1).bit_length() - 1):
        power = power @ power
        inverse = inverse + inverse @ power
    return inverse


def _gated_delta_chunk(q, k, v, beta, g, S0, C):
    """Within a chunk the update is `S_t = exp(g_t) S_{t-1} + k_t d_t^T` with the pseudo-
    value `d_t = b_t (v_t - exp(g_t) S_{t-1}^T k_t)`; written for the chunk's rows at once,
    `(I + diag(b) L) D = diag(b) (V - diag(exp(G)) K S_0)`, L the strictly lower
    `exp(G_r - G_s) k_r.k_s`, so `D = U - W S_0` with `U`, `W` computed for every chunk in
    parallel and only `D`, `S` passed through the scan (the WY / UT form)."""
    T = q.shape[2]
    q, k, v, beta, g = (_to_chunks(a, C) for a in (q, k, v, beta, g))
    G = jnp.cumsum(g, axis=-1)  # [B, N, n, C]
    decay = jnp.exp(_segsum(G))  # exp(G_r - G_s), s <= r
    kk = jnp.einsum("...rk,...sk->...rs", k, k)
    L = jnp.where(_tril(C, strict=True), beta[..., :, None] * kk * decay, 0.0)
    inverse = unit_lower_inverse(L)
    U = inverse @ (beta[..., None] * v)
    W = inverse @ ((beta * jnp.exp(G))[..., None] * k)
    last = G[..., -1:]
    k_end = k * jnp.exp(last - G)[..., None]

    def step(S, inputs):
        U_c, W_c, k_c, a_c = inputs
        D = U_c - W_c @ S
        S_next = a_c[..., None, None] * S + jnp.einsum("...sk,...sv->...kv", k_c, D)
        return S_next, (S, D)

    S, (starts, D) = _scan_chunks(step, S0, (U, W, k_end, jnp.exp(last[..., 0])))
    A = jnp.einsum("...rk,...sk->...rs", q, k) * decay
    o = jnp.einsum("...rk,...kv->...rv", q * jnp.exp(G)[..., None], starts) + A @ D
    return _from_chunks(o, T), S


def delta_product(q, k, v, beta, g, S0, form="auto", chunk_size=64):
    """Gated DeltaProduct (Siems et al. 2025): per token t one decay, then n Householder-like
    updates, `S <- exp(g_t) S`, then for j = 1..n `S <- (I - b_tj k_tj k_tj^T) S + b_tj
    k_tj v_tj^T`, and `o_t = S_t^T q_t`. `k [B, N, T, n, K]`, `v [B, N, T, n, V]`, `beta
    [B, N, T, n]`, `g [B, N, T]`. Run as the gated delta rule over the T n interleaved
    updates (the decay at each token's first, the query read at its last), in chunks of
    `chunk_size` tokens."""
    B, N, T, n, K = k.shape
    form = resolve_form(form, T, chunk_size)
    chunk = _chunk_size(form, T, chunk_size) * n if form != "recurrent" else 1
    at = lambda x, j: jnp.zeros(x.shape[:3] + (n,) + x.shape[3:], x.dtype).at[:, :, :, j].set(x)  # noqa: E731
    flat = lambda x: x.reshape((B, N, T * n) + x.shape[4:])  # noqa: E731
    o, S = gated_delta(flat(at(q, n - 1)), flat(k), flat(v), flat(beta), flat(at(g, 0)), S0,
                       form, chunk)  # fmt: skip
    return o.reshape(B, N, T, n, -1)[:, :, :, -1], S


# --- the generalised delta rule (diagonal plus low rank, RWKV-7's) --------------------------


def dplr(q, k, v, alpha, beta, g, S0, form="auto", chunk_size=32):
    """`S_t = diag(exp(g_t)) S_{t-1} + beta_t (alpha_t^T S_{t-1}) + k_t v_t^T`, `o_t = S_t^T
    q_t`: a transition diagonal plus rank one (RWKV-7's, with alpha = -k^, beta = k^ a);
    `alpha`, `beta`, `g` `[B, N, T, K]`, each step's log decay `>= -GLA_MAX_LOG_DECAY` for the
    chunk forms (chunks of at most `GLA_MAX_CHUNK` steps), as GLA's."""
    T = q.shape[2]
    form = resolve_form(form, T, chunk_size)
    if form == "recurrent":
        return _dplr_recurrent(q, k, v, alpha, beta, g, S0)
    return _dplr_chunk(q, k, v, alpha, beta, g, S0, min(_chunk_size(form, T, chunk_size),
                                                        GLA_MAX_CHUNK))  # fmt: skip


def _dplr_recurrent(q, k, v, alpha, beta, g, S0):
    def step(S, inputs):
        q_t, k_t, v_t, a_t, b_t, g_t = inputs
        u = jnp.einsum("bnk,bnkv->bnv", a_t, S)  # alpha^T S, before the decay
        S = jnp.exp(g_t)[..., None] * S + b_t[..., None] * u[..., None, :]
        S = S + k_t[..., :, None] * v_t[..., None, :]
        return S, jnp.einsum("bnk,bnkv->bnv", q_t, S)

    xs = jax.tree.map(lambda a: jnp.moveaxis(a, 2, 0), (q, k, v, alpha, beta, g))
    S, o = jax.lax.scan(step, S0, xs)
    return jnp.moveaxis(o, 0, 2), S


def _dplr_chunk(q, k, v, alpha, beta, g, S0, C):
    """Within a chunk, with the pseudo-values `u_t = S_{t-1}^T alpha_t`, the state is
    `S_t = Gamma_t S_0 + sum_{s <= t} (Gamma_t / Gamma_s)(beta_s u_s^T + k_s v_s^T)`
    (Gamma the decays' running product per key dimension), so the chunk's u solve one unit
    lower triangular system, `(I - L_ab) U = A S_0 + L_ak V`: `U = W S_0 + U~` with `W`, `U~`
    computed for every chunk in parallel and only `U`, `S` passed through the scan (the WY
    form, as `gated_delta`'s). Factors `exp(+-(G - G_mid))` keep the masks finite, as GLA's."""
    T = q.shape[2]
    q, k, v, alpha, beta, g = (_to_chunks(a, C) for a in (q, k, v, alpha, beta, g))
    G = jnp.cumsum(g, axis=-2)  # [B, N, n, C, K]
    before = G - g  # G_{t-1}
    mid = G[..., C // 2 : C // 2 + 1, :]
    a_mid, q_mid = alpha * jnp.exp(before - mid), q * jnp.exp(G - mid)
    b_mid, k_mid = beta * jnp.exp(mid - G), k * jnp.exp(mid - G)
    strict, causal = _tril(C, strict=True), _tril(C)
    dot = lambda x, y, mask: jnp.where(mask, jnp.einsum("...rk,...sk->...rs", x, y), 0.0)  # noqa: E731
    L_ab, L_ak = dot(a_mid, b_mid, strict), dot(a_mid, k_mid, strict)
    inverse = unit_lower_inverse(-L_ab)  # (I - L_ab)^-1
    W = inverse @ (alpha * jnp.exp(before))
    U_own = inverse @ (L_ak @ v)
    last = G[..., -1:, :]
    b_end, k_end = beta * jnp.exp(last - G), k * jnp.exp(last - G)
    dS_kv = jnp.einsum("...sk,...sv->...kv", k_end, v)

    def step(S, inputs):
        W_c, U_c, b_c, dS_c, a_c = inputs
        U = U_c + W_c @ S
        S_next = a_c[..., None] * S + jnp.einsum("...sk,...sv->...kv", b_c, U) + dS_c
        return S_next, (S, U)

    S, (starts, U) = _scan_chunks(step, S0, (W, U_own, b_end, dS_kv, jnp.exp(last[..., 0, :])))
    o = jnp.einsum("...rk,...kv->...rv", q * jnp.exp(G), starts)
    o = o + dot(q_mid, b_mid, causal) @ U + dot(q_mid, k_mid, causal) @ v
    return _from_chunks(o, T), S


# --- mLSTM ----------------------------------------------------------------------------------


def mlstm(q, k, v, log_i, log_f, state0, form="auto", chunk_size=64):
    """xLSTM's mLSTM (see the module docstring); `log_i`, `log_f` `[B, N, T]`, `state0 =
    (C, n, m)`. The stabiliser `m` is the same in every form: unrolled, `m_t = max(F_t +
    m_0, max_s (F_t - F_s + log i_s))` with `F` the summed log forget gates."""
    T = q.shape[2]
    form = resolve_form(form, T, chunk_size)
    if form == "recurrent":
        return _mlstm_recurrent(q, k, v, log_i, log_f, state0)
    C = _chunk_size(form, T, chunk_size)
    return _mlstm_chunk(q, k, v, log_i, log_f, state0, C)


def _mlstm_read(num, den, m):
    """`num / (max(|den|, exp(-m)) + MLSTM_EPS)`: xLSTM's read, its epsilon included, so a
    zero query under a large stabiliser (exp(-m) underflows to 0 in float32 from m = 88)
    reads 0, not 0 / 0."""
    return num / (jnp.maximum(jnp.abs(den), jnp.exp(-m)) + MLSTM_EPS)[..., None]


def _mlstm_recurrent(q, k, v, log_i, log_f, state0):
    def step(state, inputs):
        C, n, m = state
        q_t, k_t, v_t, li, lf = inputs
        m_new = jnp.maximum(lf + m, li)
        i = jnp.exp(li - m_new)[..., None]
        f = jnp.exp(lf + m - m_new)[..., None]
        C = f[..., None] * C + (i * k_t)[..., :, None] * v_t[..., None, :]
        n = f * n + i * k_t
        num = jnp.einsum("bnk,bnkv->bnv", q_t, C)
        h = _mlstm_read(num, jnp.einsum("bnk,bnk->bn", q_t, n), m_new)
        return (C, n, m_new), h

    xs = jax.tree.map(lambda a: jnp.moveaxis(a, 2, 0), (q, k, v, log_i, log_f))
    state, h = jax.lax.scan(step, state0, xs)
    return jnp.moveaxis(h, 0, 2), state


def _mlstm_chunk(q, k, v, log_i, log_f, state0, C):
    T = q.shape[2]
    q, k, v, log_f = (_to_chunks(a, C) for a in (q, k, v, log_f))
    log_i = _to_chunks(log_i, C, NO_INPUT)
    F = jnp.cumsum(log_f, axis=-1)  # [B, N, n, C]
    D = _segsum(F) + log_i[..., None, :]  # F_r - F_s + log i_s, s <= r
    m_in = D.max(axis=-1)  # each row's own stabiliser
    P = jnp.einsum("...rk,...sk->...rs", q, k) * jnp.exp(D - m_in[..., None])
    num_in, den_in = P @ v, P.sum(axis=-1)
    # What a chunk adds to (C, n), relative to its own stabiliser m_add.
    to_end = F[..., -1:] - F + log_i  # F_C - F_s + log i_s
    m_add = to_end.max(axis=-1)
    w = jnp.exp(to_end - m_add[..., None])[..., None] * k
    dC = jnp.einsum("...sk,...sv->...kv", w, v)
    dn = w.sum(axis=-2)

    def step(state, inputs):
        C_s, n_s, m_s = state
        dC_c, dn_c, m_add_c, F_c = inputs
        m_new = jnp.maximum(F_c + m_s, m_add_c)
        a, b = jnp.exp(F_c + m_s - m_new), jnp.exp(m_add_c - m_new)
        C_next = a[..., None, None] * C_s + b[..., None, None] * dC_c
        n_next = a[..., None] * n_s + b[..., None] * dn_c
        return (C_next, n_next, m_new), (C_s, n_s, m_s)

    state, (C0, n0, m0) = _scan_chunks(step, state0, (dC, dn, m_add, F[..., -1]))
    m_out = F + m0[..., None]  # the chunk's start state seen from row r
    m = jnp.maximum(m_out, m_in)
    a, b = jnp.exp(m_out - m), jnp.exp(m_in - m)
    num = a[..., None] * jnp.einsum("...rk,...kv->...rv", q, C0) + b[..., None] * num_in
    den = a * jnp.einsum("...rk,...k->...r", q, n0) + b * den_in
    return _from_chunks(_mlstm_read(num, den, m), T), state
