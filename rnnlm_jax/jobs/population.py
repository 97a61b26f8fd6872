"""Population mode: K trials that differ only in lr, clip and seed, trained together as one
compiled program with `jax.vmap` (a sweep for an accelerator that one small RNN leaves idle).

Each member is exactly its own run: its parameters and dropout key come from its seed, its
minibatches from `(seed, epoch)`, and its learning rate and clipping threshold live in its
optimizer state (`optax.inject_hyperparams`), so member i ends where the individual run with
the same lr, clip and seed ends, to float tolerance.

It runs through the one run loop (`rnnlm_jax.train.loop`), so it resumes after a stop or a
crash, bit-exact, like the language model; its results are `population.jsonl` (one line per
epoch and member) and `population.md` (the final metrics).
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from rnnlm_jax import train
from rnnlm_jax.config.checks import ConfigError, model_from_config, validate
from rnnlm_jax.config.fields import fill_defaults
from rnnlm_jax.data import batching
from rnnlm_jax.files import write_json_atomic, write_text_atomic
from rnnlm_jax.jobs.lm import check_compatible, load_data, steps_per_epoch
from rnnlm_jax.nn.models import RNNModel
from rnnlm_jax.train import checkpoints, loop, metrics
from rnnlm_jax.train.step import _train_chunk

POPULATION_FIELDS = ("lr", "clip", "seed")

log = logging.getLogger(__name__)


def make_optimizer() -> optax.GradientTransformation:
    """The book's clipped SGD with `lr` and `clip` in the optimizer state (one per member)."""
    return optax.inject_hyperparams(train.make_optimizer)(lr=1.0, clip=1.0)


def create_population(
    model: RNNModel, seeds, lrs, clips, batch_size: int, num_steps: int
) -> train.TrainState:
    """A train state whose every leaf has a leading member axis K."""
    tx = make_optimizer()

    def member(seed, lr, clip):
        single = train.create_train_state(
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
    """`train.train_epoch` for every member at once: `X_all, Y_all` int32 `[K, N, B, T]`.
    Returns the new states and per-member metrics `[K]`."""
    epoch = functools.partial(train._train_epoch, reset_each_batch=reset_each_batch)
    return jax.vmap(epoch, in_axes=(0, 0, 0, None))(states, X_all, Y_all, begin_state)


@functools.partial(jax.jit, donate_argnums=0, static_argnames=("reset_each_batch", "state_reset"))
def train_population_chunk(
    states, carries, X_all, Y_all, begin_state, reset_each_batch: bool, state_reset: float = 0.0
):
    """`train.train_chunk` for every member at once: `carries` `[K, L, B, H]`, `X_all,
    Y_all` int32 `[K, N, B, T]`. Returns the new states, carries and per-member metrics."""
    chunk = functools.partial(
        _train_chunk, reset_each_batch=reset_each_batch, state_reset=state_reset
    )
    return jax.vmap(chunk, in_axes=(0, 0, 0, 0, None))(states, carries, X_all, Y_all, begin_state)


def population_batches(corpus, config, seeds, epoch):
    """Each member's minibatches of `epoch` (from its own seed), stacked `[K, N, B, T]`."""
    pairs = [
        batching.epoch_batches(
            corpus,
            config.batch_size,
            config.num_steps,
            config.partition,
            int(s),
            epoch,
            config.random_offset,
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


class PopulationJob(loop.Job):
    """Every trial of a sweep (lr, clip, seed) trained at once (see `loop.Job`)."""

    name = "population"

    def __init__(self, config: ml_collections.ConfigDict, trials: list[dict[str, Any]]):
        config = validate(config)
        config.job = "population"
        self.config = config
        self.seeds, self.lrs, self.clips = members_from_trials(config, trials)

    def load(self) -> None:
        config = self.config
        loaded = load_data(config)
        self.corpus, self.vocab = loaded.train, loaded.vocab
        self.model = model_from_config(config, len(self.vocab))
        self.steps_per_epoch = steps_per_epoch(config, len(self.corpus))

    def _create(self):
        c = self.config
        return create_population(
            self.model, self.seeds, self.lrs, self.clips, c.batch_size, c.num_steps
        )

    def abstract_state(self):
        self.begin = train.begin_state(self.model, self.config.batch_size)  # JAX starts here
        return jax.eval_shape(self._create)

    def init_state(self):
        return self._create()

    def begin_carry(self):
        K = len(self.seeds)
        return jax.tree.map(lambda s: jnp.broadcast_to(s, (K, *s.shape)), self.begin)

    def check_resume(self, workdir: Path, saved) -> dict:
        saved_members = json.loads((workdir / MEMBERS_FILE).read_text())
        members = {"seed": self.seeds, "lr": self.lrs, "clip": self.clips}
        if saved_members != members:
            raise ConfigError(
                f"the workdir's population has other members ({saved_members}); use another "
                "--workdir or the same sweep"
            )
        return check_compatible(fill_defaults(saved), self.config)

    def write_files(self, workdir: Path) -> None:
        write_json_atomic(workdir / checkpoints.CONFIG_FILE, self.config.to_dict())
        write_json_atomic(
            workdir / MEMBERS_FILE, {"seed": self.seeds, "lr": self.lrs, "clip": self.clips}
        )

    def epoch_data(self, epoch: int):
        return population_batches(self.corpus, self.config, self.seeds, epoch)

    def train_chunk(self, state, carry, data, start: int, stop: int):
        X_all, Y_all = data
        state, carry, m = train_population_chunk(
            state, carry, X_all[:, start:stop], Y_all[:, start:stop], self.begin,
            reset_each_batch=self.config.partition == "random",
            state_reset=self.config.state_reset,
        )  # fmt: skip
        m = jax.device_get(m)
        sums = {
            "loss_sum": [float(v) for v in m["loss_sum"]],
            "num_tokens": [float(v) for v in m["num_tokens"]],
        }
        return state, carry, sums

    def chunk_record(self, sums: dict, seconds: float) -> dict:
        return {"tokens_per_sec": float(np.sum(sums["num_tokens"])) / seconds, "seconds": seconds}

    def end_epoch(self, state, epoch: int, sums: dict, seconds: float) -> dict:
        perplexities = [
            metrics.perplexity(loss / n) for loss, n in zip(sums["loss_sum"], sums["num_tokens"])
        ]
        return {
            "epoch": epoch,
            "perplexities": perplexities,
            "tokens_per_sec": float(np.sum(sums["num_tokens"])) / seconds,
            "seconds": seconds,
        }

    def log_epoch(self, state, record: dict, logger) -> None:
        log.info(
            f"epoch {record['epoch']}: {record['tokens_per_sec']:,.0f} tokens/sec, all members"
        )

    def rows(self, record: dict) -> list[dict[str, Any]]:
        """The members' rows of an epoch's record."""
        return [
            {"member": k, "seed": self.seeds[k], "lr": self.lrs[k], "clip": self.clips[k],
             "epoch": record["epoch"], "perplexity": p}
            for k, p in enumerate(record["perplexities"])
        ]  # fmt: skip

    def report(self, state, result: loop.RunResult) -> None:
        workdir = self.workdir
        lines = "".join(
            json.dumps(row) + "\n" for record in result.history for row in self.rows(record)
        )
        write_text_atomic(workdir / "population.jsonl", lines)
        rows = self.rows(result.history[-1]) if result.history else []
        table = metrics.markdown_table(
            ["member", "seed", "lr", "clip", "epoch", "perplexity"],
            [[r["member"], r["seed"], r["lr"], r["clip"], r["epoch"], f"{r['perplexity']:.4g}"]
             for r in rows],
        )  # fmt: skip
        write_text_atomic(workdir / "population.md", table)
        log.info(table.rstrip("\n"))
        result.extras["rows"] = rows


MEMBERS_FILE = "population.json"  # the members' seeds, lrs and clips, checked on resume


def train_and_evaluate(
    config: ml_collections.ConfigDict, trials: list[dict[str, Any]], workdir: str
) -> list[dict[str, Any]]:
    """Trains (or resumes) every trial at once for `config.num_epochs` in `workdir`; writes
    `population.jsonl` (one line per epoch and member) and `population.md` (final metrics),
    prints the table and returns its rows."""
    return loop.run(PopulationJob(config, trials), workdir).extras.get("rows", [])
