"""Causal multi-head softmax attention as a token mixer of the residual blocks, over a
sliding window whose keys and values are its carried state.

Query t attends to the W most recent keys, its own included (W = `window`): within one call
those of the call, and before them the last W keys and values of the calls before, which the
state carries. So a sequence cut into minibatches, or fed one token at a time (generation),
gives what the whole sequence gives at once whenever W covers the steps, and with a window as
long as a fresh sequence it is plain causal attention (nanoGPT's).

  q, k, v = W_qkv x (N heads of width d = H / N);  rotary positions (optional) on q and k
  o_t = sum_{s in window(t)} softmax_s(q_t . k_s / sqrt(d)) v_s;  y = W_out o

The state `(k [B, W, N, d], v [B, W, N, d], valid [B, W], position [B])`: the window's keys
and values (rotary positions already applied to the keys), which of its slots hold a step
(a fresh state holds none), and the steps seen so far (the next step's position).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnnlm_jax.nn.recurrences import matmul

POSITIONS = ("rotary", "learned", "none")
ROPE_BASE = 10000.0
MASKED = -1e30  # a score no key takes (finite: a row with nothing valid stays finite)


def attention_state(prefix: tuple, num_hiddens: int, num_heads: int, window: int):
    """The zero state with leading axes `prefix` (e.g. `(L, B)`): see the module docstring."""
    if num_heads < 1 or num_hiddens % num_heads:
        raise ValueError(f"num_heads={num_heads} must divide num_hiddens={num_hiddens} "
                         "(attention's heads)")  # fmt: skip
    if window < 1:
        raise ValueError(f"attention_window={window}: attention needs a window of at least 1 step")
    d = num_hiddens // num_heads
    kv = jnp.zeros(prefix + (window, num_heads, d), jnp.float32)
    return kv, kv, jnp.zeros(prefix + (window,), jnp.float32), jnp.zeros(prefix, jnp.int32)


def rotary(x: jax.Array, positions: jax.Array) -> jax.Array:
    """Rotary position embedding (Su et al. 2021; GPT-NeoX's halves) of `x [B, T, N, d]` at
    integer `positions [B, T]`; or of `x [B, N, T, d]` at `positions [B, 1, T]` (any
    positions that broadcast against x's leading axes, the heads' axis of length 1)."""
    half = x.shape[-1] // 2
    freqs = ROPE_BASE ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions[..., None].astype(jnp.float32) * freqs  # [..., half]
    if positions.ndim == 2:  # [B, T]: the heads' axis after time
        angles = angles[:, :, None]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    x1, x2 = x[..., :half], x[..., half : 2 * half]
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return jnp.concatenate([rotated, x[..., 2 * half :]], axis=-1)


class Attention(nn.Module):
    """`(state, x [T, B, H], mask [T, B] or None) -> (y [T, B, H], state)`; see the module
    docstring. Parameters `qkv [H, 3H]` and `out [H, H]` (no biases, as nanoGPT's
    `bias=False`)."""

    num_heads: int = 1
    window: int = 256
    positions: str = "rotary"  # rotary | none (learned positions are added by the block)
    kernel_init: Any = nn.initializers.lecun_normal()
    out_init: Any = None  # the output projection's (None: kernel_init)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, state, x, mask=None):
        T, B, H = x.shape
        N, W = self.num_heads, self.window
        d = H // N
        k_cache, v_cache, valid_cache, position = state
        qkv = self.param("qkv", self.kernel_init, (H, 3 * H), jnp.float32)
        q, k, v = jnp.split(matmul(x, qkv, self.dtype), 3, axis=-1)
        q, k, v = (a.reshape(T, B, N, d).transpose(1, 0, 2, 3) for a in (q, k, v))  # [B, T, N, d]
        steps = position[:, None] + jnp.arange(T)[None, :]  # [B, T]
        if self.positions == "rotary":
            q, k = rotary(q, steps), rotary(k, steps)
        new_valid = jnp.ones((B, T), jnp.float32) if mask is None else mask.T.astype(jnp.float32)
        keys = jnp.concatenate([k_cache, k], axis=1)  # [B, W + T, N, d]
        values = jnp.concatenate([v_cache, v], axis=1)
        valid = jnp.concatenate([valid_cache, new_valid], axis=1)  # [B, W + T]
        s = jnp.arange(W + T)[None, :]
        t = jnp.arange(T)[:, None]
        seen = (s > t) & (s <= t + W)  # query t sits at W + t: its last W steps
        scores = jnp.einsum("btnd,bsnd->bnts", q, keys) * d**-0.5
        allowed = seen[None, None] & (valid[:, None, None, :] > 0)
        scores = jnp.where(allowed, scores, MASKED)
        probs = jax.nn.softmax(scores, axis=-1)
        o = jnp.einsum("bnts,bsnd->btnd", probs, values).transpose(1, 0, 2, 3).reshape(T, B, H)
        out = self.param("out", self.out_init or self.kernel_init, (H, H), jnp.float32)
        y = matmul(o, out, self.dtype)
        if mask is None:
            cache = (keys[:, T:], values[:, T:], valid[:, T:])
            return y, (*cache, position + T)
        lengths = mask.sum(axis=0).astype(jnp.int32)  # each row's window ends at its length
        rows = lengths[:, None] + jnp.arange(W)[None, :]  # [B, W] into the W + T steps

        def take(a):
            index = rows.reshape(rows.shape + (1,) * (a.ndim - 2))
            return jnp.take_along_axis(a, index, axis=1)

        return y, (take(keys), take(values), take(valid), position + lengths)
