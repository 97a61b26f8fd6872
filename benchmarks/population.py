r"""Population mode vs sequential runs: K members trained at once with `jax.vmap` against the
same K runs one after another, seed configuration, same epochs.

    python benchmarks/population.py            # K = 16, 10 epochs each, about a minute
    python benchmarks/population.py --members=4 --epochs=3 --hidden=32   # seconds
    python benchmarks/population.py --cell=lstm   # the same for the GRU or the LSTM

Both sides are timed after compilation (one warm-up epoch each); the speedup is total
tokens/sec of the population over total tokens/sec of the sequential runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configs import timemachine  # noqa: E402
from rnnlm_jax import data, train  # noqa: E402
from rnnlm_jax.config.checks import model_from_config  # noqa: E402
from rnnlm_jax.jobs import population  # noqa: E402
from rnnlm_jax.jobs.lm import load_data  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--members", type=int, default=16)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--cell", default="rnn", choices=("rnn", "gru", "lstm"))
    p.add_argument("--out", default="")
    args = p.parse_args()
    config = timemachine.get_config()
    config.num_hiddens = args.hidden
    config.cell = args.cell
    loaded = load_data(config)
    corpus, vocab = loaded.train, loaded.vocab
    model = model_from_config(config, len(vocab))
    K, B, T = args.members, config.batch_size, config.num_steps
    seeds = list(range(K))
    lrs = [0.5 + 0.1 * (k % 8) for k in range(K)]
    clips = [1.0 if k % 2 == 0 else 0.5 for k in range(K)]
    begin = model.begin_state(B)

    states = population.create_population(model, seeds, lrs, clips, B, T)
    X, Y = population.population_batches(corpus, config, seeds, 0)
    states, m = population.train_population_epoch(states, X, Y, begin, reset_each_batch=False)
    jax.block_until_ready(m)
    start, tokens = time.perf_counter(), 0.0
    for epoch in range(1, args.epochs + 1):
        X, Y = population.population_batches(corpus, config, seeds, epoch)
        states, m = population.train_population_epoch(states, X, Y, begin, reset_each_batch=False)
        tokens += float(jax.device_get(m["num_tokens"]).sum())
    pop_rate = tokens / (time.perf_counter() - start)

    seq_tokens, seq_seconds = 0.0, 0.0
    for k in range(K):
        state = train.create_train_state(model, jax.random.key(k), lrs[k], clips[k], B, T)
        X, Y = data.epoch_batches(corpus, B, T, "sequential", k, 0)
        state, m = train.train_epoch(state, X, Y, begin, reset_each_batch=False)
        jax.block_until_ready(m)
        start = time.perf_counter()
        for epoch in range(1, args.epochs + 1):
            X, Y = data.epoch_batches(corpus, B, T, "sequential", k, epoch)
            state, m = train.train_epoch(state, X, Y, begin, reset_each_batch=False)
            seq_tokens += float(jax.device_get(m["num_tokens"]))
        seq_seconds += time.perf_counter() - start
    seq_rate = seq_tokens / seq_seconds
    result = {
        "members": K,
        "epochs": args.epochs,
        "hidden": args.hidden,
        "cell": args.cell,
        "device": str(jax.devices()[0]),
        "population_tokens_per_sec": pop_rate,
        "sequential_tokens_per_sec": seq_rate,
        "speedup": pop_rate / seq_rate,
    }
    print(
        f"{args.cell}, K={K}: population {pop_rate:,.0f} tokens/sec, "
        f"sequential {seq_rate:,.0f} tokens/sec, speedup {pop_rate / seq_rate:.2f}x"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
