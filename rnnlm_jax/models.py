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

from rnnlm_jax.rnn_cell import SimpleRNN

CELLS = {"rnn": nn.SimpleCell, "gru": nn.GRUCell, "lstm": nn.LSTMCell}
INITS = ("normal", "xavier", "flax")

State = Any  # jax.Array [L, B, H], or a pair of them for the LSTM


def initializers(init: str, init_scale: float = 0.01) -> dict[str, Any]:
    """The kernel, recurrent-kernel and bias initializers for one `init` choice.

    `normal`: N(0, init_scale) weights and zero biases, what the book's
    MXNet `train_ch8` uses (and what gave its perplexity 1.2); `xavier`:
    Glorot-uniform weights, zero biases (the seed's own `initialize`);
    `flax`: flax's defaults (LeCun-normal input kernels, orthogonal
    recurrent kernels, zero biases).
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
      custom_vjp: for `rnn`, use `rnn_cell.SimpleRNN` (input projection out of the time
        loop, hand-written backward pass); False runs flax's `nn.SimpleCell` under
        `nn.scan` and `jax.grad` (same parameters, same results to float tolerance).
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
        inits = initializers(self.initializer, self.init_scale)
        outputs, final = inputs, []
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0:
                # One mask element per (t, b, unit): outside the scan, so no rng splitting.
                outputs = nn.Dropout(self.dropout, name=f"dropout_{layer}")(
                    outputs, deterministic=deterministic
                )
            carry = jax.tree.map(lambda s, i=layer: s[i], state)
            name = f"layer_{layer}"
            if self.cell == "rnn" and self.custom_vjp:
                carry, outputs = SimpleRNN(
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
        )
        inits = initializers(self.initializer, self.init_scale)
        self.dense = nn.Dense(
            self.vocab_size,
            dtype=self.dtype,
            **{k: v for k, v in inits.items() if k in ("kernel_init", "bias_init")},
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
