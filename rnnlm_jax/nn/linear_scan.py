"""The linear recurrence `h_t = a_t * h_{t-1} + b_t` over time, two ways with the same result.

`associative`: `jax.lax.associative_scan` over the pairs `(a_t, b_t)` with the composition
`(a1, b1) . (a2, b2) = (a1 a2, a2 b1 + b2)`: depth O(log T), every step's work done at once.
`sequential`: `jax.lax.scan`, one elementwise step after another: T steps of depth 1.
Both are plain JAX, differentiated by `jax.grad` (and forward mode). `a`, `b` may be real or
complex. `auto` picks, per backend, the one measured faster (`benchmarks/recurrences.py`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SCANS = ("auto", "associative", "sequential", "chunked")
SCAN_CHUNK = 32  # the chunked scan's chunk: C + T / C loop steps instead of T


def resolve_scan(scan: str) -> str:
    """`associative` or `sequential` for `scan`; `auto`: sequential on XLA:CPU (on 2 cores
    its loop of elementwise steps beat the associative scan's O(T log T) memory traffic for
    every cell at T 35 and 256, and for all but the LRU at T 1024: docs/recurrences.md),
    associative elsewhere (GPU, TPU: the parallel form, depth O(log T))."""
    if scan not in SCANS:
        raise ValueError(f"unknown scan {scan!r}; expected one of {SCANS}")
    if scan != "auto":
        return scan
    return "sequential" if jax.default_backend() == "cpu" else "associative"


def _compose(earlier, later):
    a1, b1 = earlier
    a2, b2 = later
    return a1 * a2, a2 * b1 + b2


def chunked_scan(a: jax.Array, b: jax.Array, h0: jax.Array, chunk: int = SCAN_CHUNK,
                 unroll: int = 1) -> jax.Array:  # fmt: skip
    """`linear_scan` in chunks of `chunk` steps: every chunk runs from a zero state at once
    (a sequential scan over the C positions of all T / C chunks side by side, also carrying
    the product of the `a`s), the chunks' starting states follow by a scan of T / C steps,
    and `h_t = h_t^local + (a_1 ... a_t within the chunk) h_start`."""
    T = a.shape[0]
    C = max(1, min(chunk, T))
    pad = -T % C
    if pad:  # a = 1, b = 0: the state passes through unchanged
        a = jnp.concatenate([a, jnp.ones((pad,) + a.shape[1:], a.dtype)])
        b = jnp.concatenate([b, jnp.zeros((pad,) + b.shape[1:], b.dtype)])
    n = a.shape[0] // C
    a, b = (x.reshape((n, C) + x.shape[1:]).swapaxes(0, 1) for x in (a, b))  # [C, n, B, N]

    def local(carry, ab):
        h, p = carry
        h, p = ab[0] * h + ab[1], ab[0] * p
        return (h, p), (h, p)

    zero = jnp.zeros(a.shape[1:], jnp.result_type(a, b))
    _, (h_local, prod) = jax.lax.scan(local, (zero, jnp.ones_like(zero)), (a, b), unroll=unroll)

    def across(h, pb):
        return pb[0] * h + pb[1], h

    _, starts = jax.lax.scan(across, h0.astype(zero.dtype), (prod[-1], h_local[-1]))
    hs = h_local + prod * starts[None]  # [C, n, B, N]
    return hs.swapaxes(0, 1).reshape((n * C,) + hs.shape[2:])[:T]


def linear_scan(
    a: jax.Array, b: jax.Array, h0: jax.Array, scan: str = "auto", unroll: int = 1
) -> jax.Array:
    """Every `h_t = a_t * h_{t-1} + b_t` from `h0`: `a`, `b` `[T, B, N]` (time-major),
    `h0` `[B, N]` -> `hs` `[T, B, N]`."""
    scan = resolve_scan(scan)
    if scan == "associative":
        b = b.at[0].add(a[0] * h0)  # h_0 = a_0 h0 + b_0: the initial state folded in
        return jax.lax.associative_scan(_compose, (a, b), axis=0)[1]
    if scan == "chunked":
        return chunked_scan(a, b, h0, unroll=unroll)

    def step(h, ab):
        h = ab[0] * h + ab[1]
        return h, h

    return jax.lax.scan(step, h0, (a, b), unroll=unroll)[1]
