"""The recurrent language model: flax cells under `nn.scan`, stacked, with a Dense head.

Shapes (T = num_steps, B = batch size, V = vocab size, H = num_hiddens,
L = num_layers):
  token ids `[B, T]` --one-hot, time-major--> `[T, B, V]` --RNNLayer-->
  outputs `[T, B, H]` --Dense--> logits `[T * B, V]`, plus the final state
  `[L, B, H]` (LSTM: a pair `(c, h)` of them).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnnlm_jax.fast_layers import FAST_LAYERS, CudnnLSTM, resolve_lstm_impl

CELLS = {"rnn": nn.SimpleCell, "gru": nn.GRUCell, "lstm": nn.LSTMCell}
INITS = ("normal", "xavier", "flax", "pytorch", "uniform")

State = Any  # jax.Array [L, B, H], or a pair of them for the LSTM


def symmetric_uniform(bound: float):
    """An initializer drawing every element from U(-bound, bound)."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _sum_of_two(init):
    def summed(key, shape, dtype=jnp.float32):
        a, b = jax.random.split(key)
        return init(a, shape, dtype) + init(b, shape, dtype)

    return summed


def head_initializers(init: str, init_scale: float = 0.01, num_hiddens: int = 256):
    """The Dense head's `kernel_init` / `bias_init` for one `init` choice (PyTorch's
    `nn.Linear(num_hiddens, V)`: one U(-k, k) draw for its bias too)."""
    inits = initializers(init, init_scale, num_hiddens)
    head = {k: v for k, v in inits.items() if k in ("kernel_init", "bias_init")}
    if init == "pytorch":
        head["bias_init"] = symmetric_uniform(num_hiddens**-0.5)
    return head


def initializers(init: str, init_scale: float = 0.01, num_hiddens: int = 256) -> dict[str, Any]:
    """The kernel, recurrent-kernel and bias initializers for one `init` choice.

    `normal`: N(0, init_scale) weights and zero biases, what the book's
    MXNet `train_ch8` uses (and what gave its perplexity 1.2); `xavier`:
    Glorot-uniform weights, zero biases (the seed's own `initialize`);
    `flax`: flax's defaults (LeCun-normal input kernels, orthogonal
    recurrent kernels, zero biases); `pytorch`: PyTorch's default for
    `nn.RNN/GRU/LSTM` (the book's chapter 9 PyTorch results), every weight
    U(-k, k) with k = 1/sqrt(num_hiddens), and each recurrent bias the sum of
    two such draws, as PyTorch's `b_ih + b_hh` (flax's cells have one bias
    per gate; for the GRU's `n` gate PyTorch keeps two apart); `uniform`:
    every parameter U(-init_scale, init_scale) (Zaremba et al.'s recipe).
    The Dense head's are `head_initializers`.
    """
    zeros = nn.initializers.zeros_init()
    if init == "normal":
        w = nn.initializers.normal(stddev=init_scale)
        return dict(kernel_init=w, recurrent_kernel_init=w, bias_init=zeros)
    if init == "xavier":
        w = nn.initializers.xavier_uniform()
        return dict(kernel_init=w, recurrent_kernel_init=w, bias_init=zeros)
    if init == "flax":
        return {}
    if init == "uniform":
        u = symmetric_uniform(init_scale)
        return dict(kernel_init=u, recurrent_kernel_init=u, bias_init=u)
    if init == "pytorch":
        u = symmetric_uniform(num_hiddens**-0.5)
        return dict(kernel_init=u, recurrent_kernel_init=u, bias_init=_sum_of_two(u))
    raise ValueError(f"unknown init {init!r}; expected one of {INITS}")


def zero_state(cell: str, num_layers: int, batch_size: int, num_hiddens: int) -> State:
    """Zeros `[L, B, H]`; for the LSTM a pair `(c, h)` of them, in flax's order."""
    h = jnp.zeros((num_layers, batch_size, num_hiddens), jnp.float32)
    return (h, h) if cell == "lstm" else h


class RNNLayer(nn.Module):
    """A stack of `num_layers` recurrent layers, each an `nn.scan` of a cell over time.

    Attributes:
      cell: `rnn` (h = tanh(x W_xh + h W_hh + b)), `gru` or `lstm` (flax's cells).
      num_hiddens: H, the width of every layer.
      num_layers: L; the output sequence of layer l is the input of layer l+1.
      vocab_size: V, needed when the inputs are token ids (they stand for their one-hot).
      initializer, init_scale: see `initializers`.
      custom_vjp: use the fast layers of `fast_layers` (input projection out of the time
        loop, one fused matmul per step, hand-written backward pass); False runs flax's
        `nn.SimpleCell` / `nn.GRUCell` / `nn.LSTMCell` under `nn.scan` and `jax.grad` (same
        parameters, same results to float tolerance).
      lstm_impl: for `lstm`: `scan` (the above), `cudnn` (`fast_layers.CudnnLSTM`, one
        cuDNN call per layer; CUDA only) or `auto` (cuDNN on a CUDA device with float32
        matmuls, else `scan`). Same parameters either way.
      dropout: rate of dropout on each layer's outputs but the last (as PyTorch's
        `nn.RNN(dropout=...)`); an independent mask per layer, time step, sequence and unit.
      unroll: time steps per loop iteration of the compiled scan.
      dtype: dtype of the matmul operands; parameters, carries and sums stay float32.
    """

    cell: str = "rnn"
    num_hiddens: int = 256
    num_layers: int = 1
    vocab_size: int | None = None
    dropout: float = 0.0
    initializer: str = "normal"
    init_scale: float = 0.01
    custom_vjp: bool = True
    unroll: int = 1
    dtype: Any = jnp.float32
    lstm_impl: str = "auto"

    @nn.compact
    def __call__(
        self, inputs: jax.Array, state: State, deterministic: bool = True
    ) -> tuple[jax.Array, State]:
        """Runs the stack over a sequence.

        Args:
          inputs: `[T, B, D]` float inputs, or int token ids `[T, B]` standing for their
            one-hot `[T, B, vocab_size]` (time-major).
          state: `[L, B, H]` (LSTM: a pair `(c, h)` of them), e.g. `begin_state(B)`.
          deterministic: False applies dropout (needs the `dropout` rng).

        Returns:
          `(outputs, state)`: the last layer's hidden states `[T, B, H]` (float32) and the
          final state of every layer, shaped like `state`.
        """
        if self.cell not in CELLS:
            raise ValueError(f"unknown cell {self.cell!r}; expected one of {tuple(CELLS)}")
        inits = initializers(self.initializer, self.init_scale, self.num_hiddens)
        outputs, final = inputs, []
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0:
                # One mask element per (t, b, unit): outside the scan, so no rng splitting.
                outputs = nn.Dropout(self.dropout, name=f"dropout_{layer}")(
                    outputs, deterministic=deterministic
                )
            carry = jax.tree.map(lambda s, i=layer: s[i], state)
            name = f"layer_{layer}"
            if self.cell == "lstm" and resolve_lstm_impl(self.lstm_impl, self.dtype) == "cudnn":
                carry, outputs = CudnnLSTM(self.num_hiddens, self.vocab_size, name=name, **inits)(
                    carry, outputs
                )
            elif self.custom_vjp:
                carry, outputs = FAST_LAYERS[self.cell](
                    self.num_hiddens,
                    self.vocab_size,
                    unroll=self.unroll,
                    dtype=self.dtype,
                    name=name,
                    **inits,
                )(carry, outputs)
            else:
                if jnp.issubdtype(outputs.dtype, jnp.integer):
                    outputs = jax.nn.one_hot(outputs, self.vocab_size, dtype=self.dtype)
                scan_cell = nn.scan(
                    CELLS[self.cell],
                    variable_broadcast="params",
                    split_rngs={"params": False},
                    in_axes=0,
                    out_axes=0,
                    unroll=self.unroll,
                )
                carry, outputs = scan_cell(
                    features=self.num_hiddens, dtype=self.dtype, name=name, **inits
                )(carry, outputs)
            final.append(carry)
        return outputs, jax.tree.map(lambda *s: jnp.stack(s), *final)

    def begin_state(self, batch_size: int) -> State:
        """Zeros `[L, B, H]` (a pair of them for the LSTM: flax's `(c, h)` order)."""
        return zero_state(self.cell, self.num_layers, batch_size, self.num_hiddens)


class RNNModel(nn.Module):
    """The book's `RNNModel`: one-hot tokens -> `RNNLayer` -> Dense head to vocab logits.

    Attributes:
      vocab_size: V.
      other attributes: as `RNNLayer`.
    """

    vocab_size: int
    cell: str = "rnn"
    num_hiddens: int = 256
    num_layers: int = 1
    initializer: str = "normal"
    init_scale: float = 0.01
    dropout: float = 0.0
    custom_vjp: bool = True
    unroll: int = 1
    dtype: Any = jnp.float32
    lstm_impl: str = "auto"

    def setup(self):
        self.rnn = RNNLayer(
            cell=self.cell,
            num_hiddens=self.num_hiddens,
            num_layers=self.num_layers,
            vocab_size=self.vocab_size,
            dropout=self.dropout,
            initializer=self.initializer,
            init_scale=self.init_scale,
            custom_vjp=self.custom_vjp,
            unroll=self.unroll,
            dtype=self.dtype,
            lstm_impl=self.lstm_impl,
        )
        self.dense = nn.Dense(
            self.vocab_size,
            dtype=self.dtype,
            **head_initializers(self.initializer, self.init_scale, self.num_hiddens),
        )

    def __call__(
        self, tokens: jax.Array, state: State, deterministic: bool = True
    ) -> tuple[jax.Array, State]:
        """Runs the model over a minibatch.

        Args:
          tokens: int `[B, T]` token ids, as the data iterators yield them.
          state: `[L, B, H]` (LSTM: a pair of them).
          deterministic: False applies dropout between layers (needs the `dropout` rng).

        Returns:
          `(logits, state)`: float32 logits `[T * B, V]` in time-major order
          (row t * B + b is step t of sequence b, matching `Y.T.reshape(-1)`)
          and the final state.
        """
        outputs, state = self.rnn(tokens.T, state, deterministic)  # ids stand for one-hots
        logits = self.dense(outputs.reshape(-1, outputs.shape[-1]))
        return logits.astype(jnp.float32), state

    def begin_state(self, batch_size: int) -> State:
        """The zero state for `batch_size` sequences; see `RNNLayer.begin_state`."""
        return zero_state(self.cell, self.num_layers, batch_size, self.num_hiddens)
