r"""Throughput of the seed configuration (and GRU / LSTM): training, generation, memory.

    python benchmarks/throughput.py                        # table + JSON, about a minute
    python benchmarks/throughput.py --compare-torch --torch-python=/path/to/venv/bin/python

Reports, per cell:
  * training tokens/sec after compilation (median over epochs; each epoch's time includes
    building its minibatches, as d2l's timer does) and the compile time (from creating the
    train state to the first finished epoch);
  * greedy generation of 1,000 characters after a 14-character prefix: one compiled call vs.
    a per-token Python loop over the same model (one jitted step per character);
  * the peak resident memory of the process.
  * the machine's matmul peak (a 2048^3 `jnp.matmul`, float32 and bfloat16 operands) and each
    cell's training GFLOP/s as a fraction of it (`train_flops_per_token` says what is counted).
With `--compare-torch`, the book's PyTorch model (`benchmarks/torch_book_rnn.py
--cell C --layers L`) and ours are run in alternation for every row of `COMPARE_ROWS` (rnn,
gru, lstm, 2-layer lstm in float32, and both LSTMs with bfloat16 matmul operands), A B A B
..., each in a fresh process for the same number of epochs, and the ratio of the median
tokens/sec is reported per row.
Results go to stdout as a table and to a JSON file (`--out`).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rnnlm_jax import data, train  # noqa: E402
from rnnlm_jax.infer.generation import greedy_ids  # noqa: E402
from rnnlm_jax.nn.models import RNNModel  # noqa: E402

TORCH_SCRIPT = ROOT / "benchmarks" / "torch_book_rnn.py"
PREFIX = "time traveller"
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
# (cell, layers, dtype of our matmul operands); PyTorch always runs float32.
COMPARE_ROWS = [
    ("rnn", 1, "float32"),
    ("gru", 1, "float32"),
    ("lstm", 1, "float32"),
    ("lstm", 2, "float32"),
    ("lstm", 1, "bfloat16"),
    ("lstm", 2, "bfloat16"),
]


def train_flops_per_token(cell: str, layers: int, hidden: int, vocab_size: int) -> float:
    """Matmul FLOPs of one training token: 3x the forward's (forward, input gradient, weight
    gradient). Forward: per layer `2 k H^2` for the recurrent matmul (k gates), plus
    `2 k H^2` for the input projection of layers above the first (the first layer's one-hot
    input is a row gather, counted as 0), plus `2 H V` for the head."""
    k = GATES[cell]
    forward = layers * 2 * k * hidden * hidden + (layers - 1) * 2 * k * hidden * hidden
    return 3.0 * (forward + 2 * hidden * vocab_size)


def matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> dict[str, float]:
    """Best-of-`repeats` GFLOP/s of an `[n, n] @ [n, n]` matmul, float32 and bfloat16 operands
    (float32 accumulation and result)."""
    f = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
    peaks = {}
    for name, dtype in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
        a = jnp.ones((n, n), dtype)
        f(a, a).block_until_ready()
        best = min(_timed(functools.partial(_run_once, f, a)) for _ in range(repeats))
        peaks[name] = 2 * n**3 / best / 1e9
    return peaks


def _run_once(f, a):
    f(a, a).block_until_ready()


def load_corpus(max_tokens: int):
    text = data.find_time_machine().read_text()
    return data.load_corpus(text, "char", max_tokens)


def measure_training(
    corpus, vocab, cell, hidden, batch, steps, epochs, warmup, layers=1, dtype="float32"
):
    """Trains `epochs` epochs; returns compile time and tokens/sec over the epochs after
    `warmup` (both the median of the epochs and the total tokens / total time, as the
    PyTorch script reports it)."""
    model = RNNModel(
        len(vocab), cell=cell, num_hiddens=hidden, num_layers=layers, dtype=getattr(jnp, dtype)
    )
    start = time.perf_counter()
    state = train.create_train_state(model, jax.random.key(0), 1.0, 1.0, batch, steps)
    begin = model.begin_state(batch)
    rates, tokens, seconds, compile_s = [], 0, 0.0, None
    for epoch in range(epochs):
        t0 = time.perf_counter()
        X, Y = data.epoch_batches(corpus, batch, steps, "sequential", 0, epoch)
        state, m = train.train_epoch(state, X, Y, begin, False)
        m = jax.device_get(m)
        dt = time.perf_counter() - t0
        if compile_s is None:
            compile_s = time.perf_counter() - start
        if epoch >= warmup:
            rates.append(float(m["num_tokens"]) / dt)
            tokens += float(m["num_tokens"])
            seconds += dt
    perplexity = float(np.exp(m["loss_sum"] / m["num_tokens"]))
    return {
        "compile_s": compile_s,
        "tokens_per_sec_median": statistics.median(rates),
        "tokens_per_sec": tokens / seconds,
        "perplexity": perplexity,
        "state": state,
        "model": model,
    }


def measure_generation(model, params, vocab, num_preds, eager_tokens=20, repeats=3):
    """Greedy generation of `num_preds` characters after `PREFIX`, three ways:

    * `compiled_s`: one compiled call (`greedy_ids`: a scan over the prefix, then a scan
      feeding back its argmax), best of `repeats`;
    * `loop_s`: a per-token Python loop of a jitted one-token step, reading each token
      back to the host (the book's `predict_ch8` with its step compiled), best of `repeats`;
    * `eager_ms_per_token`: the same loop calling `model.apply` un-jitted, as a direct
      port of `predict_ch8` would, timed over `eager_tokens` characters (it is far too slow
      for 1,000).
    """
    prefix = jnp.asarray(vocab[list(PREFIX)], jnp.int32)
    compiled = np.asarray(greedy_ids(model, params, prefix, num_preds))
    compiled_s = min(
        _timed(lambda: np.asarray(greedy_ids(model, params, prefix, num_preds)))
        for _ in range(repeats)
    )

    def make_loop(step, n):
        def loop():
            state = model.begin_state(1)
            token = prefix[0]
            for t in prefix[1:]:  # warm up on the prefix, one call per character
                _, state = step(params, token, state)
                token = t
            out = []
            for _ in range(n):
                token, state = step(params, token, state)
                out.append(int(token))  # the book's loop reads each token back
            return np.asarray(out)

        return loop

    def one_step(params, token, state):
        logits, state = model.apply({"params": params}, token.reshape(1, 1), state)
        return jnp.argmax(logits[-1]), state

    loop = make_loop(jax.jit(one_step), num_preds)
    looped = loop()  # compiles the step
    assert np.array_equal(compiled, looped), "compiled and looped generation disagree"
    loop_s = min(_timed(loop) for _ in range(repeats))
    eager_loop = make_loop(one_step, eager_tokens)
    eager_ms = _timed(eager_loop) * 1e3 / (len(PREFIX) - 1 + eager_tokens)
    return {"compiled_s": compiled_s, "loop_s": loop_s, "eager_ms_per_token": eager_ms}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compare_torch(args, vocab_size: int) -> dict:
    """A B A B ...: ours and the PyTorch baseline for every row, each a fresh process, same
    epochs; PyTorch runs once per (cell, layers) and round, shared by our dtypes."""
    common = [f"--epochs={args.compare_epochs}", f"--hidden={args.hidden}"]
    ours = {row: [] for row in COMPARE_ROWS}
    theirs = {(cell, layers): [] for cell, layers, _ in COMPARE_ROWS}
    for i in range(args.rounds):
        for cell, layers, dtype in COMPARE_ROWS:
            cmd = [sys.executable, __file__, "--train-only", f"--cells={cell}"]
            cmd += [f"--layers={layers}", f"--dtype={dtype}", *common]
            ours[cell, layers, dtype].append(_last_json(_run(cmd))["tokens_per_sec"])
            if dtype != "float32":
                continue
            cmd = [args.torch_python, str(args.torch_script), f"--threads={args.torch_threads}"]
            cmd += [f"--cell={cell}", f"--layers={layers}", *common]
            line = _run(cmd).strip().splitlines()[-1]
            theirs[cell, layers].append(float(line.split()[0].split("=")[1]))
            print(
                f"round {i + 1}, {cell} x{layers}: rnnlm_jax {ours[cell, layers, dtype][-1]:,.0f}"
                f"  pytorch {theirs[cell, layers][-1]:,.0f} tokens/sec",
                flush=True,
            )
    rows = []
    for cell, layers, dtype in COMPARE_ROWS:
        a, b = ours[cell, layers, dtype], theirs[cell, layers]
        gflops = (
            statistics.median(a)
            * train_flops_per_token(cell, layers, args.hidden, vocab_size)
            / 1e9
        )
        rows.append(
            {
                "cell": cell,
                "layers": layers,
                "dtype": dtype,
                "rnnlm_jax": _summary(a),
                "pytorch": _summary(b),
                "ratio_of_medians": statistics.median(a) / statistics.median(b),
                "train_gflops": gflops,
                "fraction_of_peak": gflops / args.peaks[dtype],
            }
        )
    return {
        "rounds": args.rounds,
        "epochs": args.compare_epochs,
        "torch_threads": args.torch_threads,
        "rows": rows,
    }


def print_compare_table(t: dict) -> None:
    print(
        f"rnnlm_jax / pytorch, {t['rounds']} interleaved rounds of {t['epochs']} epochs "
        "(medians; PyTorch in float32):"
    )
    print(
        f"{'cell':<5} {'layers':>6} {'dtype':>9} {'rnnlm_jax tok/s':>16} {'pytorch tok/s':>14} "
        f"{'ratio':>6} {'GFLOP/s':>8} {'of peak':>8}"
    )
    for r in t["rows"]:
        print(
            f"{r['cell']:<5} {r['layers']:>6} {r['dtype']:>9} {r['rnnlm_jax']['median']:>16,.0f} "
            f"{r['pytorch']['median']:>14,.0f} {r['ratio_of_medians']:>5.2f}x "
            f"{r['train_gflops']:>8.1f} {r['fraction_of_peak']:>7.0%}"
        )


def _summary(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "all": xs}


def _run(cmd) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
    if r.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed: {r.stderr.strip().splitlines()[-1:]}")
    return r.stdout


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cells", default="rnn,gru,lstm")
    p.add_argument("--epochs", type=int, default=30, help="training epochs per cell")
    p.add_argument("--warmup", type=int, default=2, help="epochs left out of tokens/sec")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=35)
    p.add_argument("--max-tokens", type=int, default=10000)
    p.add_argument("--num-preds", type=int, default=1000)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "throughput.json"))
    p.add_argument("--tiny", action="store_true", help="a seconds-long run (for the smoke test)")
    p.add_argument("--train-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--compare-torch", action="store_true")
    p.add_argument("--torch-python", default=sys.executable)
    p.add_argument("--torch-script", default=str(TORCH_SCRIPT))
    p.add_argument("--torch-threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compare-epochs", type=int, default=20)
    args = p.parse_args()
    if args.tiny:
        args.epochs, args.hidden, args.num_preds, args.max_tokens = 4, 16, 20, 3000
        args.warmup = 1

    corpus, vocab = load_corpus(args.max_tokens)
    common = dict(hidden=args.hidden, batch=args.batch, steps=args.steps, warmup=args.warmup)
    if args.train_only:
        r = measure_training(
            corpus,
            vocab,
            args.cells,
            epochs=args.epochs,
            layers=args.layers,
            dtype=args.dtype,
            **common,
        )
        print(json.dumps({k: r[k] for k in ("compile_s", "tokens_per_sec", "perplexity")}))
        return
    args.peaks = matmul_peak_gflops(512 if args.tiny else 2048)
    print(
        f"matmul peak: {args.peaks['float32']:.0f} GFLOP/s float32, "
        f"{args.peaks['bfloat16']:.0f} GFLOP/s bfloat16 operands"
    )

    results = {
        "device": str(jax.devices()[0]),
        "matmul_peak_gflops": args.peaks,
        "jax": jax.__version__,
        "cpu_count": os.cpu_count(),
        "config": {k: getattr(args, k) for k in ("epochs", "hidden", "batch", "steps")},
        "cells": {},
    }
    n = args.num_preds
    print(
        f"{'cell':<5} {'compile s':>9} {'train tok/s':>12} {f'gen {n} compiled':>17} "
        f"{'jitted-step loop':>17} {'speedup':>8} {'eager loop':>13} {'speedup':>8} "
        f"{'GFLOP/s':>8} {'of peak':>8}"
    )
    for cell in args.cells.split(","):
        r = measure_training(corpus, vocab, cell, epochs=args.epochs, **common)
        g = measure_generation(r["model"], r["state"].params, vocab, args.num_preds)
        results["cells"][cell] = {
            "compile_s": r["compile_s"],
            "train_tokens_per_sec_median": r["tokens_per_sec_median"],
            "perplexity": r["perplexity"],
            "generate_compiled_s": g["compiled_s"],
            "generate_loop_s": g["loop_s"],
            "generate_speedup": g["loop_s"] / g["compiled_s"],
            "generate_eager_ms_per_token": g["eager_ms_per_token"],
            "generate_eager_speedup": g["eager_ms_per_token"] * 1e-3 * n / g["compiled_s"],
        }
        c = results["cells"][cell]
        flops = train_flops_per_token(cell, 1, args.hidden, len(vocab))
        c["train_gflops"] = c["train_tokens_per_sec_median"] * flops / 1e9
        c["fraction_of_peak"] = c["train_gflops"] / args.peaks["float32"]
        print(
            f"{cell:<5} {c['compile_s']:>9.2f} {c['train_tokens_per_sec_median']:>12,.0f} "
            f"{c['generate_compiled_s'] * 1e3:>14.1f} ms {c['generate_loop_s'] * 1e3:>14.1f} ms "
            f"{c['generate_speedup']:>7.1f}x {c['generate_eager_ms_per_token']:>8.1f} ms/ch "
            f"{c['generate_eager_speedup']:>7.0f}x {c['train_gflops']:>8.1f} "
            f"{c['fraction_of_peak']:>7.0%}",
            flush=True,
        )
    if args.compare_torch:
        results["compare_torch"] = compare_torch(args, len(vocab))
        print_compare_table(results["compare_torch"])
    results["peak_rss_mib"] = peak_rss_mib()
    print(f"peak resident memory: {results['peak_rss_mib']:.0f} MiB")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
