"""The output layer: `nn.Dense`'s parameters and result, with a hand-written backward pass
whose two matmuls run in the layouts XLA:CPU is fastest at.

A word model's head is most of its FLOPs (Zaremba et al.'s small PTB model: 3/4), three
`[T*B, H] x [H, V]`-sized matmuls per step. Autodiff of `x @ kernel` asks for `x^T @ g`
(contracting the rows of both operands) and `g @ kernel^T`; XLA:CPU runs the first at about
60% of the speed of the same product with `x^T` laid out first (measured on the PTB shapes:
[400, 200] x [200, 10000]). The backward pass here materialises `x^T` (a [H, T*B] copy, small
next to the matmul) behind an optimisation barrier, so XLA cannot fold it back.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def dense(x: jax.Array, kernel: jax.Array, bias: jax.Array, dtype) -> jax.Array:
    """`x @ kernel + bias` in float32, the matmul's operands in `dtype` (float32 or bfloat16:
    then bfloat16 operands, float32 accumulation). `x`: `[N, H]`, `kernel`: `[H, V]`."""
    return _dense_fwd(x, kernel, bias, dtype)[0]


def _dense_fwd(x, kernel, bias, dtype):
    y = jnp.dot(x.astype(dtype), kernel.astype(dtype), preferred_element_type=jnp.float32)
    return y + bias.astype(jnp.float32), (x, kernel, bias)


def _dense_bwd(dtype, residuals, g):
    x, kernel, bias = residuals
    gd = g.astype(dtype)
    # dx = g @ kernel^T: contracting both operands' last axes is XLA:CPU's fast form.
    dx = lax.dot_general(
        gd, kernel.astype(dtype), (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32
    )
    # dkernel = x^T @ g with x^T laid out first (see the module docstring).
    x_t = x.astype(dtype).T
    if jax.default_backend() == "cpu":  # measured there only
        x_t = lax.optimization_barrier(x_t)
    dkernel = jnp.dot(x_t, gd, preferred_element_type=jnp.float32)
    dbias = g.sum(0)
    return dx.astype(x.dtype), dkernel.astype(kernel.dtype), dbias.astype(bias.dtype)


dense.defvjp(_dense_fwd, _dense_bwd)


class Dense(nn.Module):
    """`nn.Dense(features)` for 2-D inputs, with its parameters (`kernel` `[H, V]`, `bias`)
    and initializers, computed by `dense` (float32 logits; `dtype`: the matmul's operands)."""

    features: int
    kernel_init: nn.initializers.Initializer = nn.linear.default_kernel_init
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
        return dense(x, kernel, bias, self.dtype or jnp.float32)
