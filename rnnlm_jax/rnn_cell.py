"""The vanilla tanh RNN layer made fast: `nn.scan` over `RNNCell`, input projection out of the
loop, and a hand-written backward pass over the whole sequence.

The maths is flax's `nn.SimpleCell`, `h_t = tanh(x_t W_xh + b + h_{t-1} W_hh)`, with the same
parameter tree (`i/kernel`, `i/bias`, `h/kernel`), so parameters move freely between the two.
What differs is where the work happens:
  * `x_t W_xh + b` for all T*B tokens is computed once before the time loop; for token ids it
    is a row gather of `W_xh` (a one-hot times a matrix is a row lookup);
  * the time loop (`nn.scan` over `RNNCell`) holds only `h W_hh` and the tanh;
  * the backward pass (`nn.custom_vjp`) runs the reverse recurrence
    `g_t = (dy_t + g_{t+1} W_hh^T) * (1 - h_t^2)` in a scan and then takes the `W_hh` gradient
    as one `[H, T*B] @ [T*B, H]` matmul instead of T small ones.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Initializer = Any


def matmul(a: jax.Array, b: jax.Array, dtype: Any) -> jax.Array:
    """`a @ b` with operands in `dtype` and a float32 result (so bfloat16 accumulates safely)."""
    return jnp.matmul(a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


class RNNCell(nn.Module):
    """One time step `h' = tanh(xp + h W_hh)`, given the projected input `xp = x W_xh + b`.

    Call as `(h [B, H], xp [B, H]) -> (h' [B, H], h' [B, H])`, the flax cell convention.
    """

    features: int
    recurrent_kernel_init: Initializer = nn.initializers.orthogonal()
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array, xp: jax.Array) -> tuple[jax.Array, jax.Array]:
        W_hh = self.param("kernel", self.recurrent_kernel_init, (self.features, self.features))
        h = jnp.tanh(xp + matmul(h, W_hh, self.dtype))
        return h, h


class InputProjection(nn.Module):
    """`x W_xh + b` for a whole sequence: a row gather for token ids, one matmul for floats.

    Inputs: int ids `[T, B]` (standing for their one-hot `[T, B, vocab_size]`) or floats
    `[T, B, D]`. Output: float32 `[T, B, H]`.
    """

    features: int
    vocab_size: int | None = None
    kernel_init: Initializer = nn.linear.default_kernel_init
    bias_init: Initializer = nn.initializers.zeros_init()
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        ids = jnp.issubdtype(inputs.dtype, jnp.integer)
        if ids and self.vocab_size is None:
            raise ValueError("token-id inputs need the layer's vocab_size")
        in_features = self.vocab_size if ids else inputs.shape[-1]
        W_xh = self.param("kernel", self.kernel_init, (in_features, self.features))
        b = self.param("bias", self.bias_init, (self.features,))
        if ids:
            return jnp.take(W_xh, inputs, axis=0) + b
        return matmul(inputs, W_xh, self.dtype) + b


def _recurrence(scan_cell, h0, xp):
    return scan_cell(h0, xp)


def _recurrence_fwd(scan_cell, h0, xp):
    h_last, hs = scan_cell(h0, xp)
    W_hh = scan_cell.variables["params"]["kernel"]
    return (h_last, hs), (h0, hs, W_hh)


def _recurrence_bwd(residuals, cotangents, *, dtype, unroll):
    """Reverse-time scan for `g_t = dL/d(pre-activation_t)`; then dW_hh in one matmul."""
    h0, hs, W_hh = residuals
    d_last, d_hs = cotangents
    W_hh_T = W_hh.T  # transposed once, outside the loop

    def step(dh, inputs):
        dy, h = inputs
        g = (dy + dh) * (1.0 - h * h)
        return matmul(g, W_hh_T, dtype), g

    dh0, G = jax.lax.scan(step, d_last, (d_hs, hs), reverse=True, unroll=unroll)
    h_prev = jnp.concatenate([h0[None], hs[:-1]], axis=0)
    H = hs.shape[-1]
    dW_hh = matmul(h_prev.reshape(-1, H).T, G.reshape(-1, H), dtype)
    return {"params": {"kernel": dW_hh}}, dh0, G


class SimpleRNN(nn.Module):
    """One vanilla RNN layer over a sequence: `(h0 [B, H], inputs) -> (h_T [B, H], hs [T, B, H])`.

    `inputs` are int ids `[T, B]` (needs `vocab_size`) or floats `[T, B, D]`, time-major.
    """

    features: int
    vocab_size: int | None = None
    kernel_init: Initializer = nn.linear.default_kernel_init
    recurrent_kernel_init: Initializer = nn.initializers.orthogonal()
    bias_init: Initializer = nn.initializers.zeros_init()
    unroll: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h0: jax.Array, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        xp = InputProjection(
            self.features,
            self.vocab_size,
            self.kernel_init,
            self.bias_init,
            self.dtype,
            name="i",
        )(inputs)
        scan_cell = nn.scan(
            RNNCell,
            variable_broadcast="params",
            split_rngs={"params": False},
            in_axes=0,
            out_axes=0,
            unroll=self.unroll,
        )(self.features, self.recurrent_kernel_init, self.dtype, name="h")
        backward = functools.partial(_recurrence_bwd, dtype=self.dtype, unroll=self.unroll)
        recurrence = nn.custom_vjp(_recurrence, _recurrence_fwd, backward)
        return recurrence(scan_cell, h0.astype(jnp.float32), xp)
