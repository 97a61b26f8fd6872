"""Population mode: K trials that differ only in lr, clip and seed, trained together as one
compiled program with `jax.vmap` (a sweep for an accelerator that one small RNN leaves idle).

Each member is exactly its own run: its parameters and dropout key come from its seed, its
minibatches from `(seed, epoch)`, and its learning rate and clipping threshold live in its
optimizer state (`optax.inject_hyperparams`), so member i ends where the individual run with
the same lr, clip and seed ends, to float tolerance.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from rnnlm_jax import data, metrics, training
from rnnlm_jax.configuration import ConfigError, model_from_config, validate
from rnnlm_jax.experiment import load_data
from rnnlm_jax.files import open_append, write_text_atomic
from rnnlm_jax.models import RNNModel

POPULATION_FIELDS = ("lr", "clip", "seed")


def make_optimizer() -> optax.GradientTransformation:
    """The book's clipped SGD with `lr` and `clip` in the optimizer state (one per member)."""
    return optax.inject_hyperparams(training.make_optimizer)(lr=1.0, clip=1.0)


def create_population(
    model: RNNModel, seeds, lrs, clips, batch_size: int, num_steps: int
) -> training.TrainState:
    """A train state whose every leaf has a leading member axis K."""
    tx = make_optimizer()

    def member(seed, lr, clip):
        single = training.create_train_state(
            model, jax.random.key(seed), 1.0, 1.0, batch_size, num_steps
        )
        opt_state = tx.init(single.params)
        opt_state.hyperparams["lr"] = jnp.asarray(lr, jnp.float32)
        opt_state.hyperparams["clip"] = jnp.asarray(clip, jnp.float32)
        return single.replace(tx=tx, opt_state=opt_state)

    return jax.jit(jax.vmap(member))(
        jnp.asarray(seeds, jnp.uint32), jnp.asarray(lrs), jnp.asarray(clips)
    )


@functools.partial(jax.jit, donate_argnums=0, static_argnames="reset_each_batch")
def train_population_epoch(states, X_all, Y_all, begin_state, reset_each_batch: bool):
    """`training.train_epoch` for every member at once: `X_all, Y_all` int32 `[K, N, B, T]`.
    Returns the new states and per-member metrics `[K]`."""
    epoch = functools.partial(training._train_epoch, reset_each_batch=reset_each_batch)
    return jax.vmap(epoch, in_axes=(0, 0, 0, None))(states, X_all, Y_all, begin_state)


def population_batches(corpus, config, seeds, epoch):
    """Each member's minibatches of `epoch` (from its own seed), stacked `[K, N, B, T]`."""
    pairs = [
        data.epoch_batches(
            corpus, config.batch_size, config.num_steps, config.partition, int(s), epoch
        )
        for s in seeds
    ]
    return np.stack([x for x, _ in pairs]), np.stack([y for _, y in pairs])


def members_from_trials(config, trials: list[dict[str, Any]]):
    """`(seeds, lrs, clips)` of the trials; a trial touching another field is a `ConfigError`."""
    for i, trial in enumerate(trials):
        other = sorted(set(trial) - set(POPULATION_FIELDS))
        if other:
            raise ConfigError(
                f"population mode trains trials that differ only in {POPULATION_FIELDS}; "
                f"trial {i} also sets {other} (run it as a sweep instead)"
            )
    seeds = [int(t.get("seed", config.seed)) for t in trials]
    lrs = [float(t.get("lr", config.lr)) for t in trials]
    clips = [float(t.get("clip", config.clip)) for t in trials]
    return seeds, lrs, clips


def train_and_evaluate(
    config: ml_collections.ConfigDict, trials: list[dict[str, Any]], workdir: str
) -> list[dict[str, Any]]:
    """Trains every trial at once for `config.num_epochs`; writes `population.jsonl` (one
    line per epoch and member) and `population.md` (final metrics) into `workdir`, prints
    the table and returns its rows. Keeps no checkpoints."""
    config = validate(config)
    seeds, lrs, clips = members_from_trials(config, trials)
    loaded = load_data(config)
    corpus, vocab = loaded.train, loaded.vocab
    model = model_from_config(config, len(vocab))
    states = create_population(model, seeds, lrs, clips, config.batch_size, config.num_steps)
    begin_state = training.begin_state(model, config.batch_size)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(workdir / "config.json", config.to_json(indent=2) + "\n")
    rows = []
    write_text_atomic(workdir / "population.jsonl", "")
    with open_append(workdir / "population.jsonl") as log:
        for epoch in range(config.num_epochs):
            X_all, Y_all = population_batches(corpus, config, seeds, epoch)
            start = time.perf_counter()
            states, m = train_population_epoch(
                states, X_all, Y_all, begin_state, reset_each_batch=config.partition == "random"
            )
            m = jax.device_get(m)
            seconds = time.perf_counter() - start
            rows = []
            for k in range(len(seeds)):
                perplexity = metrics.perplexity(float(m["loss_sum"][k] / m["num_tokens"][k]))
                rows.append(
                    {
                        "member": k,
                        "seed": seeds[k],
                        "lr": lrs[k],
                        "clip": clips[k],
                        "epoch": epoch + 1,
                        "perplexity": perplexity,
                    }
                )
                log.write(json.dumps(rows[-1]) + "\n")
            if (epoch + 1) % config.log_every_epochs == 0:
                tokens_per_sec = float(np.sum(m["num_tokens"])) / seconds
                print(f"epoch {epoch + 1}: {tokens_per_sec:,.0f} tokens/sec, all members")
    lines = ["| member | seed | lr | clip | epoch | perplexity |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['member']} | {r['seed']} | {r['lr']} | {r['clip']} | {r['epoch']} | "
            f"{r['perplexity']:.4g} |"
        )
    table = "\n".join(lines) + "\n"
    write_text_atomic(workdir / "population.md", table)
    print(table, end="")
    return rows
