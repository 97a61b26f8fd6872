"""RWKV-7's time mix (Peng et al. 2025, "RWKV-7 Goose"): the generalised delta rule with a
decay per key dimension and an in-context learning rate, around it the token shift and the
low-rank gate projections, as flash-linear-attention's `RWKV7Attention` computes them.

`(carry, x [T, B, H], mask=None) -> (carry, y [T, B, H])`, N heads of K = V = H / N:

  xx = x_{t-1} - x_t                          (the token shift; x_0 the carried last input)
  x_j = x + xx * mu_j   for j in r, w, k, v, a, g           (learned mixes)
  r, k, v = W_r x_r, W_k x_k, W_v x_v
  log w = -e^-1/2 sigmoid(LoRA_w(x_w))        (the decay per key dimension, in (0.545, 1))
  a = sigmoid(LoRA_a(x_a))                    (the in-context learning rate)
  g = LoRA_g(x_g)                             (sigmoid inside: the output gate)
  kk = unit(k * k_k) per head,  k = k * (1 + (a - 1) * k_a)
  S_t = diag(w_t) S_{t-1} - (kk_t a_t) (kk_t^T S_{t-1}) + k_t v_t^T,  o_t = S_t^T r_t
  y = W_o ((GroupNorm_N(o) + (r . k * r_k per head) v) * g)

LoRA(x) = B act(A x) + b (rank `low_rank(H)`, fla's sizes). The recurrence is
`chunkwise.dplr` (alpha = -kk, beta = kk a), in every form. The carry: `(S [B, N, K, V],
x_last [B, H])`. Not here: RWKV-7's value residual (v mixed with the first layer's), which
passes a tensor between layers.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnnlm_jax.nn import chunkwise
from rnnlm_jax.nn.recurrences import matmul

LOG_DECAY_FLOOR = -math.exp(-0.5)  # fla's: log w = -e^-1/2 sigmoid(.), so w > 0.545
MIXES = ("r", "w", "k", "v", "a", "g")


def low_rank(hidden: int, head_dim: int, scale: float) -> int:
    """fla's LoRA ranks: `scale sqrt(H)` (times head_dim / 64 for the decay and a), rounded to
    a multiple of 32, at least 32."""
    return max(32, int(round(scale * hidden**0.5 / 32) * 32))


class LoRA(nn.Module):
    """`B act(A x) + b`: a low-rank projection (fla's `LoRA`), initialised as RWKV-LM's:
    `A` zeros, `B` orthogonal scaled by 0.1 (so the gate starts at its bias, or at
    `B act(0)`, and learns through `B`)."""

    features: int
    rank: int
    activation: Any = None
    bias: bool = True
    bias_init: Any = nn.initializers.zeros_init()
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        A = self.param("A", nn.initializers.zeros_init(), (x.shape[-1], self.rank), jnp.float32)
        B = self.param("B", nn.initializers.orthogonal(0.1), (self.rank, self.features),
                       jnp.float32)  # fmt: skip
        h = matmul(x, A, self.dtype)
        h = self.activation(h) if self.activation else h
        y = matmul(h, B, self.dtype)
        if self.bias:
            y = y + self.param("b", self.bias_init, (self.features,), jnp.float32)
        return y


def _decay_bias(key, shape, dtype=jnp.float32):
    """Decays spread over the channels: the logit from -6 (w near 1) to 2 (w near 0.6)."""
    return jnp.linspace(-6.0, 2.0, shape[0], dtype=dtype)


class RWKV7TimeMix(nn.Module):
    """One RWKV-7 time-mix layer of width H (`features`); see the module docstring."""

    features: int
    num_heads: int = 1
    form: str = "auto"
    chunk_size: int = 32
    kernel_init: Any = nn.initializers.lecun_normal()
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, carry, x, mask=None):
        H, N = self.features, self.num_heads
        if N < 1 or H % N:
            raise ValueError(f"rwkv7: num_heads={N} must divide num_hiddens={H}")
        if jnp.issubdtype(x.dtype, jnp.integer) or x.shape[-1] != H:
            raise ValueError(f"rwkv7 shifts its inputs: it needs float inputs of width "
                             f"num_hiddens={H} (residual blocks), not {x.shape}")  # fmt: skip
        T, B = x.shape[:2]
        K = H // N
        S0, x_last = carry
        previous = jnp.concatenate([x_last[None].astype(x.dtype), x[:-1]])
        xx = previous - x
        mix = self.param("mix", nn.initializers.constant(0.5), (len(MIXES), H), jnp.float32)
        xr, xw, xk, xv, xa, xg = (x + xx * mix[i] for i in range(len(MIXES)))
        dense = lambda name: functools.partial(  # noqa: E731
            matmul, b=self.param(name, self.kernel_init, (H, H), jnp.float32), dtype=self.dtype
        )
        r, k, v = dense("r_proj")(xr), dense("k_proj")(xk), dense("v_proj")(xv)
        rank = functools.partial(low_rank, H, K)
        w = LOG_DECAY_FLOOR * jax.nn.sigmoid(
            LoRA(H, rank(2.5 * K / 64), jnp.tanh, bias_init=_decay_bias, dtype=self.dtype,
                 name="w_lora")(xw))  # fmt: skip
        a = jax.nn.sigmoid(LoRA(H, rank(2.5 * K / 64), dtype=self.dtype, name="a_lora")(xa))
        g = LoRA(H, rank(5.0), jax.nn.sigmoid, bias=False, dtype=self.dtype, name="g_lora")(xg)
        k_k = self.param("k_k", nn.initializers.constant(0.85), (H,), jnp.float32)
        k_a = self.param("k_a", nn.initializers.ones, (H,), jnp.float32)
        r_k = self.param("r_k", nn.initializers.constant(-0.04), (N, K), jnp.float32)
        heads = lambda z: z.reshape(T, B, N, K).transpose(1, 2, 0, 3)  # noqa: E731  [B, N, T, K]
        kk = heads(k * k_k)
        kk = kk * jax.lax.rsqrt(jnp.sum(kk * kk, -1, keepdims=True) + 1e-12)
        k = k * (1.0 + (a - 1.0) * k_a)
        r, w, k, a, v = heads(r), heads(w), heads(k), heads(a), heads(v)
        alpha, beta = -kk, kk * a
        if mask is not None:  # steps past the end: no write, decay 1, no correction
            keep = mask.T[:, None, :, None]  # [B, 1, T, 1]
            k, w, beta = (jnp.where(keep, z, 0.0) for z in (k, w, beta))
        o, S = chunkwise.dplr(r, k, v, alpha, beta, w, S0, self.form, self.chunk_size)
        # GroupNorm over each head (fla's eps: head_dim * 1e-5), then the bonus r.k r_k v.
        mean = o.mean(-1, keepdims=True)
        o = (o - mean) * jax.lax.rsqrt(((o - mean) ** 2).mean(-1, keepdims=True) + K * 1e-5)
        o = o * self.param("norm_scale", nn.initializers.ones, (N, 1, K), jnp.float32)
        o = o + self.param("norm_bias", nn.initializers.zeros_init(), (N, 1, K), jnp.float32)
        o = o + jnp.sum(r * k * r_k[:, None], -1, keepdims=True) * v
        o = o.transpose(2, 0, 1, 3).reshape(T, B, H) * g
        y = matmul(o, self.param("o_proj", self.kernel_init, (H, H), jnp.float32), self.dtype)
        if mask is None:
            x_last = x[-1]
        else:  # each row's last valid input (the carried one for length 0)
            lengths = mask.sum(axis=0)
            ext = jnp.concatenate([x_last[None].astype(x.dtype), x])
            x_last = ext[lengths, jnp.arange(B)]
        return (S, x_last.astype(jnp.float32)), y
