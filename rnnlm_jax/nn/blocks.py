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

from rnnlm_jax.nn.attention import Attention, attention_state
from rnnlm_jax.nn.conv import CONV_WIDTH, Conv1D, torch_conv_init  # noqa: F401 (blocks.Conv1D)
from rnnlm_jax.nn.layer import CHUNK_SIZES, NAMED_CELLS, RNNLayer, zero_state
from rnnlm_jax.nn.linear_cells import RGLRU
from rnnlm_jax.nn.slstm import SLSTMBlock, slstm_block_state
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


class GPTMLP(nn.Module):
    """nanoGPT's MLP: `W_proj gelu(W_fc x)`, width 4H, exact GELU, no biases."""

    kernel_init: Any = nn.initializers.lecun_normal()
    out_init: Any = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        H = x.shape[-1]
        h = nn.Dense(4 * H, use_bias=False, dtype=self.dtype, kernel_init=self.kernel_init,
                     name="fc")(x)  # fmt: skip
        return nn.Dense(H, use_bias=False, dtype=self.dtype, name="proj",
                        kernel_init=self.out_init or self.kernel_init)(
            jax.nn.gelu(h, approximate=False))  # fmt: skip


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
    conv_width: int = 0, attention_window: int = 256, **heads,
):  # fmt: skip
    """The zero state of `num_layers` residual blocks: the cell's `[L, B, H]` (a pair for
    the LSTM and the LRU); for `rglru`, `(h [L, B, H], conv [L, B, 3, H])`; for a
    matrix-state cell its carry (`heads`: `num_heads`, `key_dim`, `value_dim`); for
    `attention`, `attention.attention_state` (its window of keys and values); for
    `block="xlstm"`, `xlstm_block.xlstm_state` (`slstm`: `slstm.slstm_block_state`). With
    `conv_width` w > 0: `(the cell's, window [L, B, w - 1, H])`."""

    def window(width):
        return jnp.zeros((num_layers, batch_size, width - 1, num_hiddens), jnp.float32)

    prefix = (num_layers, batch_size)
    if block == "xlstm" and cell == "slstm":
        return slstm_block_state(prefix, num_hiddens)
    if block == "xlstm":
        return xlstm_state(prefix, num_hiddens, heads.get("num_heads", 1))
    if cell == "attention":
        state = attention_state(prefix, num_hiddens, heads.get("num_heads", 1), attention_window)
        return (state, window(conv_width)) if conv_width else state
    if cell == "rglru":
        return zero_state(cell, num_layers, batch_size, num_hiddens), window(CONV_WIDTH)
    state = zero_state(cell, num_layers, batch_size, num_hiddens, **heads)
    return (state, window(conv_width)) if conv_width else state


MIXERS = ("attention", *NAMED_CELLS)  # what a residual block may mix with


def block_mixers(cell: str, mixers: str, num_layers: int) -> tuple[str, ...]:
    """Each block's mixer: `cell` for every block, or the pattern `mixers` ("gla,attention",
    "mlstm*7,slstm": `name*k` repeats a name k times) repeated over the `num_layers` blocks
    (the last repeat cut short)."""
    if not mixers:
        return (cell,) * num_layers
    pattern = []
    for entry in (e.strip() for e in mixers.split(",")):
        name, _, times = entry.partition("*")
        if name not in MIXERS:
            raise ValueError(f"mixers={mixers!r} names {name!r}, not a mixer; expected some of "
                             f"{MIXERS} (name*k repeats one)")  # fmt: skip
        if times and not (times.isdigit() and int(times) >= 1):
            raise ValueError(f"mixers={mixers!r}: {entry!r} repeats a mixer {times!r} times; "
                             "expected name*k with k >= 1")  # fmt: skip
        pattern += [name] * (int(times) if times else 1)
    if len(pattern) > num_layers:
        raise ValueError(
            f"mixers={mixers!r} names {len(pattern)} blocks' mixers but "
            f"num_layers={num_layers}: raise num_layers or shorten the pattern"
        )
    return tuple(pattern[i % len(pattern)] for i in range(num_layers))


# The cells whose own layer or block convolves its input already: no `conv_width` for them.
OWN_CONV = ("rglru", "gla", "mamba2", "gated_deltanet", "deltanet", "deltaproduct")


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
    xLSTM's mLSTM block instead (`xlstm_block`; cell mlstm, no MLP), or with cell `slstm`
    xLSTM's sLSTM block (`slstm.SLSTMBlock`). `kind="gpt"`: nanoGPT's block (LayerNorm,
    attention, LayerNorm, an MLP of width 4H with exact GELU, no biases). `conv_width` > 0:
    the recurrence's input convolved and added to itself (module docstring). Cell
    `attention`: causal softmax attention over a window of `attention_window` steps
    (`attention.Attention`; `positions` rotary or none) in the recurrence's place;
    `learned_positions` > 0 (nanoGPT's, the first block only): a table of that many learned
    position embeddings added to the stream first, at the steps the state has counted."""

    cell: str
    mlp_expansion: int = 3
    dropout: float = 0.0
    layer: dict | None = None  # RNNLayer's fields (initializer, impl, scan, num_heads, ...)
    kernel_init: Any = nn.initializers.lecun_normal()
    dtype: Any = jnp.float32
    kind: str = "residual"  # or "xlstm", "gpt"
    conv_width: int = 0
    attention_window: int = 256
    positions: str = "rotary"
    learned_positions: int = 0
    out_init: Any = None  # attention's and the gpt MLP's output projections (None: kernel_init)

    @nn.compact
    def __call__(self, x, state, deterministic: bool = True, lower_bound=None):
        H = x.shape[-1]
        layer = dict(self.layer or {})
        drop = nn.Dropout(self.dropout)
        if self.learned_positions:
            position = (state[0] if self.conv_width else state)[3]  # the attention's count
            wpe = self.param("wpe", self.kernel_init, (self.learned_positions, H), jnp.float32)
            steps = jnp.minimum(position[None, :] + jnp.arange(x.shape[0])[:, None],
                                self.learned_positions - 1)  # fmt: skip
            x = x + wpe[steps]
        if self.kind == "xlstm" and self.cell == "slstm":
            # its two residual branches inside it, without dropout
            return SLSTMBlock(layer.get("num_heads", 1), self.kernel_init, layer.get("unroll", 1),
                              self.dtype, name="slstm_block")(x, state)  # fmt: skip
        if self.kind == "xlstm":
            h = nn.LayerNorm(epsilon=1e-5, use_bias=False, name="norm")(x)  # xLSTM's
            h, state = XLSTMRecurrence(
                layer.get("num_heads", 1), layer.get("form", "auto"),
                layer.get("chunk_size") or CHUNK_SIZES["mlstm"], self.kernel_init, self.dtype,
                name="recurrence",
            )(state, h)  # fmt: skip
            return x + drop(h, deterministic=deterministic), state
        gpt = self.kind == "gpt"
        norm = (lambda name: nn.LayerNorm(epsilon=1e-5, use_bias=False, name=name)) if gpt else (
            lambda name: nn.RMSNorm(name=name))  # fmt: skip
        h = norm("temporal_norm")(x)
        if self.conv_width:
            check_conv_width(self.conv_width, self.cell, self.kind)
            state, window = state
            c, window = Conv1D(self.conv_width, torch_conv_init, name="conv_1d")(window, h)
            h = h + c
        if self.cell == "attention":
            h, state = Attention(
                layer.get("num_heads", 1), self.attention_window, self.positions,
                self.kernel_init, self.out_init, self.dtype, name="attention",
            )(state, h)  # fmt: skip
        elif self.cell == "rglru":
            h, state = GriffinRecurrence(
                layer.get("num_heads", 1), self.kernel_init, layer.get("scan", "auto"),
                layer.get("unroll", 1), self.dtype, name="recurrence",
            )(state, h)  # fmt: skip
        else:
            rnn = RNNLayer(cell=self.cell, num_hiddens=H, num_layers=1, dtype=self.dtype,
                           name="recurrence", **layer)  # fmt: skip
            h, state = rnn(h, jax.tree.map(lambda s: s[None], state), lower_bound=lower_bound)
            state = jax.tree.map(lambda s: s[0], state)
        if self.conv_width:
            state = (state, window)
        x = x + drop(h, deterministic=deterministic)
        if gpt:
            m = GPTMLP(self.kernel_init, self.out_init, self.dtype, name="mlp")(norm("mlp_norm")(x))
        else:
            m = GatedMLP(self.mlp_expansion, self.kernel_init, self.dtype, name="mlp")(
                norm("mlp_norm")(x)
            )
        return x + drop(m, deterministic=deterministic), state
