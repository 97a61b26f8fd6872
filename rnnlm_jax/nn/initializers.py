"""Parameter initializers by name: the book's N(0, 0.01), Glorot, flax's, PyTorch's, uniform."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

INITS = ("normal", "xavier", "flax", "pytorch", "uniform")


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
    U(-k, k) with k = 1/sqrt(num_hiddens), and each bias that stands for two of
    PyTorch's the sum of two such draws, as PyTorch's `b_ih + b_hh` (flax's cells have
    one bias per gate); the GRU's `in` and `hn` biases, which PyTorch keeps apart (`r`
    multiplies `W_hn h + b_hn`), are one draw each (`candidate_bias_init`); `uniform`:
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
        return dict(
            kernel_init=u,
            recurrent_kernel_init=u,
            bias_init=_sum_of_two(u),
            candidate_bias_init=u,
        )
    raise ValueError(f"unknown init {init!r}; expected one of {INITS}")
