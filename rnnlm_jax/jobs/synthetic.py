"""The synthetic-task job: a model of any cell and block trained on a state-tracking or recall
task (`rnnlm_jax.data.synthetic`) through the one run loop, then tested past the lengths it
was trained on.

Training: each minibatch `batch_size` sequences of lengths drawn uniformly from
[train_min_len, train_max_len], padded to train_max_len (one compiled program), drawn from
`(seed, epoch, step)` alone, so a resumed run sees the minibatches an uninterrupted one
does. The loss is the cross-entropy over the task's classes at its scored positions (the
model's vocabulary covers the inputs and the classes; the head's logits beyond the classes
are ignored). Every epoch ends with two evaluations on sets fixed by the seed: `iid`, lengths
in the training range, and `test`, lengths in [test_min_len, test_max_len] (a per-position
task scores each prefix whose length lies there), accuracy by length in `test_bins` bins.
mqar trains and tests at `mqar_seq_len`.

The records: `train_loss`, `train_accuracy`, `iid_accuracy`, `test_accuracy`,
`test_scaled` (scaled accuracy: 0 at chance, 1 perfect) and `test_min_scaled` (the worst
bin's); the end writes `synthetic_results.json` (the same, with the bins) to the workdir.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from rnnlm_jax.config.checks import validate
from rnnlm_jax.config.fields import fill_defaults
from rnnlm_jax.data import synthetic
from rnnlm_jax.files import write_json_atomic, write_text_atomic
from rnnlm_jax.jobs.lm import check_compatible
from rnnlm_jax.nn.models import RNNModel
from rnnlm_jax.nn.spec import SHAPE_FIELDS, ModelSpec
from rnnlm_jax.train import checkpoints, loop
from rnnlm_jax.train.step import config_optimizer

log = logging.getLogger(__name__)

RESULTS_FILE = "synthetic_results.json"
EVAL_BATCH = 256  # sequences per compiled evaluation call
TRAIN, IID, TEST = 1, 2, 3  # the streams of random numbers each set is drawn from
# Fields a checkpoint cannot be resumed with other values of: the task's and the model's.
FIXED_FIELDS = ("job", "task", "modulus", "num_kv_pairs", "mqar_vocab_size", *SHAPE_FIELDS,
                "negative_eigenvalues", "optimizer")  # fmt: skip


def task_from_config(config: ml_collections.ConfigDict) -> synthetic.Task:
    """The task `config.task` names, with its fields."""
    return synthetic.Task(config.task, config.modulus, config.mqar_vocab_size,
                          config.num_kv_pairs, config.power_a)  # fmt: skip


def draw(task: synthetic.Task, config, stream: int, *key: int, count: int, low: int,
         high: int, width: int) -> synthetic.Batch:  # fmt: skip
    """`count` sequences of lengths in [low, high], padded to `width`, drawn from the
    generator seeded `(seed, stream, *key)`."""
    rng = np.random.default_rng([config.seed, stream, *key])
    if task.name == "mqar":
        return task.sample(rng, np.full(count, width), width)
    lengths = synthetic.sample_lengths(rng, count, max(low, task.min_length()), high)
    return task.sample(rng, lengths, width)


def evaluation_set(task: synthetic.Task, config, stream: int) -> synthetic.Batch:
    """The fixed `iid` (training lengths) or `test` set; a per-position task's test set is
    whole sequences of test_max_len whose prefixes shorter than test_min_len are unscored."""
    c = config
    if task.name == "mqar":
        return draw(task, c, stream, count=c.eval_examples, low=c.mqar_seq_len,
                    high=c.mqar_seq_len, width=c.mqar_seq_len)  # fmt: skip
    low, high = (c.train_min_len, c.train_max_len) if stream == IID else (
        c.test_min_len, c.test_max_len)  # fmt: skip
    if task.per_position and stream == TEST:
        batch = draw(task, c, stream, count=c.eval_examples, low=high, high=high, width=high)
        scored = np.arange(high)[None, :] + 1 >= low
        return batch._replace(weights=batch.weights * scored)
    return draw(task, c, stream, count=c.eval_examples, low=low, high=high, width=high)


def length_bins(low: int, high: int, bins: int) -> np.ndarray:
    """`bins + 1` integer edges splitting lengths [low, high] into (near) equal bins."""
    return np.unique(np.linspace(low, high + 1, bins + 1).round().astype(int))


class SyntheticJob(loop.Job):
    """A model trained on one synthetic task (see the module docstring and `loop.Job`)."""

    name = "synthetic"
    plot_keys = ("train_loss",)
    plot_file = "train_loss.png"
    plot_ylabel = "training loss (cross-entropy)"

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = validate(config)

    def load(self) -> None:
        c = self.config
        self.task = task_from_config(c)
        self.width = c.mqar_seq_len if self.task.name == "mqar" else c.train_max_len
        self.model = RNNModel.from_spec(ModelSpec.from_config(c), self.task.model_vocab)
        self.steps_per_epoch = c.steps_per_epoch
        self.tx = config_optimizer(c, c.steps_per_epoch)
        self.sets = {"iid": evaluation_set(self.task, c, IID)}
        if self.task.name != "mqar":
            self.sets["test"] = evaluation_set(self.task, c, TEST)
        self._step = jax.jit(self._train_step, donate_argnums=0)
        self._eval = jax.jit(self._predict)
        shapes = jax.eval_shape(
            self.model.init,
            jax.random.key(0),
            jnp.zeros((1, self.width), jnp.int32),
            self.model.begin_state(1),
        )
        params = sum(x.size for x in jax.tree.leaves(shapes))
        self.flops_per_step = 6.0 * params * c.batch_size * self.width  # chunks of ~1e11 FLOPs

    def _logits(self, params, inputs):
        """`[B, T, C]` logits over the task's classes."""
        B, T = inputs.shape
        logits, _ = self.model.apply({"params": params}, inputs, self.model.begin_state(B))
        logits = logits.reshape(T, B, -1)[..., : self.task.num_classes]
        return jnp.swapaxes(logits, 0, 1)

    def _train_step(self, state, inputs, targets, weights):
        def loss_fn(params):
            logits = self._logits(params, inputs)
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
            loss = (losses * weights).sum() / jnp.maximum(weights.sum(), 1.0)
            correct = ((logits.argmax(-1) == targets) * weights).sum()
            return loss, correct

        (loss, correct), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        n = weights.sum()
        return {"params": params, "opt_state": opt_state}, (loss * n, correct, n)

    def _predict(self, params, inputs):
        return self._logits(params, inputs).argmax(-1)

    def init_state(self):
        tokens = jnp.zeros((1, self.width), jnp.int32)
        params = self.model.init(jax.random.key(self.config.seed), tokens,
                                 self.model.begin_state(1))["params"]  # fmt: skip
        return {"params": params, "opt_state": self.tx.init(params)}

    def abstract_state(self):
        return jax.eval_shape(self.init_state)

    def check_resume(self, workdir: Path, saved: ml_collections.ConfigDict) -> dict:
        return check_compatible(fill_defaults(saved), self.config, FIXED_FIELDS)

    def write_files(self, workdir: Path) -> None:
        write_json_atomic(workdir / checkpoints.CONFIG_FILE, self.config.to_dict())

    def describe(self) -> list[str]:
        t, c = self.task, self.config
        lengths = (f"length {c.mqar_seq_len}, {c.num_kv_pairs} pairs" if t.name == "mqar" else
                   f"lengths {c.train_min_len}-{c.train_max_len}, tested on "
                   f"{c.test_min_len}-{c.test_max_len}")  # fmt: skip
        return [f"task {t.name} ({t.num_classes} classes, {lengths}); {c.cell} in {c.block} "
                f"blocks, {c.num_layers} x {c.num_hiddens}"]  # fmt: skip

    def train_chunk(self, state, carry, data, start: int, stop: int):
        c = self.config
        epoch = data
        sums = [jnp.zeros(()) for _ in range(3)]
        for step in range(start, stop):
            batch = draw(self.task, c, TRAIN, epoch, step, count=c.batch_size,
                         low=c.train_min_len, high=c.train_max_len, width=self.width)  # fmt: skip
            state, out = self._step(state, batch.inputs, batch.targets, batch.weights)
            sums = [s + o for s, o in zip(sums, out)]
        loss, correct, n = (float(s) for s in sums)
        return state, carry, {"loss_sum": loss, "correct": correct, "scored": n}

    def epoch_data(self, epoch: int):
        return epoch

    def evaluate(self, params, batch: synthetic.Batch) -> tuple[np.ndarray, np.ndarray]:
        """`(correct, lengths)` of every scored position of `batch`: whether the model's
        class was the target, and the prefix length it stands for."""
        preds = []
        for i in range(0, len(batch.inputs), EVAL_BATCH):
            preds.append(np.asarray(self._eval(params, batch.inputs[i : i + EVAL_BATCH])))
        preds = np.concatenate(preds)
        scored = batch.weights > 0
        lengths = np.broadcast_to(np.arange(1, preds.shape[1] + 1), preds.shape)
        return (preds == batch.targets)[scored], lengths[scored]

    def end_epoch(self, state, epoch: int, sums: dict, seconds: float) -> dict:
        scored = max(sums["scored"], 1.0)
        loss = sums["loss_sum"] / scored
        if not math.isfinite(loss):
            raise loop.TrainingError(f"the training loss became {loss} in epoch {epoch}")
        record = {"epoch": epoch, "train_loss": loss, "train_accuracy": sums["correct"] / scored}
        self.results = self.evaluate_sets(state["params"])
        for name, r in self.results.items():
            record[f"{name}_accuracy"] = r["accuracy"]
            if name == "test":
                record["test_scaled"] = r["scaled"]
                record["test_min_scaled"] = min(b["scaled"] for b in r["bins"])
        record["seconds"] = seconds
        return record

    def evaluate_sets(self, params) -> dict[str, Any]:
        """Accuracy (and scaled accuracy) on each evaluation set; the test set's by bins of
        length too."""
        c, results = self.config, {}
        for name, batch in self.sets.items():
            correct, lengths = self.evaluate(params, batch)
            accuracy = float(correct.mean())
            r = {"accuracy": accuracy,
                 "scaled": synthetic.scaled_accuracy(accuracy, self.task.chance)}  # fmt: skip
            if name == "test":
                edges = length_bins(c.test_min_len, c.test_max_len, c.test_bins)
                r["bins"] = []
                for low, high in zip(edges[:-1], edges[1:]):
                    inside = (lengths >= low) & (lengths < high)
                    if inside.any():
                        a = float(correct[inside].mean())
                        r["bins"].append({"lengths": [int(low), int(high - 1)], "accuracy": a,
                                          "scaled": synthetic.scaled_accuracy(
                                              a, self.task.chance)})  # fmt: skip
            results[name] = r
        return results

    def log_epoch(self, state, record: dict, logger) -> None:
        line = (
            f"epoch {record['epoch']}: loss {record['train_loss']:.4f}, accuracy "
            f"train {record['train_accuracy']:.3f}, iid {record['iid_accuracy']:.3f}"
        )
        if "test_scaled" in record:
            line += (f", test {record['test_accuracy']:.3f} (scaled {record['test_scaled']:.3f},"
                     f" worst bin {record['test_min_scaled']:.3f})")  # fmt: skip
        log.info(line)

    def report(self, state, result: loop.RunResult) -> None:
        c = self.config
        if not hasattr(self, "results"):  # resumed with nothing left to train
            self.results = self.evaluate_sets(state["params"])
        seconds = sum(r.get("seconds", 0.0) for r in result.history)
        summary = {"task": c.task, "cell": c.cell, "block": c.block,
                   "num_hiddens": c.num_hiddens, "num_layers": c.num_layers,
                   "steps": loop.total_steps(self), "train_seconds": seconds,
                   "chance": self.task.chance, **self.results}  # fmt: skip
        write_text_atomic(self.workdir / RESULTS_FILE, json.dumps(summary, indent=2) + "\n")
        for name, r in self.results.items():
            log.info(f"{name}: accuracy {r['accuracy']:.4f}, scaled {r['scaled']:.4f}")
            for b in r.get("bins", []):
                low, high = b["lengths"]
                log.info(f"  lengths {low}-{high}: accuracy {b['accuracy']:.4f}, scaled "
                         f"{b['scaled']:.4f}")  # fmt: skip
        result.extras["summary"] = summary


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains (or resumes) a model on `config.task` in `workdir`; writes
    `synthetic_results.json` there. Returns the results (None after a stop)."""
    return loop.run(SyntheticJob(config), workdir).extras.get("summary")
