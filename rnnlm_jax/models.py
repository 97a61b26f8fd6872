"""The book's recurrent language model: token ids -> `RNNLayer` -> a Dense head to logits.

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

from rnnlm_jax.initializers import INITS, head_initializers, initializers  # noqa: F401
from rnnlm_jax.layer import CELLS, RNNLayer, State, zero_state  # noqa: F401


class RNNModel(nn.Module):
    """The book's `RNNModel`: one-hot tokens -> `RNNLayer` -> Dense head to vocab logits.

    It follows the model contract of `training` (`logits_layout = "time_major"`: logits
    `[T * B, V]`, row t * B + b for step t of sequence b).

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

    logits_layout = "time_major"  # a class constant, not a field: see `training`

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
