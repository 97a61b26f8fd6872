"""xLSTM's mLSTM block (Beck et al. 2024, the "pre up-projection" block of section 2.4 and
appendix B), `block="xlstm"`: the residual stream adds

  [x_m, z] = W_up LayerNorm(x)                         (width H -> 2 * 2H, proj. factor 2)
  c = SiLU(Conv1D_4(x_m))                              (causal, its window carried)
  q, k = Headwise(c), v = Headwise(x_m)                (block-diagonal, blocks of 4 x 4)
  log i, f = W_i [q, k, v] + b_i, W_f [q, k, v] + b_f  (one gate per head)
  h = mLSTM(q, k / sqrt(K), v, log i, logsigmoid(f))   (`chunkwise.mlstm`, N heads of 2H / N)
  y = W_down ((LayerNorm_per_head(h) + skip * c) * SiLU(z))

with no MLP after it. The mLSTM is the residual block's (`matrix_cells`, xLSTM 7B's layer)
recurrence; this block differs around it: the up-projection, the convolution feeding q and
k, the headwise projections, gates read from q, k, v, the learnable skip and no MLP.

The state of one block: the mLSTM's `(C [B, N, K, K], n [B, N, K], m [B, N])` and the
convolution's window `[B, 3, 2H]`. Time-major `[T, B, H]` throughout.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnnlm_jax.nn import chunkwise
from rnnlm_jax.nn.conv import CONV_WIDTH, Conv1D, torch_conv_init
from rnnlm_jax.nn.matrix_cells import _heads
from rnnlm_jax.nn.recurrences import matmul

PROJ_FACTOR = 2  # the inner width, in multiples of H
HEADWISE_BLOCK = 4  # the q, k, v projections' diagonal blocks (xLSTM's qkv_proj_blocksize)


def xlstm_widths(num_hiddens: int, num_heads: int) -> tuple[int, int]:
    """`(inner width, head width)` of the block at width `num_hiddens`."""
    inner = PROJ_FACTOR * num_hiddens
    if num_heads < 1 or inner % num_heads or inner % HEADWISE_BLOCK:
        raise ValueError(f"num_heads={num_heads} must divide the xLSTM block's inner width "
                         f"{inner} (2 x num_hiddens, a multiple of {HEADWISE_BLOCK})")  # fmt: skip
    return inner, inner // num_heads


def xlstm_state(prefix: tuple, num_hiddens: int, num_heads: int):
    """The zero state with leading axes `prefix` (e.g. `(L, B)`): see the module docstring."""
    inner, K = xlstm_widths(num_hiddens, num_heads)
    zeros = lambda *shape: jnp.zeros(prefix + shape, jnp.float32)  # noqa: E731
    return (zeros(num_heads, K, K), zeros(num_heads, K), zeros(num_heads)), zeros(
        CONV_WIDTH - 1, inner
    )


class Headwise(nn.Module):
    """A block-diagonal projection of `[..., D]` with blocks of `HEADWISE_BLOCK`. Its kernel
    `[D / 4, 4, 4]` is drawn by the model's initializer, whose fan-in over it is D (as a
    dense D x D kernel's); xLSTM's own (normal, std sqrt(2 / (5 * 4)), 5x larger at D 256)
    trained worse on tiny Shakespeare (docs/recurrences.md)."""

    kernel_init: Any = nn.initializers.lecun_normal()
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        D, b = x.shape[-1], HEADWISE_BLOCK
        w = self.param("kernel", self.kernel_init, (D // b, b, b), jnp.float32)
        x = x.reshape(x.shape[:-1] + (D // b, b))
        y = jnp.einsum("...gi,gio->...go", x.astype(self.dtype), w.astype(self.dtype))
        return y.reshape(y.shape[:-2] + (D,)).astype(jnp.float32)


class XLSTMRecurrence(nn.Module):
    """The block's part inside the residual connection, LayerNorm excluded:
    `(state, x [T, B, H]) -> (y [T, B, H], state)` (see the module docstring)."""

    num_heads: int = 4
    form: str = "auto"
    chunk_size: int = 64
    kernel_init: Any = nn.initializers.lecun_normal()
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, state, x):
        T, B, H = x.shape
        N = self.num_heads
        inner, K = xlstm_widths(H, N)
        (C, n, m), window = state
        W_up = self.param("up", self.kernel_init, (H, 2 * inner), jnp.float32)
        x_m, z = jnp.split(matmul(x, W_up, self.dtype), 2, axis=-1)
        c, window = Conv1D(w_init=torch_conv_init, name="conv_1d")(window, x_m)
        c = jax.nn.silu(c)
        q = Headwise(self.kernel_init, self.dtype, name="q")(c)
        k = Headwise(self.kernel_init, self.dtype, name="k")(c)
        v = Headwise(self.kernel_init, self.dtype, name="v")(x_m)
        qkv = jnp.concatenate([q, k, v], axis=-1)
        W_g = self.param("gates", nn.initializers.zeros_init(), (3 * inner, 2 * N), jnp.float32)
        b_i = self.param("igate_bias", nn.initializers.normal(0.1), (N,), jnp.float32)
        b_f = self.param("fgate_bias", lambda *_: jnp.linspace(3.0, 6.0, N), (N,))
        gates = matmul(qkv, W_g, self.dtype) + jnp.concatenate([b_i, b_f])
        log_i, f = (g.transpose(1, 2, 0) for g in jnp.split(gates, 2, axis=-1))  # [B, N, T]
        h, (C, n, m) = chunkwise.mlstm(
            _heads(q, N), _heads(k, N) * K**-0.5, _heads(v, N), log_i, jax.nn.log_sigmoid(f),
            (C, n, m), form=self.form, chunk_size=self.chunk_size,
        )  # fmt: skip
        h = h.transpose(2, 0, 1, 3).reshape(T, B, inner)
        h = nn.GroupNorm(N, epsilon=1e-5, use_bias=False, reduction_axes=-1, name="head_norm")(h)
        h = (h + self.param("skip", nn.initializers.ones, (inner,)) * c) * jax.nn.silu(z)
        W_down = self.param("down", self.kernel_init, (inner, H), jnp.float32)
        return matmul(h, W_down, self.dtype), ((C, n, m), window)
