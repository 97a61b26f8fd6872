r"""The matmuls alone: how fast the book's models could train if nothing but their matmuls ran.

    python benchmarks/dot_floor.py                 # rnn, gru, lstm, 2-layer lstm; float32
    python benchmarks/dot_floor.py --dtype=bfloat16 --cells=lstm

A training minibatch (B = 32 sequences of T = 35 characters) of a recurrent layer is, in
matmuls: T forward steps `h [B, H] @ W [H, kH]` (k gates) and T backward steps
`dxp [B, kH] @ W^T [kH, H]`, each waiting for the one before; one weight gradient
`h^T [H, T*B] @ dxp [T*B, kH]`; for a layer above the first, its input projection
(`[T*B, H] @ [H, kH]`, its input gradient and its weight gradient); and the head's three
`[T*B, H] x [H, V]` products. This times each kind as XLA:CPU runs it at these shapes (the
chain as a compiled loop of nothing else: `h -> h @ W -> (h @ W) @ W^T`, `W` with orthonormal
rows so values stay put), adds them up per minibatch, and prints the tokens/sec that time
allows: an upper bound on any training step built from these XLA matmuls, before a single
gate, loss or optimizer update is computed. Compare it with the bars of `throughput.py
--compare-torch` (a multiple of PyTorch's tokens/sec).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def _best_ms(f, *args, repeats: int = 7, calls: int = 20) -> float:
    jax.block_until_ready(f(*args))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            out = f(*args)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e3


def _mm(a, b):
    return jnp.matmul(a, b.astype(a.dtype), preferred_element_type=jnp.float32)


def chain_ms(batch: int, hidden: int, k: int, steps: int, dtype) -> float:
    """One forward and one backward recurrent step's matmuls, `steps` times in a loop."""
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(k * hidden, hidden)))
    W = jnp.asarray(q.T, dtype)  # [H, kH], W @ W^T = I
    W_T = jnp.asarray(q, dtype)

    @jax.jit
    def loop(h, W, W_T):
        def step(h, _):
            u = _mm(h.astype(dtype), W)  # forward: [B, H] @ [H, kH]
            return _mm(u.astype(dtype), W_T), None  # backward: [B, kH] @ [kH, H]

        return jax.lax.scan(step, h, None, length=steps)[0]

    h = jnp.asarray(np.random.default_rng(1).normal(size=(batch, hidden)), jnp.float32)
    return _best_ms(loop, h, W, W_T)


def dot_ms(m: int, kdim: int, n: int, dtype) -> float:
    """One `[m, kdim] @ [kdim, n]` matmul."""
    a = jnp.ones((m, kdim), dtype)
    b = jnp.ones((kdim, n), dtype)
    return _best_ms(jax.jit(_mm), a, b)


def floor(cell: str, layers: int, batch: int, steps: int, hidden: int, vocab: int, dtype):
    k = GATES[cell]
    rows = batch * steps
    chain = chain_ms(batch, hidden, k, steps, dtype)
    weight_grad = dot_ms(hidden, rows, k * hidden, dtype)
    projection = dot_ms(rows, hidden, k * hidden, dtype)  # forward, layers above the first
    projection_grad = dot_ms(rows, k * hidden, hidden, dtype)  # their input gradient
    head = dot_ms(rows, hidden, vocab, dtype) + dot_ms(rows, vocab, hidden, dtype)
    head += dot_ms(hidden, rows, vocab, dtype)
    per_layer = chain + weight_grad
    above = projection + projection_grad + weight_grad
    total = layers * per_layer + (layers - 1) * above + head
    return {
        "cell": cell,
        "layers": layers,
        "dtype": jnp.dtype(dtype).name,
        "chain_ms": chain,
        "chain_us_per_step": chain * 1e3 / steps,
        "weight_grad_ms": weight_grad,
        "input_projection_ms": projection + projection_grad + weight_grad if layers > 1 else 0.0,
        "head_ms": head,
        "minibatch_ms": total,
        "max_tokens_per_sec": rows / total * 1e3,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cells", default="rnn,gru,lstm,lstm:2", help="cell[:layers],...")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=35)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--vocab", type=int, default=28)
    args = p.parse_args()
    dtype = getattr(jnp, args.dtype)
    print(
        f"{'cell':<5} {'layers':>6} {'dtype':>9} {'fwd+bwd step us':>16} {'dW ms':>6} "
        f"{'minibatch ms':>13} {'max tok/s':>10}"
    )
    results = []
    for spec in args.cells.split(","):
        cell, _, layers = spec.partition(":")
        r = floor(cell, int(layers or 1), args.batch, args.steps, args.hidden, args.vocab, dtype)
        results.append(r)
        print(
            f"{cell:<5} {r['layers']:>6} {r['dtype']:>9} {r['chain_us_per_step']:>16.1f} "
            f"{r['weight_grad_ms']:>6.2f} {r['minibatch_ms']:>13.2f} "
            f"{r['max_tokens_per_sec']:>10,.0f}",
            flush=True,
        )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
