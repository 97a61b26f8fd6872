"""Layers of the matrix-state recurrences: xLSTM's mLSTM (Beck et al. 2024), gated linear
attention (GLA, Yang et al. 2024), Mamba-2's SSD (Dao and Gu 2024), Gated DeltaNet (Yang et
al. 2025), DeltaNet (Schlag et al. 2021; Yang et al. 2024), Gated DeltaProduct (Siems et
al. 2025), RetNet's retention (Sun et al. 2023) and HGRN2 (Qin et al. 2024), each a
multi-head layer around its recurrence in `chunkwise`.

Call as `(carry, inputs, mask=None, lower_bound=None) -> (carry, outputs)`: `inputs` int
ids `[T, B]` (needs `vocab_size`) or floats `[T, B, D]`, time-major; `outputs` float32
`[T, B, H]`; `mask` bool `[T, B]`, False for the steps past a sequence's end, which leave
the carry as it is; `lower_bound` `[N K]`: hgrn2's forget-gate bound for this layer. With N
heads of key width K and value width V (default H / N each), one matmul projects every
token to its queries, keys, values, gates and output gate; then

  gla, mamba2, gated_deltanet, deltanet, deltaproduct:
    q, k, v = SiLU(Conv1D_4(W_q x, W_k x, W_v x))    (the short convolution, Mamba-2's and
                                                      Gated DeltaNet's; its window carried)
    gla:            g = max(logsigmoid(W_g2 W_g1 x + b_g) / 16, -4) per key dimension
                    (GLA's low-rank gate, rank 16, temperature 16), q scaled by K^-1/2
    mamba2:         dt = softplus(W_dt x + b_dt), g = -exp(A_log) dt per head, v scaled by
                    dt, plus the skip D * v (SSD, one group per head)
    gated_deltanet: q, k unit length per head, q scaled by K^-1/2, b = sigmoid(W_b x),
                    g = -exp(A_log) softplus(W_a x + b_a) per head
    deltanet:       the same without the decay (g = 0)
    deltaproduct:   as gated_deltanet with `num_householder` keys, values and b a token
    out = W_o (RMSNorm_per_head(o) * SiLU(W_z x))
  retnet:
    q, k rotary at the carried position, q scaled by K^-1/2; g = log(1 - 2^(-5 - h)) for
    head h; out = W_o (RMSNorm_per_head(o) * SiLU(W_z x))
  hgrn2:
    f = sigmoid(W_f x) raised to the lower bound, g = max(log f, -4), k = 1 - exp(g),
    q = SiLU(W_q x) K^-1/2, v = W_i x;  out = W_o RMSNorm(o) (over every head, no gate)
  mlstm:
    q, k / sqrt(K), v;  log i = c tanh((W_i x + b_i) / c) (exponential input gate, soft-
    capped at c = `gate_soft_cap`), log f = logsigmoid(c tanh((W_f x + b_f) / c)) (sigmoid
    forget gate; `forget_gate="exp"`: its capped pre-activation itself)
    out = W_o (RMSNorm_per_head(h) * sigmoid(W_og x))     (xLSTM 7B's mLSTM layer)

`negative_eigenvalues=True` (Grazzi et al. 2025) widens the transition's eigenvalues from
[0, 1] to [-1, 1]: gla's and mamba2's decay a = exp(g) becomes 2 a - 1 (every form exact:
`chunkwise.signed_decay`), the delta rules' b becomes 2 b, so I - b k k^T has eigenvalue
1 - b in [-1, 1] along k.

The carry: `(S [B, N, K, V], conv [B, 3, N (K + n (K + V))])` (n: deltaproduct's updates a
token, else 1); retnet's `(S, position [B])` (int32, the steps seen); hgrn2's `(S,)`; the
mLSTM's `(C [B, N, K, V], n [B, N, K], m [B, N])`. The recurrences run in float32 whatever
`dtype` (the matmuls' operands of the projections): the mLSTM's stabiliser needs it.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rnnlm_jax.nn import chunkwise
from rnnlm_jax.nn.attention import rotary
from rnnlm_jax.nn.conv import CONV_WIDTH, Conv1D
from rnnlm_jax.nn.fast_layers import project_inputs
from rnnlm_jax.nn.recurrences import matmul

Initializer = Any
GLA_GATE_RANK = 16  # GLA's low-rank gate projection
GLA_GATE_TEMPERATURE = 16.0  # GLA's gate_logit_normalizer
GATE_SOFT_CAP = 15.0  # xLSTM 7B's: the mLSTM's gate pre-activations soft-capped at 15


def head_widths(num_hiddens: int, num_heads: int, key_dim: int, value_dim: int):
    """`(N, K, V)`: key and value widths per head, 0 meaning `num_hiddens // num_heads`."""
    if num_heads < 1 or num_hiddens % num_heads:
        raise ValueError(f"num_heads={num_heads} must divide num_hiddens={num_hiddens}")
    if key_dim < 0 or value_dim < 0:
        raise ValueError(f"key_dim and value_dim must be positive, or 0 for H / num_heads, "
                         f"got {key_dim}, {value_dim}")  # fmt: skip
    width = num_hiddens // num_heads
    return num_heads, key_dim or width, value_dim or width


def matrix_state(cell: str, prefix: tuple, N: int, K: int, V: int, num_householder: int = 1):
    """The zero carry with leading axes `prefix` (e.g. `(L, B)`): see the module docstring."""
    zeros = lambda *shape: jnp.zeros(prefix + shape, jnp.float32)  # noqa: E731
    if cell == "mlstm":
        return zeros(N, K, V), zeros(N, K), zeros(N)
    if cell == "retnet":
        return zeros(N, K, V), jnp.zeros(prefix, jnp.int32)
    if cell == "hgrn2":
        return (zeros(N, K, V),)
    if cell == "rwkv7":  # the state, and the last input for the token shift
        return zeros(N, K, V), zeros(N * K)
    n = num_householder if cell == "deltaproduct" else 1
    return zeros(N, K, V), zeros(CONV_WIDTH - 1, N * (K + n * (K + V)))


def _heads(x: jax.Array, N: int) -> jax.Array:
    """`[T, B, N * d]` -> `[B, N, T, d]`."""
    T, B = x.shape[:2]
    return x.reshape(T, B, N, -1).transpose(1, 2, 0, 3)


def _per_head(x: jax.Array) -> jax.Array:
    """`[T, B, N]` -> `[B, N, T]`."""
    return x.transpose(1, 2, 0)


def _dt_bias_init(key, shape, dtype=jnp.float32):
    """Mamba-2's: softplus^-1 of dt drawn log-uniformly from [0.001, 0.1]."""
    dt = jnp.exp(jax.random.uniform(key, shape) * (np.log(0.1) - np.log(1e-3)) + np.log(1e-3))
    return (dt + jnp.log(-jnp.expm1(-dt))).astype(dtype)


def _a_log_init(key, shape, dtype=jnp.float32, low=1.0):
    """Mamba-2's: log of A drawn uniformly from [1, 16] (`low`: the interval's start)."""
    return jnp.log(jax.random.uniform(key, shape, minval=low, maxval=16.0)).astype(dtype)


# Mamba-2 draws A from [1, 16]; flash-linear-attention's Gated DeltaNet (and DeltaProduct)
# from (0, 16): the start a float32 step above 0, so its log stays finite.
_fla_a_log_init = functools.partial(_a_log_init, low=float(np.finfo(np.float32).tiny))
_A_LOG_INITS = {"mamba2": _a_log_init, "gated_deltanet": _fla_a_log_init,
                "deltaproduct": _fla_a_log_init}  # fmt: skip


class MatrixLayer(nn.Module):
    """One layer of a matrix-state recurrence of width H (`features`); see the module
    docstring. Parameters: `in_proj` `[D, ...]` (every projection of the input at once),
    the gates' own (`gate_low`/`gate_up`/`gate_bias`; `dt_bias`, `A_log`, `D`;
    `igate_bias`, `fgate_bias`), `conv_1d`, `norm_scale [N V]`, `out` `[N V, H]`."""

    cell: str
    features: int
    vocab_size: int | None = None
    num_heads: int = 1
    key_dim: int = 0
    value_dim: int = 0
    form: str = "auto"
    chunk_size: int = 64
    forget_gate: str = "sigmoid"  # mlstm: sigmoid | exp
    negative_eigenvalues: bool = False  # the range [-1, 1]: NEGATIVE_EIGENVALUE_CELLS
    gate_soft_cap: float = GATE_SOFT_CAP  # mlstm: its gates' pre-activations (0: none)
    num_householder: int = 1  # deltaproduct: Householder updates per token
    kernel_init: Initializer = nn.initializers.lecun_normal()
    dtype: Any = jnp.float32

    def widths(self):
        return head_widths(self.features, self.num_heads, self.key_dim, self.value_dim)

    def _split(self) -> dict[str, int]:
        """The input projection's pieces, in order, and their widths."""
        N, K, V = self.widths()
        n = self.num_householder if self.cell == "deltaproduct" else 1
        pieces = {"q": N * K, "k": n * N * K, "v": n * N * V}
        pieces |= {
            "gla": {"gate_low": GLA_GATE_RANK, "z": N * V},
            "mamba2": {"dt": N, "z": N * V},
            "gated_deltanet": {"beta": N, "a": N, "z": N * V},
            "deltanet": {"beta": N, "z": N * V},
            "deltaproduct": {"beta": n * N, "a": N, "z": N * V},
            "retnet": {"z": N * V},
            "hgrn2": {},  # q, its forget gates as "k", its input as "v"
            "mlstm": {"igate": N, "fgate": N, "og": N * V},
        }[self.cell]
        return pieces

    @nn.compact
    def __call__(self, carry, x, mask=None, lower_bound=None):
        N, K, V = self.widths()
        T = x.shape[0]
        if self.cell == "deltaproduct" and self.num_householder < 1:
            raise ValueError(f"deltaproduct needs num_householder >= 1, not {self.num_householder}")
        pieces = self._split()
        D = x.shape[-1] if not jnp.issubdtype(x.dtype, jnp.integer) else self.vocab_size
        if D is None:
            raise ValueError("token-id inputs need the layer's vocab_size")
        W = self.param("in_proj", self.kernel_init, (D, sum(pieces.values())), jnp.float32)
        proj = project_inputs(x, W, jnp.zeros((), jnp.float32), self.dtype)
        p = dict(zip(pieces, jnp.split(proj, np.cumsum(list(pieces.values()))[:-1], axis=-1)))
        lengths = None if mask is None else mask.sum(axis=0)
        if self.cell in UNCONVOLVED:
            q, k, v = p["q"], p["k"], p["v"]
        else:  # q, k, v lead the projection: convolved as the one slice they are
            cuts = np.cumsum([pieces["q"], pieces["k"], pieces["v"]])
            qkv, conv = Conv1D(name="conv_1d")(carry[1], proj[..., : cuts[2]], lengths)
            q, k, v = jnp.split(jax.nn.silu(qkv), cuts[:2], axis=-1)
        q, k, v = _heads(q, N), _heads(k, N), _heads(v, N)  # [B, N, T, .]
        keep = None
        if mask is not None:  # [B, N, T]
            keep = _per_head(jnp.broadcast_to(mask[..., None], mask.shape + (N,)))
        if self.cell == "retnet":  # rotary positions on q and k, counted by the carry
            steps = carry[1][:, None] + jnp.arange(T)[None, :]  # [B, T]
            q, k = rotary(q, steps[:, None]), rotary(k, steps[:, None])
        o, state = self._recurrence(carry, q, k, v, p, keep, lower_bound)
        o = o.transpose(2, 0, 1, 3)  # [T, B, N, V]
        if self.cell == "hgrn2":  # one RMSNorm over every head, no output gate (HGRN2's)
            o = o.reshape(T, -1, N * V)
        o = o * jax.lax.rsqrt(jnp.mean(o * o, axis=-1, keepdims=True) + 1e-6)
        o = o.reshape(T, -1, N * V) * self.param("norm_scale", nn.initializers.ones, (N * V,))
        if self.cell != "hgrn2":
            o = o * (jax.nn.sigmoid(p["og"]) if self.cell == "mlstm" else jax.nn.silu(p["z"]))
        W_out = self.param("out", self.kernel_init, (N * V, self.features), jnp.float32)
        y = matmul(o, W_out, self.dtype)
        if self.cell == "mlstm":
            carry = state
        elif self.cell == "hgrn2":
            carry = (state,)
        elif self.cell == "retnet":
            carry = (state, carry[1] + (T if lengths is None else lengths.astype(jnp.int32)))
        else:
            carry = (state, conv)
        return carry, y

    def _recurrence(self, carry, q, k, v, p, keep, lower_bound=None):
        """The gates, then the recurrence: `(o [B, N, T, V], its final state)`."""
        N, K, V = self.widths()
        fn = RECURRENCES[self.cell]
        run = functools.partial(fn, form=self.form, chunk_size=self.chunk_size)
        if self.negative_eigenvalues and self.cell not in NEGATIVE_EIGENVALUE_CELLS:
            raise ValueError(
                f"negative_eigenvalues: cell {self.cell!r} has no decay or delta "
                f"transition to extend; cells {NEGATIVE_EIGENVALUE_CELLS}"
            )
        if self.negative_eigenvalues and self.cell in ("gla", "mamba2"):
            floor = chunkwise.NEGATIVE_LOG_FLOOR
            if self.cell == "gla":  # its chunk form's clamp
                floor = -chunkwise.GLA_MAX_LOG_DECAY
            run = functools.partial(_signed, run, floor=floor)
        if self.cell == "hgrn2":  # forget gates f >= the layer's lower bound; the key 1 - f
            g = jax.nn.log_sigmoid(k)  # [B, N, T, K]
            if lower_bound is not None:
                gamma = _heads(jnp.broadcast_to(lower_bound, (1, 1, N * K)), N)  # [1, N, 1, K]
                g = jnp.logaddexp(jnp.log(gamma), jnp.log1p(-gamma) + g)
            g = jnp.maximum(g, -chunkwise.GLA_MAX_LOG_DECAY)  # the chunk form's clamp, as GLA's
            k = -jnp.expm1(g)
            if keep is not None:
                g = jnp.where(keep[..., None], g, 0.0)
        if keep is not None:  # steps past the end: no input, decay 1
            k = jnp.where(keep[..., None], k, 0.0)
        if self.cell == "hgrn2":
            return run(jax.nn.silu(q) * K**-0.5, k, v, g, carry[0])
        if self.cell == "gla":
            W_up = self.param("gate_up", self.kernel_init, (GLA_GATE_RANK, N * K), jnp.float32)
            b = self.param("gate_bias", nn.initializers.zeros_init(), (N * K,), jnp.float32)
            g = jax.nn.log_sigmoid(matmul(p["gate_low"], W_up, self.dtype) + b)
            g = jnp.maximum(g / GLA_GATE_TEMPERATURE, -chunkwise.GLA_MAX_LOG_DECAY)
            g = _heads(g, N)
            if keep is not None:
                g = jnp.where(keep[..., None], g, 0.0)
            return run(q * K**-0.5, k, v, g, carry[0])
        if self.cell == "retnet":  # fixed decays 1 - 2^(-5 - h) per head (Sun et al. 2023)
            g = jnp.broadcast_to(retention_log_decays(N)[:, None], q.shape[:3])
            if keep is not None:
                g = jnp.where(keep, g, 0.0)
            return run(q * K**-0.5, k, v, g, carry[0])
        if self.cell == "mlstm":
            b_i = self.param("igate_bias", nn.initializers.zeros_init(), (N,), jnp.float32)
            b_f = self.param("fgate_bias", lambda *_: jnp.linspace(3.0, 6.0, N), (N,))
            log_i = _per_head(soft_cap(p["igate"] + b_i, self.gate_soft_cap))
            f = _per_head(soft_cap(p["fgate"] + b_f, self.gate_soft_cap))
            log_f = f if self.forget_gate == "exp" else jax.nn.log_sigmoid(f)
            if keep is not None:
                log_i = jnp.where(keep, log_i, chunkwise.NO_INPUT)
                log_f = jnp.where(keep, log_f, 0.0)
            return run(q, k * K**-0.5, v, log_i, log_f, carry)
        if self.cell == "deltanet":
            g = jnp.zeros(q.shape[:3], jnp.float32)
        else:
            A_log = self.param("A_log", _A_LOG_INITS[self.cell], (N,))
            dt_bias = self.param("dt_bias", _dt_bias_init, (N,))
            raw = p["dt"] if self.cell == "mamba2" else p["a"]
            dt = _per_head(jax.nn.softplus(raw + dt_bias))
            g = -jnp.exp(A_log)[:, None] * dt
        if keep is not None:
            g = jnp.where(keep, g, 0.0)
        if self.cell == "mamba2":
            skip = self.param("D", nn.initializers.ones, (N,))[:, None, None] * v
            o, S = run(q, k, v * dt[..., None], g, carry[0])
            return o + skip, S
        n = self.num_householder if self.cell == "deltaproduct" else 1
        beta = _per_head(jax.nn.sigmoid(p["beta"]))  # [B, n N, T]
        if self.negative_eigenvalues:  # I - b k k^T has the eigenvalue 1 - b in [-1, 1]
            beta = 2.0 * beta
        q = q * jax.lax.rsqrt(jnp.sum(q * q, -1, keepdims=True) + 1e-6) * K**-0.5
        if self.cell == "deltaproduct":  # n keys, values and betas per token
            B, _, T = beta.shape
            beta = beta.reshape(B, N, n, T).transpose(0, 1, 3, 2)  # [B, N, T, n]
            k = k.reshape(k.shape[:3] + (n, K))
            v = v.reshape(v.shape[:3] + (n, V))
            if keep is not None:
                beta = jnp.where(keep[..., None], beta, 0.0)
        elif keep is not None:
            beta = jnp.where(keep, beta, 0.0)
        k = k * jax.lax.rsqrt(jnp.sum(k * k, -1, keepdims=True) + 1e-6)
        return run(q, k, v, beta, g, carry[0])


def soft_cap(x: jax.Array, cap: float) -> jax.Array:
    """`cap tanh(x / cap)` (xLSTM 7B's gate soft cap); `x` itself for `cap` 0."""
    return cap * jnp.tanh(x / cap) if cap else x


def retention_log_decays(num_heads: int) -> jax.Array:
    """RetNet's fixed log decays per head, `log(1 - 2^(-5 - h))` for h = 0 .. N - 1."""
    return jnp.log1p(-(2.0 ** (-5.0 - jnp.arange(num_heads, dtype=jnp.float32))))


def _signed(run, q, k, v, g, S0, *, floor):
    """`run` (linear attention) with the decay `exp(g)` replaced by `2 exp(g) - 1` in
    (-1, 1] (`chunkwise.signed_decay`): the recurrence on `(sigma q, sigma k, log|a|)`, its
    final state times the last `sigma`."""
    log_abs, sigma = chunkwise.signed_decay(g, floor)
    s = sigma if g.ndim == 4 else sigma[..., None]  # [B, N, T, K or 1]
    o, S = run(q * s, k * s, v, log_abs, S0)
    return o, s[:, :, -1, :, None] * S


RECURRENCES = {
    "mlstm": chunkwise.mlstm,
    "gla": chunkwise.linear_attention,
    "mamba2": chunkwise.linear_attention,
    "gated_deltanet": chunkwise.gated_delta,
    "deltanet": chunkwise.gated_delta,
    "deltaproduct": chunkwise.delta_product,
    "retnet": chunkwise.linear_attention,
    "hgrn2": chunkwise.linear_attention,
    "rwkv7": chunkwise.dplr,  # its layer: `rwkv7.RWKV7TimeMix`
}
MATRIX_CELLS = tuple(RECURRENCES)
UNCONVOLVED = ("mlstm", "retnet", "hgrn2")  # the cells whose layer has no short convolution
# Cells whose transition `negative_eigenvalues` extends to [-1, 1] (Grazzi et al. 2025).
NEGATIVE_EIGENVALUE_CELLS = ("gla", "mamba2", "gated_deltanet", "deltanet", "deltaproduct")
