"""The linear recurrence `h_t = a_t * h_{t-1} + b_t` over time, two ways with the same result.

`associative`: `jax.lax.associative_scan` over the pairs `(a_t, b_t)` with the composition
`(a1, b1) . (a2, b2) = (a1 a2, a2 b1 + b2)`: depth O(log T), every step's work done at once.
`sequential`: `jax.lax.scan`, one elementwise step after another: T steps of depth 1.
Both are plain JAX, differentiated by `jax.grad` (and forward mode). `a`, `b` may be real or
complex. `auto` picks, per backend, the one measured faster (`benchmarks/recurrences.py`).
"""

from __future__ import annotations

import jax

SCANS = ("auto", "associative", "sequential")


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


def linear_scan(
    a: jax.Array, b: jax.Array, h0: jax.Array, scan: str = "auto", unroll: int = 1
) -> jax.Array:
    """Every `h_t = a_t * h_{t-1} + b_t` from `h0`: `a`, `b` `[T, B, N]` (time-major),
    `h0` `[B, N]` -> `hs` `[T, B, N]`."""
    if resolve_scan(scan) == "associative":
        b = b.at[0].add(a[0] * h0)  # h_0 = a_0 h0 + b_0: the initial state folded in
        return jax.lax.associative_scan(_compose, (a, b), axis=0)[1]

    def step(h, ab):
        h = ab[0] * h + ab[1]
        return h, h

    return jax.lax.scan(step, h0, (a, b), unroll=unroll)[1]
