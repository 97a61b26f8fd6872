"""Residual blocks (`block="residual"`): a pre-norm recurrence, then a pre-norm gated MLP, each
added to the residual stream, as in Griffin (De et al. 2024) and the minGRU paper's
language models; `block="xlstm"`: xLSTM's mLSTM blocks instead (`xlstm_block`).

  x = x + Recurrence(RMSNorm(x));  x = x + MLP(RMSNorm(x))
  MLP(x) = W_down (gelu(W_gate x) * W_up x)                       (width H -> eH -> H)

With `conv_width = w > 0` the recurrence reads `u + Conv1D_w(u)`, `u = RMSNorm(x)`: a causal
depthwise convolution over the last w inputs (PyTorch's initialisation), added to them, so
each step sees its few predecessors before the recurrence mixes them; its window of `w - 1`
inputs is carried with the state.

The recurrence is one `RNNLayer` layer of any cell, except `rglru`, which runs Griffin's
recurrent block as recurrentgemma's `RecurrentBlock` defines it (`GriffinRecurrence`):
  y = gelu(W_y x);  u = RG-LRU(Conv1D_4(W_x x));  out = W_out (u * y)
whose state is the RG-LRU's `h [B, H]` and the convolution's last 3 inputs `[B, 3, H]`.
Everything is time-major `[T, B, H]`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnnlm_jax.nn.conv import CONV_WIDTH, Conv1D, torch_conv_init  # noqa: F401 (blocks.Conv1D)
from rnnlm_jax.nn.layer import CHUNK_SIZES, RNNLayer, zero_state
from rnnlm_jax.nn.linear_cells import RGLRU
from rnnlm_jax.nn.xlstm_block import XLSTMRecurrence, xlstm_state


class GatedMLP(nn.Module):
    """`W_down (gelu(W_gate x) * W_up x)`, hidden width `expansion * H`."""

    expansion: int
    kernel_init: Any = nn.initializers.lecun_normal()
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        H = x.shape[-1]

        def dense(n, name):
            return nn.Dense(n, dtype=self.dtype, kernel_init=self.kernel_init, name=name)

        gate, up = jnp.split(dense(2 * self.expansion * H, "up")(x), 2, axis=-1)
        return dense(H, "down")(jax.nn.gelu(gate) * up)


class GriffinRecurrence(nn.Module):
    """Griffin's recurrent block of width H: `((h, conv), x [T, B, H]) -> (out, (h, conv))`."""

    num_heads: int = 1
    kernel_init: Any = nn.initializers.lecun_normal()
    scan: str = "auto"
    unroll: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, state, x):
        H = x.shape[-1]
        h0, conv = state

        def dense(name):
            return nn.Dense(H, dtype=self.dtype, kernel_init=self.kernel_init, name=name)

        y = jax.nn.gelu(dense("linear_y")(x))
        u, conv = Conv1D(name="conv_1d")(conv, dense("linear_x")(x))
        hs = RGLRU(H, self.num_heads, scan=self.scan, unroll=self.unroll, name="rg_lru")(h0, u)
        return dense("linear_out")(hs * y), (hs[-1], conv)


def block_state(
    cell: str, num_layers: int, batch_size: int, num_hiddens: int, block: str = "residual",
    conv_width: int = 0, **heads,
):  # fmt: skip
    """The zero state of `num_layers` residual blocks: the cell's `[L, B, H]` (a pair for
    the LSTM and the LRU); for `rglru`, `(h [L, B, H], conv [L, B, 3, H])`; for a
    matrix-state cell its carry (`heads`: `num_heads`, `key_dim`, `value_dim`); for
    `block="xlstm"`, `xlstm_block.xlstm_state`. With `conv_width` w > 0: `(the cell's,
    window [L, B, w - 1, H])`."""

    def window(width):
        return jnp.zeros((num_layers, batch_size, width - 1, num_hiddens), jnp.float32)

    if block == "xlstm":
        return xlstm_state((num_layers, batch_size), num_hiddens, heads.get("num_heads", 1))
    if cell == "rglru":
        return zero_state(cell, num_layers, batch_size, num_hiddens), window(CONV_WIDTH)
    state = zero_state(cell, num_layers, batch_size, num_hiddens, **heads)
    return (state, window(conv_width)) if conv_width else state


# The cells whose own layer or block convolves its input already: no `conv_width` for them.
OWN_CONV = ("rglru", "gla", "mamba2", "gated_deltanet")


def check_conv_width(conv_width: int, cell: str, block: str) -> None:
    """ValueError unless `conv_width` fits the blocks of `cell`."""
    if conv_width < 0:
        raise ValueError(f"conv_width must be >= 0, not {conv_width}")
    if conv_width and block != "residual":
        raise ValueError(f"conv_width={conv_width} convolves a residual block's input: it "
                         f"needs block='residual', not {block!r}")  # fmt: skip
    if conv_width and cell in OWN_CONV:
        raise ValueError(f"conv_width={conv_width}: cell {cell!r} convolves its input "
                         f"already (width {CONV_WIDTH}); leave conv_width at 0")  # fmt: skip


class ResidualBlock(nn.Module):
    """One residual block (see the module docstring): `(x [T, B, H], state) -> (x, state)`
    with the state of one layer (`block_state` without its leading axis). `kind="xlstm"`:
    xLSTM's mLSTM block instead (`xlstm_block`; cell mlstm, no MLP). `conv_width` > 0:
    the recurrence's input convolved and added to itself (module docstring)."""

    cell: str
    mlp_expansion: int = 3
    dropout: float = 0.0
    layer: dict | None = None  # RNNLayer's fields (initializer, impl, scan, num_heads, ...)
    kernel_init: Any = nn.initializers.lecun_normal()
    dtype: Any = jnp.float32
    kind: str = "residual"  # or "xlstm"
    conv_width: int = 0

    @nn.compact
    def __call__(self, x, state, deterministic: bool = True):
        H = x.shape[-1]
        layer = dict(self.layer or {})
        drop = nn.Dropout(self.dropout)
        if self.kind == "xlstm":
            h = nn.LayerNorm(epsilon=1e-5, use_bias=False, name="norm")(x)  # xLSTM's
            h, state = XLSTMRecurrence(
                layer.get("num_heads", 1), layer.get("form", "auto"),
                layer.get("chunk_size") or CHUNK_SIZES["mlstm"], self.kernel_init, self.dtype,
                name="recurrence",
            )(state, h)  # fmt: skip
            return x + drop(h, deterministic=deterministic), state
        h = nn.RMSNorm(name="temporal_norm")(x)
        if self.conv_width:
            check_conv_width(self.conv_width, self.cell, self.kind)
            state, window = state
            c, window = Conv1D(self.conv_width, torch_conv_init, name="conv_1d")(window, h)
            h = h + c
        if self.cell == "rglru":
            h, state = GriffinRecurrence(
                layer.get("num_heads", 1), self.kernel_init, layer.get("scan", "auto"),
                layer.get("unroll", 1), self.dtype, name="recurrence",
            )(state, h)  # fmt: skip
        else:
            rnn = RNNLayer(cell=self.cell, num_hiddens=H, num_layers=1, dtype=self.dtype,
                           name="recurrence", **layer)  # fmt: skip
            h, state = rnn(h, jax.tree.map(lambda s: s[None], state))
            state = jax.tree.map(lambda s: s[0], state)
        if self.conv_width:
            state = (state, window)
        x = x + drop(h, deterministic=deterministic)
        m = GatedMLP(self.mlp_expansion, self.kernel_init, self.dtype, name="mlp")(
            nn.RMSNorm(name="mlp_norm")(x)
        )
        return x + drop(m, deterministic=deterministic), state
