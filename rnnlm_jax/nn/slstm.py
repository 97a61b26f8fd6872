"""xLSTM's sLSTM (Beck et al. 2024): a scalar-memory LSTM with an exponential input gate, a
normaliser and a stabiliser, its recurrent weights block-diagonal over heads.

With the gates' pre-activations `[i~, f~, z~, o~] = W x_t + R h_{t-1} + b` (R block-diagonal:
each of N heads of width d = H / N sees only its own units of h):

  m_t = max(i~_t, log sigmoid(f~_t) + m_{t-1})      (i~_t alone while n_{t-1} = 0)
  i_t = exp(i~_t - m_t),  f_t = exp(log sigmoid(f~_t) + m_{t-1} - m_t)   (each at most 1)
  c_t = f_t c_{t-1} + i_t tanh(z~_t),  n_t = f_t n_{t-1} + i_t
  h_t = sigmoid(o~_t) c_t / n_t

as xlstm's vanilla `slstm_forward_pointwise` computes it; the state is `(c, n, m, h)`, each
`[B, H]`. Initialisation as xlstm's: the forget gate's bias falls within each head from 5 to
-7 (its `powerlaw_blockdependent` for the first block), the other biases 0; the recurrent
weights uniform in +-1/sqrt(H) (xlstm's `standard`; its default is zeros). The input
projection runs once for all steps outside the time loop; the loop holds one small matmul
per step.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnnlm_jax.nn.conv import CONV_WIDTH, Conv1D, torch_conv_init
from rnnlm_jax.nn.fast_layers import project_inputs
from rnnlm_jax.nn.recurrences import matmul

GATES = 4  # i, f, z, o


def slstm_state(prefix: tuple, H: int):
    """The zero state `(c, n, m, h)` with leading axes `prefix`, each `prefix + [H]`."""
    zeros = jnp.zeros(prefix + (H,), jnp.float32)
    return zeros, zeros, zeros, zeros


def forget_bias_init(num_heads: int):
    """xlstm's forget-gate bias for the first block: within each head of width d, unit j gets
    `5 - 12 (j / (d - 1)) ** 0.3`; the other gates' biases are 0. Layout `[4, H]`."""

    def init(key, shape, dtype=jnp.float32):
        H = shape[-1]
        d = H // num_heads
        ramp = jnp.arange(d) / max(d - 1, 1)
        f = jnp.tile(5.0 - 12.0 * ramp**0.3, num_heads)
        return jnp.zeros(shape, dtype).at[1].set(f.astype(dtype))

    return init


def symmetric_uniform(bound: float):
    """Uniform in [-bound, bound]."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def slstm_step(carry, pre):
    """One step of the pointwise recurrence (module docstring): `carry = (c, n, m, h)`,
    `pre` the gates' pre-activations `[B, 4, H]` with `R h` already added."""
    c, n, m, _ = carry
    i_raw, f_raw, z_raw, o_raw = (pre[:, g] for g in range(GATES))
    log_f_m = m + jax.nn.log_sigmoid(f_raw)
    m_new = jnp.where(n == 0.0, i_raw, jnp.maximum(i_raw, log_f_m))
    i = jnp.minimum(jnp.exp(i_raw - m_new), 1.0)
    f = jnp.minimum(jnp.exp(log_f_m - m_new), 1.0)
    c = f * c + i * jnp.tanh(z_raw)
    n = f * n + i
    h = jax.nn.sigmoid(o_raw) * c / n
    return c, n, m_new, h


class SLSTMLayer(nn.Module):
    """One sLSTM layer of width H (`features`): `(carry, x [T, B, D] or ids [T, B]) ->
    (carry, hs [T, B, H], carries)`, `carries` the state `(c, n, m, h)` at every step
    (`[T, B, H]` each). Parameters: `kernel [D, 4 H]` and `bias [4, H]` (gates i, f, z, o,
    each H wide), `recurrent_kernel [N, d, 4, d]`."""

    features: int
    vocab_size: int | None = None
    num_heads: int = 1
    kernel_init: Any = nn.initializers.lecun_normal()
    unroll: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, carry, x, gate_inputs=None):
        """`gate_inputs` (xLSTM's sLSTM block: its convolved input, `[T, B, D]`): what the
        input and forget gates read instead of `x`."""
        H, N = self.features, self.num_heads
        if N < 1 or H % N:
            raise ValueError(f"num_heads={N} must divide num_hiddens={H} (sLSTM heads)")
        d = H // N
        D = self.vocab_size if jnp.issubdtype(x.dtype, jnp.integer) else x.shape[-1]
        if D is None:
            raise ValueError("token-id inputs need the layer's vocab_size")
        W = self.param("kernel", self.kernel_init, (D, GATES * H), jnp.float32)
        b = self.param("bias", forget_bias_init(N), (GATES, H), jnp.float32)
        R = self.param("recurrent_kernel", symmetric_uniform(H**-0.5), (N, d, GATES, d),
                       jnp.float32)  # fmt: skip
        T, B = x.shape[:2]
        wx = project_inputs(x, W, b.reshape(-1), self.dtype).reshape(T, B, GATES, H)
        if gate_inputs is not None:  # i and f from the convolved input
            wif = project_inputs(gate_inputs, W[:, : 2 * H], b[:2].reshape(-1), self.dtype)
            wx = jnp.concatenate([wif.reshape(T, B, 2, H), wx[:, :, 2:]], axis=2)

        R = R.reshape(N, d, GATES * d)  # each head's block, its gates side by side

        def step(carry, wx_t):
            h = carry[3].reshape(B, N, 1, d)
            ry = matmul(h, R, self.dtype)  # [B, N, 1, 4 d]
            ry = ry.reshape(B, N, GATES, d).transpose(0, 2, 1, 3).reshape(B, GATES, H)
            carry = slstm_step(carry, wx_t + ry)
            return carry, carry

        carry, carries = jax.lax.scan(step, carry, wx, unroll=self.unroll)
        return carry, carries[3], carries


FFN_FACTOR = 1.3  # xLSTM's feed-forward width, in multiples of H, rounded up to
FFN_MULTIPLE = 64  # a multiple of this


def ffn_width(H: int) -> int:
    """xLSTM's gated feed-forward width at width H: 1.3 H rounded up to a multiple of 64."""
    return -(-int(FFN_FACTOR * H) // FFN_MULTIPLE) * FFN_MULTIPLE


def slstm_block_state(prefix: tuple, H: int):
    """The sLSTM block's zero state: the cell's `(c, n, m, h)` and the convolution's window
    `prefix + [3, H]`."""
    return slstm_state(prefix, H), jnp.zeros(prefix + (CONV_WIDTH - 1, H), jnp.float32)


class SLSTMBlock(nn.Module):
    """xLSTM's sLSTM block (Beck et al. 2024, the "post up-projection" block), `(x [T, B, H],
    state) -> (x, state)`:

      u = LayerNorm(x);  c = SiLU(Conv1D_4(u))           (its window carried)
      h = sLSTM(u; the input and forget gates read c)    (N heads)
      x = x + GroupNorm_per_head(h)
      x = x + W_down (gelu(W_gate v) * W_up v),  v = LayerNorm(x)   (width `ffn_width(H)`)

    Deviation: the gates' input projections are dense, where xLSTM's are block-diagonal per
    head (`LinearHeadwiseExpand`)."""

    num_heads: int = 4
    kernel_init: Any = nn.initializers.lecun_normal()
    unroll: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, state):
        H, N = x.shape[-1], self.num_heads
        cell_state, window = state
        u = nn.LayerNorm(epsilon=1e-5, use_bias=False, name="norm")(x)
        c, window = Conv1D(CONV_WIDTH, torch_conv_init, name="conv_1d")(window, u)
        layer = SLSTMLayer(H, None, N, self.kernel_init, self.unroll, self.dtype, name="slstm")
        cell_state, h, _ = layer(cell_state, u, jax.nn.silu(c))
        h = nn.GroupNorm(N, epsilon=1e-5, use_bias=False, reduction_axes=-1, name="group_norm")(h)
        x = x + h
        v = nn.LayerNorm(epsilon=1e-5, use_bias=False, name="ffn_norm")(x)
        dense = lambda n, name: nn.Dense(n, use_bias=False, dtype=self.dtype,  # noqa: E731
                                         kernel_init=self.kernel_init, name=name)  # fmt: skip
        gate, up = jnp.split(dense(2 * ffn_width(H), "up")(v), 2, axis=-1)
        return x + dense(H, "down")(jax.nn.gelu(gate) * up), (cell_state, window)
