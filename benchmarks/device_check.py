"""The whole accelerator check, as one command: on a CUDA machine in a few minutes,
`--tiny` on the CPU in seconds (the test runs that).

    python benchmarks/device_check.py [--out=device_check.json]
    python benchmarks/device_check.py --tiny

What it measures, in this order (each part's figures go into one JSON file, and the last
lines printed are the GPU table of docs/performance.md):
  1. cuDNN's LSTM (`impl=cudnn`) against the fast scan (`impl=fast`): the largest
     difference of outputs, final states and every gradient, 2 layers (skipped, saying so,
     where no CUDA device is);
  2. training tokens/sec of `train_chunk` per cell (rnn, gru, lstm) in float32 and bfloat16
     at the book's shapes (B 32, T 35, H 256, one-hot input);
  3. population mode: K = 16 members vmapped against 16 runs one after another;
  4. Zaremba et al.'s PTB small and medium LSTMs: tokens/sec (random token ids of PTB's
     vocab: speed does not depend on the text, so no data is needed);
  5. with several devices, one device against all of them on the same global batch.
Timings exclude compilation (a first call) and are the median over repeats; each number is
measured in this one process, so they compare with each other.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from configs import ptb  # noqa: E402
from rnnlm_jax import train  # noqa: E402
from rnnlm_jax.config.checks import model_from_config  # noqa: E402
from rnnlm_jax.config.fields import defaults  # noqa: E402
from rnnlm_jax.jobs import population  # noqa: E402
from rnnlm_jax.nn.fast_layers import cuda_available  # noqa: E402
from rnnlm_jax.nn.layer import RNNLayer  # noqa: E402
from rnnlm_jax.train import parallel  # noqa: E402


def timed(fn, repeats: int) -> float:
    """Median seconds of `fn()` (which blocks on its result) after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tokens(rng, vocab: int, n: int, B: int, T: int):
    return jnp.asarray(rng.integers(0, vocab, (n, B, T)), jnp.int32)


def lm_tokens_per_sec(config, vocab: int, n: int, repeats: int) -> float:
    """Training tokens/sec of `train_chunk` over `n` minibatches of random ids."""
    model = model_from_config(config, vocab)
    state = train.initial_train_state(model, config, n)
    begin = train.begin_state(model, config.batch_size)
    rng = np.random.default_rng(0)
    X = tokens(rng, vocab, n, config.batch_size, config.num_steps)
    Y = tokens(rng, vocab, n, config.batch_size, config.num_steps)
    box = [state]

    def run():
        box[0], _, m = train.train_chunk(box[0], begin, X, Y, begin, reset_each_batch=False)
        jax.block_until_ready(m)

    return n * config.batch_size * config.num_steps / timed(run, repeats)


def cudnn_vs_scan(tiny: bool) -> dict:
    """Largest absolute differences between `impl=cudnn` and `impl=fast`."""
    if not cuda_available():
        return {"skipped": f"no CUDA device (backend {jax.default_backend()})"}
    T, B, D, H = (5, 2, 3, 4) if tiny else (35, 32, 64, 256)
    x = jax.random.normal(jax.random.key(0), (T, B, D))
    fast = RNNLayer(cell="lstm", num_hiddens=H, num_layers=2, impl="fast", initializer="flax")
    cudnn = fast.clone(impl="cudnn")
    params = fast.init(jax.random.key(1), x)
    state = fast.begin_state(B)

    def loss(layer, p, x):
        y, (c, h) = layer.apply(p, x, state)
        return jnp.sum(y**2) + jnp.sum(c * h), (y, c, h)

    results = {}
    for name, layer in (("fast", fast), ("cudnn", cudnn)):
        grad = jax.jit(jax.grad(functools.partial(loss, layer), argnums=(0, 1), has_aux=True))
        (g_params, g_x), out = grad(params, x)
        results[name] = (out, g_params, g_x)

    def diff(a, b):
        pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b))
        return float(max(jnp.max(jnp.abs(u - v)) for u, v in pairs))

    f, c = results["fast"], results["cudnn"]
    return {
        "max_abs_diff_outputs_and_states": diff(f[0], c[0]),
        "max_abs_diff_param_grads": diff(f[1], c[1]),
        "max_abs_diff_input_grads": diff(f[2], c[2]),
    }


def cells(tiny: bool, repeats: int) -> dict:
    out = {}
    # --tiny: two of the six (each is a compilation, the most of a tiny run's time).
    pairs = (
        [("rnn", "float32"), ("lstm", "bfloat16")]
        if tiny
        else [(cell, dtype) for cell in ("rnn", "gru", "lstm") for dtype in ("float32", "bfloat16")]
    )
    for cell, dtype in pairs:
        config = defaults()
        config.cell, config.dtype = cell, dtype
        if tiny:
            config.num_hiddens, config.batch_size, config.num_steps = 16, 4, 5
        out[f"{cell}/{dtype}"] = lm_tokens_per_sec(config, 28, 8, repeats)
    return out


def population_vs_sequential(tiny: bool, repeats: int) -> dict:
    """K members vmapped in one program against K single runs one after another."""
    K = 2 if tiny else 16
    config = defaults()
    if tiny:
        config.num_hiddens, config.batch_size, config.num_steps = 16, 4, 5
    B, T, V, n = config.batch_size, config.num_steps, 28, 8
    model = model_from_config(config, V)
    seeds, lrs, clips = list(range(K)), [1.0] * K, [1.0] * K
    states = population.create_population(model, seeds, lrs, clips, B, T)
    begin = train.begin_state(model, B)
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.integers(0, V, (K, n, B, T)), jnp.int32)
    Y = jnp.asarray(rng.integers(0, V, (K, n, B, T)), jnp.int32)
    box = [states]

    def together():
        box[0], m = population.train_population_epoch(box[0], X, Y, begin, reset_each_batch=False)
        jax.block_until_ready(m)

    singles = [train.initial_train_state(model, config, n) for _ in range(K)]

    def one_after_another():
        for k in range(K):
            singles[k], m = train.train_epoch(singles[k], X[k], Y[k], begin, reset_each_batch=False)
        jax.block_until_ready(m)

    t_pop, t_seq = timed(together, repeats), timed(one_after_another, repeats)
    return {"K": K, "population_s": t_pop, "sequential_s": t_seq, "speedup": t_seq / t_pop}


def ptb_speeds(tiny: bool, repeats: int) -> dict:
    out = {}
    for variant in ("small",) if tiny else ("small", "medium"):
        config = ptb.get_config(variant)
        V = 10000
        if tiny:
            config.num_hiddens = config.embed_dim = 16
            config.batch_size, config.num_steps, V = 4, 5, 50
        out[variant] = lm_tokens_per_sec(config, V, 4 if tiny else 20, repeats)
    return out


def devices(tiny: bool, repeats: int) -> dict:
    """One device against all of them, same global batch: final parameters and speed."""
    n = jax.device_count()
    if n < 2:
        return {"skipped": f"{n} device"}
    config = defaults()
    config.batch_size = 4 * n if tiny else 32 * n
    if tiny:
        config.num_hiddens, config.num_steps = 16, 5
    V = 28
    model = model_from_config(config, V)
    rng = np.random.default_rng(0)
    X = rng.integers(0, V, (4, config.batch_size, config.num_steps)).astype(np.int32)
    Y = rng.integers(0, V, X.shape).astype(np.int32)
    begin_host = train.begin_state(model, config.batch_size)
    results = {}
    for name, mesh in (("one", None), ("all", parallel.data_mesh())):
        state = train.initial_train_state(model, config, 4)
        if mesh is None:
            x, y, begin = jnp.asarray(X), jnp.asarray(Y), begin_host
        else:
            x, y = (parallel.global_array(a, mesh, 1) for a in (X, Y))
            begin = jax.tree.map(
                lambda a, mesh=mesh: parallel.global_array(np.asarray(a), mesh, 1), begin_host
            )
        box = [state]

        def run(x=x, y=y, begin=begin, box=box):
            box[0], _, m = train.train_chunk(box[0], begin, x, y, begin, reset_each_batch=False)
            jax.block_until_ready(m)

        seconds = timed(run, repeats)
        results[name] = (jax.device_get(box[0].params), X.size / seconds)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(
        jax.tree.leaves(results["one"][0]), jax.tree.leaves(results["all"][0])))  # fmt: skip
    return {
        "devices": n,
        "max_abs_param_diff": diff,
        "tokens_per_sec_one": results["one"][1],
        "tokens_per_sec_all": results["all"][1],
    }


def table(r: dict) -> str:
    """The GPU table of docs/performance.md."""
    lines = [f"device: {r['device']} (jax {r['jax']})", "",
             "| measure | float32 | bfloat16 |", "|---|---|---|"]  # fmt: skip
    shapes = "B 4 T 5 H 16" if r["tiny"] else "B 32 T 35 H 256"
    for cell in ("rnn", "gru", "lstm"):
        f32, bf16 = (r["cells"].get(f"{cell}/{d}") for d in ("float32", "bfloat16"))
        show = lambda v: "" if v is None else f"{v:,.0f}"  # noqa: E731
        lines.append(f"| {cell}, {shapes}, tokens/sec | {show(f32)} | {show(bf16)} |")
    for variant, speed in r["ptb"].items():
        lines.append(f"| PTB {variant}, tokens/sec | {speed:,.0f} | |")
    p = r["population"]
    lines.append(f"| population K={p['K']} vs {p['K']} runs one after another | "
                 f"{p['speedup']:.2f}x | |")  # fmt: skip
    c = r["cudnn_vs_scan"]
    lines.append(
        "| cuDNN LSTM vs scan, max abs diff (values / grads) | "
        + (
            c["skipped"]
            if "skipped" in c
            else f"{c['max_abs_diff_outputs_and_states']:.2e} / "
            f"{max(c['max_abs_diff_param_grads'], c['max_abs_diff_input_grads']):.2e}"
        )
        + " | |"
    )
    d = r["devices"]
    lines.append(
        "| 1 device == N devices | "
        + (
            d["skipped"]
            if "skipped" in d
            else f"{d['devices']} devices: max param diff {d['max_abs_param_diff']:.1e}, "
            f"{d['tokens_per_sec_all'] / d['tokens_per_sec_one']:.2f}x"
        )
        + " | |"
    )
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny shapes: seconds on a CPU")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="device_check.json")
    args = p.parse_args()
    repeats = 1 if args.tiny else args.repeats
    start = time.perf_counter()
    results = {"device": str(jax.devices()[0]), "backend": jax.default_backend(),
               "jax": jax.__version__, "tiny": args.tiny}  # fmt: skip
    for name, part in (("cudnn_vs_scan", lambda: cudnn_vs_scan(args.tiny)),
                       ("cells", lambda: cells(args.tiny, repeats)),
                       ("population", lambda: population_vs_sequential(args.tiny, repeats)),
                       ("ptb", lambda: ptb_speeds(args.tiny, repeats)),
                       ("devices", lambda: devices(args.tiny, repeats))):  # fmt: skip
        began = time.perf_counter()
        results[name] = part()
        print(f"{name}: {time.perf_counter() - began:.1f} s", flush=True)
    results["seconds"] = time.perf_counter() - start
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
