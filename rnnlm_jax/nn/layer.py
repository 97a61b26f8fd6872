"""`RNNLayer`: a stack of recurrent layers over a sequence, in either layout, with variable
lengths, one or two directions and any flax cell.

Shapes (T = steps, B = batch, D = input features, H = num_hiddens, L = num_layers,
K = 2 if bidirectional else 1):
  inputs `[T, B, D]` (or int ids `[T, B]` standing for their one-hot) with `time_major=True`,
  the default as in PyTorch and the book; `[B, T, D]` / `[B, T]` with `time_major=False`
  -> outputs `[T, B, K*H]` / `[B, T, K*H]`, both directions concatenated (forward first);
  the state `[L*K, B, H]` (LSTM: flax's pair `(c, h)` of them), row `l*K + k` for layer l and
  direction k, PyTorch's `h_n` order.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import flax.linen.module as flax_module
import jax
import jax.numpy as jnp
from flax.linen.recurrent import flip_sequences

from rnnlm_jax.nn import linear_cells, matrix_cells
from rnnlm_jax.nn.fast_layers import FAST_LAYERS, CudnnLSTM, resolve_impl
from rnnlm_jax.nn.initializers import initializers
from rnnlm_jax.nn.linear_cells import LINEAR_CELLS
from rnnlm_jax.nn.matrix_cells import (
    GATE_SOFT_CAP,
    MATRIX_CELLS,
    MatrixLayer,
    head_widths,
    matrix_state,
)
from rnnlm_jax.nn.rwkv7 import RWKV7TimeMix
from rnnlm_jax.nn.slstm import SLSTMLayer, slstm_state


class GRUCell(nn.GRUCell):
    """flax's `nn.GRUCell` (same equations, same parameter tree), whose `in` and `hn`
    biases may be drawn by their own `candidate_bias_init` (None: `bias_init`), as the
    `pytorch` initializer needs: PyTorch keeps `b_in` and `b_hn` apart, one draw each."""

    candidate_bias_init: Any = None

    @nn.compact
    def __call__(self, carry, inputs):
        h = carry
        dense = functools.partial(
            nn.Dense, features=h.shape[-1], dtype=self.dtype, param_dtype=self.param_dtype
        )
        dense_h = functools.partial(dense, use_bias=False, kernel_init=self.recurrent_kernel_init)
        dense_i = functools.partial(
            dense, use_bias=True, kernel_init=self.kernel_init, bias_init=self.bias_init
        )
        candidate = self.candidate_bias_init or self.bias_init
        r = self.gate_fn(dense_i(name="ir")(inputs) + dense_h(name="hr")(h))
        z = self.gate_fn(dense_i(name="iz")(inputs) + dense_h(name="hz")(h))
        n = self.activation_fn(
            dense_i(name="in", bias_init=candidate)(inputs)
            + r * dense_h(name="hn", use_bias=True, bias_init=candidate)(h)
        )
        new_h = (1.0 - z) * n + z * h
        return new_h, new_h


CELLS = {"rnn": nn.SimpleCell, "gru": GRUCell, "lstm": nn.LSTMCell}
NAMED_CELLS = (*CELLS, "slstm", *LINEAR_CELLS, *MATRIX_CELLS)  # every cell by name
# The chunkwise form's chunk per cell, the fastest forward + backward at T 1024 on 2 CPU
# cores (`benchmarks/recurrences.py matrix`, docs/recurrences.md).
CHUNK_SIZES = {"mlstm": 64, "gla": 32, "mamba2": 64, "gated_deltanet": 32, "deltanet": 32,
               "deltaproduct": 16, "retnet": 64, "hgrn2": 32, "rwkv7": 32}  # fmt: skip
PAIRED = ("lstm", "lru")  # cells whose state is a pair of [L, B, H] arrays
# Cells whose transition `negative_eigenvalues` widens to [-1, 1] (Grazzi et al. 2025).
NEGATIVE_EIGENVALUE_CELLS = (
    *matrix_cells.NEGATIVE_EIGENVALUE_CELLS,
    *linear_cells.NEGATIVE_EIGENVALUE_CELLS,
)

State = Any  # jax.Array [L*K, B, H], a pair of them for the LSTM, or another cell's carry tree


def zero_state(
    cell: str, num_layers: int, batch_size: int, num_hiddens: int, *, num_heads: int = 1,
    key_dim: int = 0, value_dim: int = 0, num_householder: int = 1,
) -> State:  # fmt: skip
    """Zeros `[L, B, H]`; for the LSTM a pair `(c, h)` of them, in flax's order; for the
    LRU the pair `(Re h, Im h)`; for the sLSTM `(c, n, m, h)`; for a matrix-state cell its
    carry with leading axes `[L, B]` (`matrix_cells.matrix_state`, from the heads' widths)."""
    if cell in MATRIX_CELLS:
        widths = head_widths(num_hiddens, num_heads, key_dim, value_dim)
        return matrix_state(cell, (num_layers, batch_size), *widths, num_householder)
    if cell == "slstm":
        return slstm_state((num_layers, batch_size), num_hiddens)
    h = jnp.zeros((num_layers, batch_size, num_hiddens), jnp.float32)
    return (h, h) if cell in PAIRED else h


def hgrn2_lower_bounds(logits: jax.Array) -> jax.Array:
    """HGRN2's forget-gate lower bounds per layer from `logits [L, D]`: the softmax over
    layers, summed up to each layer, less the first layer's (so 0 for the first layer and
    rising with depth)."""
    p = jax.nn.softmax(logits, axis=0)
    return jnp.cumsum(p, axis=0) - p[0]


def make_cell(cell: Callable, features: int, inits: dict, dtype: Any, name: str) -> nn.Module:
    """`cell(features=..., name=...)`, also given the layer's initializers and dtype where
    the cell has fields of those names and a `functools.partial` did not set them."""
    cls = cell.func if isinstance(cell, functools.partial) else cell
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    given = cell.keywords if isinstance(cell, functools.partial) else {}
    extra = {k: v for k, v in {**inits, "dtype": dtype}.items() if k in fields and k not in given}
    return cell(features=features, name=name, **extra)


def _scan_cell(cell: nn.Module, carry, inputs: jax.Array, unroll: int, need_carries: bool):
    """flax's cell under `nn.scan` over time-major inputs: `(carry, ys, carries or None)`."""

    def body(cell, carry, x):
        carry, y = cell(carry, x)
        return carry, ((carry, y) if need_carries else y)

    scan = nn.scan(
        body,
        variable_broadcast="params",
        split_rngs={"params": False},
        in_axes=0,
        out_axes=0,
        unroll=unroll,
    )
    carry, out = scan(cell, carry, inputs)
    return (carry, out[1], out[0]) if need_carries else (carry, out, None)


def _mask(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Zeros where `mask [T, B]` is False (the steps past each sequence's end)."""
    return jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - 2)), x, 0)


def _last_valid(carries, seq_lengths: jax.Array, initial):
    """Each sequence's carry at its last valid step (`initial` for an empty one)."""
    B = seq_lengths.shape[0]
    idx = jnp.maximum(seq_lengths - 1, 0)

    def pick(seq, init):
        last = seq[idx, jnp.arange(B)]
        keep = (seq_lengths > 0).reshape((B,) + (1,) * (last.ndim - 1))
        return jnp.where(keep, last, init)

    return jax.tree.map(pick, carries, initial)


def _flip(x, seq_lengths: jax.Array | None):
    """Reverses each sequence within its length (padding stays at the end), time-major."""
    return jax.tree.map(lambda a: flip_sequences(a, seq_lengths, 1, time_major=True), x)


DEPRECATED_FIELDS = ("custom_vjp", "lstm_impl")  # the previous release's, now `impl`


def _caller_level() -> int:
    """The `stacklevel` of the first frame outside flax, the dataclass `__init__` and this
    package's `nn` (the line that built the module), for `translate_deprecated`'s warning."""
    inside = (str(Path(flax_module.__file__).parents[1]), str(Path(__file__).parent))
    frame, level = sys._getframe(2), 2
    while frame is not None and (
        frame.f_code.co_filename.startswith(inside)
        or (frame.f_code.co_filename == "<string>" and frame.f_code.co_name == "__init__")
    ):  # flax's and the dataclass's generated __init__ too
        frame, level = frame.f_back, level + 1
    return level


def translate_deprecated(module) -> None:
    """`custom_vjp=` and `lstm_impl=` of the previous release as `impl` (with a
    `DeprecationWarning`), in a module's `__post_init__`: `custom_vjp=False` -> `flax`;
    `lstm_impl="scan"` -> `fast`, `"cudnn"` -> `cudnn`, `"auto"` -> `auto`."""
    custom_vjp, lstm_impl = module.custom_vjp, module.lstm_impl
    if custom_vjp is None and lstm_impl is None:
        return
    impl = module.impl
    if lstm_impl is not None:
        impl = {"scan": "fast", "cudnn": "cudnn"}.get(lstm_impl, "auto")
    if custom_vjp is False:
        impl = "flax"
    warnings.warn(
        f"{type(module).__name__}(custom_vjp=..., lstm_impl=...) is deprecated and will be "
        f"removed in the next release: use impl={impl!r}",
        DeprecationWarning,
        stacklevel=_caller_level(),
    )
    object.__setattr__(module, "impl", impl)
    object.__setattr__(module, "custom_vjp", None)  # a clone does not warn again
    object.__setattr__(module, "lstm_impl", None)


class RNNLayer(nn.Module):
    """A stack of `num_layers` recurrent layers; see the module docstring for shapes.

    Attributes:
      cell: `rnn` (h = tanh(x W_xh + h W_hh + b)), `gru` or `lstm` (flax's `SimpleCell`,
        `GRUCell`, `LSTMCell` parameters, run by the fast layers), or any flax recurrent
        cell class (e.g. `nn.OptimizedLSTMCell`, your own `nn.RNNCellBase`), or a
        `functools.partial` of one: called with `features=num_hiddens` (and the layer's
        initializers and dtype where it has those fields), run under `nn.scan`; or one
        of the recurrences trained in parallel over time, `mingru`, `minlstm`, `rglru`,
        `lru` (`linear_cells`; the LRU's state is the pair `(Re h, Im h)`), run by `scan`;
        or xLSTM's `slstm` (`slstm`: exponential gating, heads, its state `(c, n, m, h)`);
        or a matrix-state recurrence, `mlstm`, `gla`, `mamba2`, `gated_deltanet`
        (`matrix_cells`: multi-head, its carry a tuple, see there), run in `form`.
      num_hiddens: H, the width of every layer (each direction).
      num_layers: L; the output sequence of layer l is the input of layer l+1.
      vocab_size: V, needed when the inputs are token ids (they stand for their one-hot).
      bidirectional: a second, reversed pass per layer (parameters `layer_{l}_reverse`),
        its outputs concatenated after the forward ones (flax's `nn.Bidirectional`).
      time_major: inputs and outputs `[T, B, ...]` (default) or `[B, T, ...]` (False).
      initializer, init_scale: see `initializers.initializers`.
      impl: what runs the recurrence (`fast_layers.resolve_impl`), the same parameters and
        results (to float tolerance) whichever: `fast`, for the three named cells, the fast
        layers of `fast_layers` (input projection out of the time loop, one fused matmul
        per step, hand-written backward pass); `flax`, flax's cells under `nn.scan` and
        `jax.grad` (needed for forward-mode autodiff such as `jax.jvp`); `cudnn`, for
        `lstm`, `fast_layers.CudnnLSTM` (one cuDNN call per layer and direction; CUDA
        only; `seq_lengths` and `return_all_layers` run `fast`); `auto` (default): cuDNN
        for the LSTM on a CUDA GPU with float32 matmuls, else `fast`.
      dropout: rate of dropout on each layer's outputs but the last (as PyTorch's
        `nn.RNN(dropout=...)`); an independent mask per layer, time step, sequence and unit.
      scan: for the linear cells, `associative` (`jax.lax.associative_scan`),
        `sequential` (`jax.lax.scan`), `chunked` (`linear_scan.chunked_scan`) or `auto`
        (`linear_scan.resolve_scan`).
      num_heads: the RG-LRU's gates' diagonal blocks; the sLSTM's recurrent weights'
        blocks; a matrix-state cell's heads.
      key_dim, value_dim: a matrix-state cell's key and value widths per head (0: H /
        num_heads).
      form: how a matrix-state cell runs over time: `recurrent` (step by step),
        `chunkwise` (chunks of `chunk_size`), `parallel` (one chunk of T) or `auto`
        (`chunkwise.resolve_form`: recurrent for one step, parallel up to a chunk).
      chunk_size: the chunkwise form's chunk (0: the cell's measured default,
        `CHUNK_SIZES`); one longer than T runs as T.
      negative_eigenvalues: gla, mamba2, gated_deltanet, mingru, minlstm: the transition's
        eigenvalues in [-1, 1] instead of [0, 1] (Grazzi et al. 2025; `matrix_cells`,
        `linear_cells`).
      gate_soft_cap: the mLSTM's gate pre-activations soft-capped, `c tanh(x / c)` (xLSTM
        7B's, c = 15; 0: none).
      num_householder: deltaproduct's Householder updates per token (n_h >= 1).
      remat: `none` or `block` (each layer of a parallel-in-time or matrix-state cell
        recomputed in the backward pass from its input); `RNNModel` also takes `chunk`.
      unroll: time steps per loop iteration of the compiled scan.
      dtype: dtype of the matmul operands; parameters, carries and sums stay float32.
    """

    cell: str | Callable = "rnn"
    num_hiddens: int = 256
    num_layers: int = 1
    vocab_size: int | None = None
    dropout: float = 0.0
    initializer: str = "normal"
    init_scale: float = 0.01
    impl: str = "auto"
    scan: str = "auto"
    num_heads: int = 1
    key_dim: int = 0
    value_dim: int = 0
    form: str = "auto"
    chunk_size: int = 0
    negative_eigenvalues: bool = False
    gate_soft_cap: float = GATE_SOFT_CAP
    num_householder: int = 1
    remat: str = "none"
    unroll: int = 1
    dtype: Any = jnp.float32
    bidirectional: bool = False
    time_major: bool = True

    custom_vjp: bool | None = None  # deprecated: impl
    lstm_impl: str | None = None  # deprecated: impl

    def __post_init__(self):
        translate_deprecated(self)
        # Made inside a method of an unbound module (your model's `begin_state(B)` called
        # directly, as `RNNLayer(...).begin_state(B)`), there is no scope to attach to:
        # be a module of its own then, rather than fail in flax with a bare AssertionError.
        if self.parent is flax_module._unspecified_parent:
            context = flax_module._context.module_stack[-1]
            if isinstance(context, nn.Module) and context.scope is None:
                object.__setattr__(self, "parent", None)
        super().__post_init__()

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        state: State | None = None,
        deterministic: bool = True,
        *,
        seq_lengths: jax.Array | None = None,
        return_all_layers: bool = False,
        lower_bound: jax.Array | None = None,
    ) -> tuple[Any, State]:
        """Runs the stack over a batch of sequences.

        Args:
          inputs: float `[T, B, D]` or int ids `[T, B]` (time-major), or `[B, T, D]` /
            `[B, T]` with `time_major=False`.
          state: the initial state `[L*K, B, H]` (LSTM: a pair `(c, h)`), e.g.
            `begin_state(B)`; None starts from zeros.
          deterministic: False applies dropout (needs the `dropout` rng).
          seq_lengths: int `[B]`, the number of valid steps of each right-padded sequence:
            outputs past a sequence's end are zero and the final state is its state at its
            last valid step (the initial state for length 0); the reverse direction reads
            each sequence backwards from its last valid step.
          return_all_layers: return every layer's sequence instead of the last layer's.
          lower_bound: hgrn2 in a residual block: the forget gates' lower bound `[N K]` the
            model gives this layer (HGRN2's, shared over the layers); a stack of hgrn2
            layers keeps its own (`lower_bounds`).

        Returns:
          `(outputs, state)`: the last layer's hidden states `[T, B, K*H]` (float32;
          `[B, T, K*H]` with `time_major=False`) and the final state, shaped like `state`.
          With `return_all_layers`, outputs is every layer's carry at every step, stacked,
          `[L, T, B, K*H]` (`[L, B, T, K*H]` with `time_major=False`; the LSTM: a pair
          `(cs, hs)` of them, the cell states over time too), zero past each sequence's end.
        """
        if self.remat not in ("none", "block"):
            raise ValueError(
                f"RNNLayer: remat={self.remat!r}; expected 'none' or 'block' (RNNModel's "
                "remat='chunk' recomputes it per segment of time)"
            )
        named = isinstance(self.cell, str)
        if named and self.cell not in NAMED_CELLS:
            raise ValueError(f"unknown cell {self.cell!r}; expected one of {NAMED_CELLS}")
        if self.negative_eigenvalues and self.cell not in NEGATIVE_EIGENVALUE_CELLS:
            raise ValueError(
                f"negative_eigenvalues: cell {self.cell!r} has no decay or delta "
                f"transition to extend; cells {NEGATIVE_EIGENVALUE_CELLS}"
            )
        if inputs.ndim < 2:
            raise ValueError(f"RNNLayer: inputs of shape {inputs.shape} lack time and batch axes")
        x = inputs if self.time_major else jnp.swapaxes(inputs, 0, 1)
        T, B = x.shape[:2]
        self._check(inputs.shape, B, state, seq_lengths)
        mask = None if seq_lengths is None else jnp.arange(T)[:, None] < seq_lengths[None, :]
        matrix = self.cell in MATRIX_CELLS  # its carry stays put past a sequence's end
        need_carries = (seq_lengths is not None and not matrix) or return_all_layers
        directions = 2 if self.bidirectional else 1
        bounds = None
        if self.cell == "hgrn2" and lower_bound is None and self.num_layers > 1:
            N, K, _ = head_widths(self.num_hiddens, self.num_heads, self.key_dim, self.value_dim)
            shape = (self.num_layers, N * K)
            logits = self.param("lower_bounds", nn.initializers.zeros_init(), shape, jnp.float32)
            bounds = hgrn2_lower_bounds(logits)
        layers, final = [], []
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0:
                # One mask element per (t, b, unit): outside the scan, so no rng splitting.
                x = nn.Dropout(self.dropout, name=f"dropout_{layer}")(
                    x, deterministic=deterministic
                )
            ys, seqs = [], []
            for k in range(directions):
                name = f"layer_{layer}" + ("_reverse" if k else "")
                index = layer * directions + k
                carry0 = None if state is None else jax.tree.map(lambda s, i=index: s[i], state)
                xk = _flip(x, seq_lengths) if k else x
                if matrix:
                    bound = lower_bound if bounds is None or layer == 0 else bounds[layer]
                    carry, y = self._matrix(name, carry0, xk, B, mask, bound)
                    carries = y  # its outputs: the carry of every step would be [T, B, N, K, V]
                else:
                    carry, y, carries = self._direction(name, carry0, xk, B, need_carries)
                if seq_lengths is not None and matrix:
                    y = carries = _mask(y, mask)
                elif seq_lengths is not None:
                    initial = carry0 if carry0 is not None else jax.tree.map(jnp.zeros_like, carry)
                    carry = _last_valid(carries, seq_lengths, initial)
                    y = _mask(y, mask)
                    carries = jax.tree.map(lambda c: _mask(c, mask), carries)
                if k:
                    y, carries = _flip((y, carries), seq_lengths)
                ys.append(y)
                seqs.append(carries)
                final.append(carry)
            x = jnp.concatenate(ys, axis=-1) if directions == 2 else ys[0]
            if return_all_layers:
                layers.append(jax.tree.map(lambda *c: jnp.concatenate(c, axis=-1), *seqs))
        state = jax.tree.map(lambda *s: jnp.stack(s), *final)
        if return_all_layers:
            outputs = jax.tree.map(lambda *s: jnp.stack(s), *layers)  # [L, T, B, ...]
            if not self.time_major:
                outputs = jax.tree.map(lambda a: jnp.swapaxes(a, 1, 2), outputs)
            return outputs, state
        return (x if self.time_major else jnp.swapaxes(x, 0, 1)), state

    def _direction(self, name: str, carry, x: jax.Array, batch_size: int, need_carries: bool):
        """One layer in one direction over time-major `x`: `(carry, ys, carries or None)`,
        where `carries` is the carry at every step (computed only if `need_carries`)."""
        inits = initializers(self.initializer, self.init_scale, self.num_hiddens)
        H = self.num_hiddens
        if self.cell in LINEAR_CELLS:
            return self._linear(name, carry, x, batch_size, inits, need_carries)
        if self.cell == "slstm":
            if carry is None:
                carry = slstm_state((batch_size,), H)
            kernel = {"kernel_init": inits["kernel_init"]} if "kernel_init" in inits else {}
            layer_cls = nn.remat(SLSTMLayer) if self.remat == "block" else SLSTMLayer
            layer = layer_cls(H, self.vocab_size, self.num_heads, unroll=self.unroll,
                              dtype=self.dtype, name=name, **kernel)  # fmt: skip
            carry, ys, carries = layer(carry, x)
            return carry, ys, (carries if need_carries else None)
        impl = resolve_impl(self.impl, self.cell, self.dtype)
        if impl != "flax":
            if carry is None:
                carry = jax.tree.map(lambda s: s[0], zero_state(self.cell, 1, batch_size, H))
            if self.cell == "lstm":
                if impl == "cudnn" and not need_carries:
                    carry, ys = CudnnLSTM(H, self.vocab_size, name=name, **inits)(carry, x)
                    return carry, ys, None
            lstm = {"return_cell_states": True} if self.cell == "lstm" else {}
            layer = FAST_LAYERS[self.cell](
                H, self.vocab_size, unroll=self.unroll, dtype=self.dtype, name=name, **inits, **lstm
            )
            carry, seq = layer(carry, x)  # seq: hs, or the LSTM's (cs, hs)
            return carry, (seq[1] if lstm else seq), seq
        cell_cls = CELLS[self.cell] if isinstance(self.cell, str) else self.cell
        cell = make_cell(cell_cls, H, inits, self.dtype, name)
        if jnp.issubdtype(x.dtype, jnp.integer):
            if self.vocab_size is None:
                raise ValueError("token-id inputs need the layer's vocab_size")
            x = jax.nn.one_hot(x, self.vocab_size, dtype=self.dtype)
        if carry is None:
            carry = jax.tree.map(
                jnp.zeros_like, cell.initialize_carry(jax.random.key(0), x.shape[1:])
            )
        return _scan_cell(cell, carry, x, self.unroll, need_carries)

    def _matrix(self, name, carry, x, batch_size, mask, lower_bound=None):
        """A layer of mLSTM, GLA, Mamba-2 or Gated DeltaNet (`matrix_cells`):
        `(carry, ys)`, the carry at each sequence's end."""
        heads = {"num_heads": self.num_heads, "key_dim": self.key_dim, "value_dim": self.value_dim,
                 "num_householder": self.num_householder}  # fmt: skip
        if carry is None:
            zero = zero_state(self.cell, 1, batch_size, self.num_hiddens, **heads)
            carry = jax.tree.map(lambda s: s[0], zero)
        inits = initializers(self.initializer, self.init_scale, self.num_hiddens)
        kernel = {"kernel_init": inits["kernel_init"]} if "kernel_init" in inits else {}
        chunk = self.chunk_size or CHUNK_SIZES[self.cell]
        if self.cell == "rwkv7":
            if self.key_dim or self.value_dim:
                raise ValueError("rwkv7's heads are num_hiddens / num_heads wide: leave key_dim "
                                 "and value_dim at 0")  # fmt: skip
            layer_cls = nn.remat(RWKV7TimeMix) if self.remat == "block" else RWKV7TimeMix
            layer = layer_cls(self.num_hiddens, self.num_heads, self.form, chunk, dtype=self.dtype,
                              name=name, **kernel)  # fmt: skip
            return layer(carry, x, mask)
        layer_cls = nn.remat(MatrixLayer) if self.remat == "block" else MatrixLayer
        layer = layer_cls(
            self.cell, self.num_hiddens, self.vocab_size, form=self.form, chunk_size=chunk,
            negative_eigenvalues=self.negative_eigenvalues, gate_soft_cap=self.gate_soft_cap,
            dtype=self.dtype, name=name, **heads, **kernel,
        )  # fmt: skip
        return layer(carry, x, mask, lower_bound)

    def _linear(self, name, carry, x, batch_size, inits, need_carries):
        """A layer of minGRU, minLSTM, RG-LRU or LRU (`linear_cells`), run by `scan`."""
        if carry is None:
            carry = jax.tree.map(lambda s: s[0], zero_state(self.cell, 1, batch_size,
                                                            self.num_hiddens))  # fmt: skip
        kwargs = {k: v for k, v in inits.items() if k in ("kernel_init", "bias_init")}
        if self.cell == "rglru":
            kwargs["num_heads"] = self.num_heads
        if self.negative_eigenvalues:
            kwargs["negative_eigenvalues"] = True
        layer_cls = LINEAR_CELLS[self.cell]
        if self.remat == "block":
            layer_cls = nn.remat(layer_cls)
        layer = layer_cls(
            self.num_hiddens, self.vocab_size, scan=self.scan, unroll=self.unroll,
            dtype=self.dtype, name=name, **kwargs,
        )  # fmt: skip
        carry, ys, carries = layer(carry, x)
        return carry, ys, (carries if need_carries else None)

    def _check(self, shape, batch_size: int, state, seq_lengths) -> None:
        """One-line errors for a state or `seq_lengths` that does not fit the inputs."""
        layout = "[T, B, ...] (time_major=True)" if self.time_major else "[B, T, ...]"
        rows = self.num_layers * (2 if self.bidirectional else 1)
        for leaf in jax.tree.leaves(state):
            if leaf.ndim < 2 or leaf.shape[0] != rows or leaf.shape[1] != batch_size:
                raise ValueError(
                    f"RNNLayer: the state has shape {tuple(leaf.shape)} but inputs of shape "
                    f"{tuple(shape)}, read as {layout}, need [{rows}, {batch_size}, ...] "
                    f"(layers x directions, batch); is time_major={self.time_major} right?"
                )
        if seq_lengths is not None and tuple(seq_lengths.shape) != (batch_size,):
            raise ValueError(
                f"RNNLayer: seq_lengths has shape {tuple(seq_lengths.shape)} but inputs of shape "
                f"{tuple(shape)}, read as {layout}, have batch size {batch_size}"
            )

    @nn.nowrap
    def begin_state(self, batch_size: int) -> State:
        """Zeros `[L*K, B, H]` (the LSTM: a pair `(c, h)`); for another cell class, its
        `initialize_carry` for inputs of width H, zeroed and stacked."""
        rows = self.num_layers * (2 if self.bidirectional else 1)
        if isinstance(self.cell, str):
            return zero_state(self.cell, rows, batch_size, self.num_hiddens,
                              num_heads=self.num_heads, key_dim=self.key_dim,
                              value_dim=self.value_dim,
                              num_householder=self.num_householder)  # fmt: skip
        cell = make_cell(self.cell, self.num_hiddens, {}, self.dtype, None)
        carry = cell.initialize_carry(jax.random.key(0), (batch_size, self.num_hiddens))
        return jax.tree.map(lambda x: jnp.zeros((rows, *x.shape), x.dtype), carry)
