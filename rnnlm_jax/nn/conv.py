"""The causal depthwise convolution over time that Griffin's recurrent block and the
matrix-state layers put before their recurrence, with the window it carries between
minibatches."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

CONV_WIDTH = 4  # Griffin's, Mamba-2's and Gated DeltaNet's short convolution


def torch_conv_init(key, shape, dtype=jnp.float32):
    """PyTorch's default for a depthwise `nn.Conv1d` of width `shape[0]` (xLSTM's and
    Mamba's convolutions): uniform in +-1/sqrt(width)."""
    bound = 1.0 / np.sqrt(shape[0])
    return jax.random.uniform(key, shape, dtype, -bound, bound)


class Conv1D(nn.Module):
    """A causal depthwise convolution over time of width `width` (recurrentgemma's `Conv1D`,
    its initialisation unless `w_init` is given): `y_t = b + sum_j w[j] * x_{t - (width -
    1) + j}`, the inputs before the sequence read from `cache [B, width - 1, H]` (the
    previous minibatch's last inputs).
    `(cache, x [T, B, H]) -> (y, new cache)`; with `lengths [B]` the new cache is each
    sequence's last `width - 1` inputs before its own end (the old cache for length 0)."""

    width: int = CONV_WIDTH
    w_init: Any = nn.initializers.variance_scaling(0.01, "fan_in", "normal")

    @nn.compact
    def __call__(self, cache, x, lengths=None):
        H = x.shape[-1]
        w = self.param("w", self.w_init, (self.width, H), jnp.float32)
        b = self.param("b", nn.initializers.zeros_init(), (H,), jnp.float32)
        T = x.shape[0]
        # float32 whatever the matmuls' dtype: the window carried between minibatches
        # keeps the state's dtype.
        ext = jnp.concatenate([jnp.swapaxes(cache, 0, 1), x.astype(cache.dtype)], axis=0)
        y = b + sum(ext[j : j + T] * w[j] for j in range(self.width))
        if lengths is None:
            return y, jnp.swapaxes(ext[T:], 0, 1)
        rows = lengths[:, None] + jnp.arange(self.width - 1)  # [B, width - 1] into ext
        return y, jnp.take_along_axis(jnp.swapaxes(ext, 0, 1), rows[..., None], axis=1)
