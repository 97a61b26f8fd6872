"""The language-model job: a recurrent LM on a corpus (the book's Time Machine RNN, the Penn
Treebank LSTM, tiny Shakespeare, your own text), trained by the run loop.

    result = train_and_evaluate(config, workdir)

Running the same config with the same workdir again continues from the latest complete
checkpoint, and the result is bit-identical to a run that was never interrupted: every
epoch starts from a fresh hidden state, its minibatches depend only on `(seed, epoch)`, and
a checkpoint holds the whole train state (mid-epoch: also the position, the hidden state
carried to it and the epoch's partial sums).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rnnlm_jax.config.checks import ConfigError, model_from_config, resolved_impl, validate
from rnnlm_jax.config.fields import fill_defaults
from rnnlm_jax.data import batching, corpora
from rnnlm_jax.data.sources import DataError
from rnnlm_jax.files import write_json_atomic
from rnnlm_jax.infer import scoring
from rnnlm_jax.infer.generation import predict
from rnnlm_jax.nn.contract import begin_state
from rnnlm_jax.train import checkpoints, loop, metrics, parallel, step
from rnnlm_jax.train.loop import TrainingError  # noqa: F401  (the LM's users know it here)

log = logging.getLogger(__name__)

EVAL_CHUNK_TOKENS = 1 << 20  # held-out tokens per compiled evaluation call
# A test text up to this long is scored at batch 1 with one state carried through it all
# (Zaremba et al.'s protocol); a longer one as batch_size streams, as the validation text.
BATCH1_TEST_TOKENS = 1_000_000

# Fields that fix the parameters' shapes or the vocab: a checkpoint cannot be resumed with
# other values.
MODEL_FIELDS = ("job", "cell", "block", "mlp_expansion", "conv_width", "negative_eigenvalues",
                "mixers", "attention_window", "positions", "num_hiddens", "num_layers",
                "num_heads", "token", "min_freq")  # fmt: skip


def device_name() -> str:
    """The JAX device the run uses, e.g. `cpu:0` or `cuda:0`."""
    return str(jax.devices()[0])


def steps_per_epoch(config: ml_collections.ConfigDict, train_len: int) -> int:
    """Minibatches per epoch of `config` over a training corpus of `train_len` tokens."""
    return batching.num_batches_per_epoch(
        train_len, config.batch_size, config.num_steps, config.partition, config.random_offset
    )


def load_data(config: ml_collections.ConfigDict, cache_dir: str = "") -> corpora.Corpus:
    """The `corpora.Corpus` of a validated `config` (train, valid, test ids and the vocab);
    `cache_dir`: where token files go when the data's own folder cannot be written.

    Raises `ConfigError` if the training or validation text is too short to batch (a
    `DataError` for your own text files, whose length is the data's, not the config's).
    """
    corpus = corpora.load(corpora.CorpusSpec.from_config(config, cache_dir))
    own = config.corpus == "text"
    error = DataError if own else ConfigError
    where = f"{config.text_files}: " if own else ""
    if steps_per_epoch(config, len(corpus.train)) < 1:
        raise error(
            f"{where}a training text of {len(corpus.train)} tokens is too short for "
            f"config.batch_size={config.batch_size} x config.num_steps={config.num_steps}"
        )
    valid = corpus.valid
    if valid is not None and len(valid) < config.batch_size * config.num_steps + 1:
        hint = {
            "text": "a larger config.valid_fraction, or 0 for no validation",
            "timemachine": "config.num_val",
        }.get(config.corpus, "a smaller batch_size or num_steps")
        raise error(
            f"{where}the validation text has {len(valid)} tokens, fewer than one "
            f"batch_size x num_steps minibatch (+1) needs ({hint})"
        )
    if config.eval_every_steps and valid is None:
        raise ConfigError(f"config.eval_every_steps needs a validation text ({config.corpus} "
                          "has none here)")  # fmt: skip
    if valid is not None and config.eval_tokens > len(valid):
        raise ConfigError(
            f"config.eval_tokens={config.eval_tokens:,} is more than the validation text's "
            f"{len(valid):,} tokens (0 reads all of it)"
        )
    if 0 < config.eval_tokens < config.batch_size * config.num_steps + 1:
        raise ConfigError(
            f"config.eval_tokens={config.eval_tokens} is less than one batch_size x "
            "num_steps minibatch (+1)"
        )
    return corpus


def check_compatible(
    saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict, fields=MODEL_FIELDS
):
    """Raises `ConfigError` naming every field of `fields` (the model's) whose value differs
    from the checkpoint's.

    Returns the other fields that differ, as `{field: (saved, new)}`.
    """
    differ = {
        k: (saved.get(k), config.get(k))
        for k in sorted(set(saved.keys()) | set(config.keys()))
        if saved.get(k) != config.get(k) and not _same_sequence(saved.get(k), config.get(k))
    }
    bad = [k for k in fields if k in differ]
    if bad:
        details = ", ".join(f"{k} {differ[k][0]!r} (checkpoint) vs {differ[k][1]!r}" for k in bad)
        raise ConfigError(
            f"the workdir's checkpoint was made with another model: {details}; "
            "use another --workdir or the checkpoint's values"
        )
    return differ


def _state_signature(config: ml_collections.ConfigDict, vocab_size: int) -> tuple:
    """The train state `config` gives: `(path, shape, dtype)` of every leaf, and the
    optimizer state's structure (which can change without a leaf: SGD's has none)."""
    model = model_from_config(config, vocab_size)
    abstract = step.abstract_train_state(model, config)
    leaves = [(jax.tree_util.keystr(p), x.shape, str(x.dtype))
              for p, x in jax.tree_util.tree_flatten_with_path(abstract)[0]]  # fmt: skip
    return leaves, str(jax.tree.structure(abstract.opt_state))


def structure_fields(saved, config, changed: dict, vocab_size: int) -> list[str]:
    """The fields among `changed` (`{field: (saved, new)}`) whose new value alone gives the
    train state another structure, shape or dtype than the checkpoint's (e.g. `embed_dim`,
    `optimizer`, `weight_decay`): a checkpoint cannot be restored into it."""
    if not changed:
        return []
    try:
        before = _state_signature(saved, vocab_size)
    except Exception:  # a config of an older version: the restore itself will say
        return []
    if _state_signature(config, vocab_size) == before:
        return []
    found = []
    for k in changed:
        trial = ml_collections.ConfigDict({**saved.to_dict(), k: config.get(k)})
        try:
            if _state_signature(trial, vocab_size) != before:
                found.append(k)
        except Exception:  # the field changes the model together with another one
            found.append(k)
    return found or sorted(changed)


def _same_sequence(a, b) -> bool:
    """JSON turns tuples into lists: ('a', 'b') and ['a', 'b'] are the same value."""
    return isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and list(a) == list(b)


def device_memory() -> int | None:
    """Bytes of memory the first device can use (the host's RAM for a CPU), or None."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return None
    stats = device.memory_stats() or {}
    return stats.get("bytes_limit")


def check_fits(config, abstract_state) -> None:
    """`ConfigError` for a model whose parameters, their gradients and the optimizer's state
    alone would not fit in the device's memory (rather than an allocation failing later)."""
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract_state))
    params = sum(x.size for x in jax.tree.leaves(abstract_state.params))
    available = device_memory()
    if available and 2 * state_bytes > available:
        raise ConfigError(
            f"a model of config.num_hiddens={config.num_hiddens}, config.num_layers="
            f"{config.num_layers} has {params:,} parameters: {2 * state_bytes / 2**30:,.1f} GiB "
            f"with their gradients, more than the device's {available / 2**30:,.1f} GiB"
        )


def flops_per_step(config, params) -> float:
    """About the FLOPs of one training minibatch: 6 per weight (forward 2, backward 4) and
    token, counting every matrix (an embedding's rows are looked up, not multiplied)."""
    tokens = config.batch_size * config.num_steps
    weights = sum(
        x.size
        for path, x in jax.tree_util.tree_leaves_with_path(params)
        if x.ndim == 2 and "embed" not in jax.tree_util.keystr(path)
    )
    return 6.0 * weights * tokens


def divergence_check(mean_loss: float, vocab_size: int, epoch: int) -> None:
    """`TrainingError` if the training loss diverged: not finite, or far above a uniform
    guess's log(V) (over max(2 log V, log V + 5): a perplexity no run that learns reaches;
    an lr of 100 gives 1e59), checked before anything is derived from it."""
    uniform = math.log(max(vocab_size, 2))
    if not (math.isfinite(mean_loss) and mean_loss <= max(2 * uniform, uniform + 5)):
        raise TrainingError(
            f"the training loss became {mean_loss:.6g} in epoch {epoch} (a uniform guess: "
            f"{uniform:.3g}): training diverged; try a smaller lr or clip"
        )


class LanguageModelJob(loop.Job):
    """A recurrent language model on the corpus of `config` (see `rnnlm_jax.train.loop.Job`)."""

    name = "language model"
    best_key = "eval_perplexity"
    plot_keys = ("train_perplexity", "eval_perplexity", "test_perplexity")

    def __init__(self, config: ml_collections.ConfigDict):
        config = validate(config)
        problem = parallel.check_divisible(config.batch_size)
        if problem:
            raise ConfigError(f"config.{problem}")
        self.config = config
        self.chunk_length = 0  # `compile` sets it: the minibatches every chunk is padded to

    def load(self) -> None:
        config = self.config
        workdir = getattr(self, "workdir", None)
        self.corpus = load_data(config, str(workdir / "tokens") if workdir else "")
        self.vocab = self.corpus.vocab
        self.model = model_from_config(config, len(self.vocab))
        self.steps_per_epoch = steps_per_epoch(config, len(self.corpus.train))
        self.best_key = "eval_perplexity" if self.corpus.valid is not None else None
        if self.corpus.about:
            log.info(self.corpus.about)

    def describe(self) -> list[str]:
        return [f"implementation: {resolved_impl(self.config)}"]

    def _split(self, x, axis: int):
        """A host array as a global array split over the devices along `axis`."""
        return jax.tree.map(lambda a: parallel.global_array(np.asarray(a), self.mesh, axis), x)

    def abstract_state(self):
        # The devices, the arrays on them and the traced state: here, where a signal stops
        # the run at once, not in `load` (JAX's start-up and tracing can take long).
        B = self.config.batch_size
        self.mesh = parallel.data_mesh()
        self.replicated = parallel.replicated(self.mesh)
        self.begin = self._split(begin_state(self.model, B), axis=1)  # [L, B, H]
        self.rows = parallel.local_rows(B)  # the minibatch rows this process reads
        abstract = step.abstract_train_state(self.model, self.config, self.steps_per_epoch)
        check_fits(self.config, abstract)
        self.flops_per_step = flops_per_step(self.config, abstract.params)
        return jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(
                s.shape, s.dtype, sharding=self.replicated, weak_type=s.weak_type
            ),
            abstract,
        )

    def init_state(self):
        # Every process computes the same replicated initial state.
        return jax.jit(
            lambda: step.initial_train_state(self.model, self.config, self.steps_per_epoch),
            out_shardings=self.replicated,
        )()

    def begin_carry(self):
        return self.begin

    def check_resume(self, workdir: Path, saved: ml_collections.ConfigDict) -> dict:
        saved = fill_defaults(saved)
        changed = check_compatible(saved, self.config)
        structural = structure_fields(saved, self.config, changed, len(self.vocab))
        if structural:
            details = ", ".join(
                f"{k} {changed[k][0]!r} (checkpoint) vs {changed[k][1]!r}" for k in structural
            )
            raise ConfigError(
                f"the workdir's checkpoint has another train state: {details} change the "
                "parameters or the optimizer's state; use another --workdir or the "
                "checkpoint's values"
            )
        saved_vocab = checkpoints.read_vocab(workdir, self.config.token)
        if saved_vocab.idx_to_token != self.vocab.idx_to_token:
            raise ConfigError(
                "the data gives another vocab than the one the checkpoint was made with"
            )
        return changed

    def write_files(self, workdir: Path) -> None:
        write_json_atomic(workdir / checkpoints.CONFIG_FILE, self.config.to_dict())
        self.vocab.save(workdir / checkpoints.VOCAB_FILE)

    def epoch_data(self, epoch: int):
        c = self.config
        return batching.EpochBatches(
            self.corpus.train, c.batch_size, c.num_steps, c.partition, c.seed, epoch,
            c.random_offset,
        )  # fmt: skip

    def _global(self, x):
        """This process's rows of host minibatches `[N, rows, T]` as global arrays."""
        B = self.config.batch_size
        return jax.tree.map(lambda a: parallel.from_local(a, self.mesh, 1, B), x)

    def held_out_loss(self, state, ids) -> float:
        """Mean loss over `ids` read as `batch_size` streams from offset 0, each carrying
        its state from its start (one compiled call per about a million tokens)."""
        c = self.config
        batches = batching.held_out_batches(ids, c.batch_size, c.num_steps)
        per_call = max(1, EVAL_CHUNK_TOKENS // (c.batch_size * c.num_steps))
        carry, total = self.begin, None
        for a in range(0, len(batches), per_call):
            X, Y = self._global(batches.take(a, min(a + per_call, len(batches)), self.rows))
            carry, v = step.evaluate_from(state, carry, X, Y)
            total = v if total is None else jax.tree.map(jnp.add, total, v)
        return float(jax.device_get(total["loss_sum"] / total["num_tokens"]))

    def _held_out_record(self, prefix: str, loss: float, split: str) -> dict:
        record = metrics.loss_record(prefix, loss)  # bits per token: per char or byte
        words = self.corpus.words.get(split)
        ids = getattr(self.corpus, split)
        if words and self.vocab.token == "sentencepiece":
            record[f"{prefix}_word_perplexity"] = math.exp(min(loss * len(ids) / words, 700))
        return record

    def evaluate_at(self, state, step_: int) -> dict:
        valid = self.corpus.valid
        ids = valid[: self.config.eval_tokens] if self.config.eval_tokens else valid
        return metrics.loss_record("eval", self.held_out_loss(state, ids))

    def _resets(self) -> dict:
        """`train_chunk`'s static arguments for the state's resets between minibatches."""
        c = self.config
        return {"reset_each_batch": c.partition == "random", "state_reset": c.state_reset}

    def compile(self, state, carry, lengths: set[int]) -> None:
        """One program for every chunk: the longest; shorter chunks (an epoch's or the
        run's remainder) are padded to it and say how many of its minibatches are real
        (`train_chunk`'s `steps`), instead of a compilation of their own each."""
        B, T = self.config.batch_size, self.config.num_steps
        sharding = parallel.batch_sharded(self.mesh, 3, 1)  # as `_split` places a chunk
        self.chunk_length = max(lengths)
        X = jax.ShapeDtypeStruct((self.chunk_length, B, T), jnp.int32, sharding=sharding)
        steps = jax.ShapeDtypeStruct((), jnp.int32)
        # JAX keeps it: the first call finds it compiled.
        step.train_chunk.lower(state, carry, X, X, self.begin, steps=steps,
                               **self._resets()).compile()  # fmt: skip

    def train_chunk(self, state, carry, data, start: int, stop: int):
        n = stop - start
        X, Y = data.take(start, stop, self.rows)
        pad = [(0, max(self.chunk_length, n) - n)] + [(0, 0)] * (X.ndim - 1)
        X, Y = self._global((np.pad(X, pad), np.pad(Y, pad)))  # one transfer
        state, carry, m = step.train_chunk(
            state, carry, X, Y, self.begin, steps=np.int32(n), **self._resets()
        )
        m = jax.device_get(m)  # one transfer
        sums = {
            "loss_sum": float(m["loss_sum"]),
            "num_tokens": float(m["num_tokens"]),
            "grad_norm_sum": float(m["grad_norm"]) * n,
            "steps": n,
        }
        return state, carry, sums

    def chunk_record(self, sums: dict, seconds: float) -> dict:
        loss = sums["loss_sum"] / sums["num_tokens"]
        return {"loss": loss, "tokens_per_sec": sums["num_tokens"] / seconds, "seconds": seconds}

    def end_epoch(self, state, epoch: int, sums: dict, seconds: float) -> dict:
        mean_loss = sums["loss_sum"] / sums["num_tokens"]
        divergence_check(mean_loss, len(self.vocab), epoch)
        record = {
            "epoch": epoch,
            **metrics.loss_record("train", mean_loss),
            "grad_norm": sums["grad_norm_sum"] / sums["steps"],
            "tokens_per_sec": sums["num_tokens"] / seconds,
            "seconds": seconds,
        }
        last = epoch == loop.num_epochs(self)
        valid, test = self.corpus.valid, self.corpus.test
        if valid is not None:
            # The last epoch reads the whole validation text; the others eval_tokens of it.
            ids = valid if last or not self.config.eval_tokens else valid[: self.config.eval_tokens]
            record.update(self._held_out_record("eval", self.held_out_loss(state, ids), "valid"))
        if last and test is not None:
            # Every process: the params are global arrays.
            if len(test) <= BATCH1_TEST_TOKENS:  # batch 1, the state carried throughout
                log_probs = scoring.token_log_probs(self.model, state.params, np.asarray(test))
                loss = -float(jax.numpy.mean(log_probs))
            else:  # a long test text: batch_size streams, as the validation text
                loss = self.held_out_loss(state, test)
                record["test_streams"] = self.config.batch_size
            record.update(self._held_out_record("test", loss, "test"))
        return metrics.with_legacy_keys(record)

    def _predict(self, state, prefix: str) -> str:
        c = self.config
        return predict(self.model, state.params, self.vocab, prefix, c.num_preds, c.token)

    def log_epoch(self, state, record: dict, logger: metrics.MetricsLogger) -> None:
        text = self._predict(state, self.config.prefixes[0])
        logger.write_text("sample", text, record.get("step", record["epoch"]))
        log.info(f"epoch {record['epoch']}: perplexity {record['train_perplexity']:.2f}, {text}")

    def report(self, state, result: loop.RunResult) -> None:
        history, start_epoch = result.history, result.start_epoch
        this_process = [r for r in history if r["epoch"] > start_epoch]
        # The first epoch of a process includes compilation; a finished run that trained
        # nothing now reports the epochs it logged before.
        timed = this_process[1:] or this_process or history[1:]
        tokens = sum(r["tokens_per_sec"] * r["seconds"] for r in timed)
        seconds = sum(r["seconds"] for r in timed)
        last = history[-1] if history else {}
        extras = result.extras
        extras["perplexity"] = metrics.value(last, "train_perplexity", math.nan)
        extras["val_perplexity"] = metrics.value(last, "eval_perplexity")
        extras["test_perplexity"] = metrics.value(last, "test_perplexity")
        extras["tokens_per_sec"] = tokens / seconds if seconds else math.nan
        extras["continuations"] = [self._predict(state, p) for p in self.config.prefixes]
        val, test = extras["val_perplexity"], extras["test_perplexity"]
        held_out = [
            f"{name} perplexity {p:.1f}" for name, p in (("validation", val), ("test", test)) if p
        ]
        log.info(
            f"perplexity {extras['perplexity']:.1f}, {extras['tokens_per_sec']:.1f} tokens/sec "
            f"on {device_name()}" + (f" ({', '.join(held_out)})" if held_out else "")
        )
        for text in extras["continuations"]:
            log.info(text)
        unit = {"char": "character", "byte": "byte"}.get(self.vocab.token)
        bits = [f"{name} {last[f'{key}_bits_per_token']:.4f} bits per {unit}"
                for name, key in (("validation", "eval"), ("test", "test"))
                if f"{key}_bits_per_token" in last and unit]  # fmt: skip
        words = [f"{name} perplexity per word {last[f'{key}_word_perplexity']:.2f}"
                 for name, key in (("validation", "eval"), ("test", "test"))
                 if f"{key}_word_perplexity" in last]  # fmt: skip
        if self.vocab.token in ("char", "byte"):
            extras["test_bpc"] = last.get("test_bits_per_token")
            extras["val_bpc"] = last.get("eval_bits_per_token")
        extras["test_word_perplexity"] = last.get("test_word_perplexity")
        if (bits or words) and self.config.corpus not in corpora.IN_MEMORY:
            # The research corpora's own figures (the book's, PTB's and tiny Shakespeare's
            # jobs print what they always have; their records hold bits per token too).
            log.info(", ".join(bits + words))
        if self.config.train_steps:
            log.info(f"trained to step {last.get('step', 0):,} of config.train_steps="
                     f"{self.config.train_steps:,} ({result.train_seconds:.1f} s in this "
                     "process)")  # fmt: skip
        else:
            log.info(trained_line(start_epoch, loop.num_epochs(self), result.train_seconds))


def trained_line(start_epoch: int, num_epochs: int, seconds: float) -> str:
    """What this process trained: all of it, the epochs after a resume, or nothing."""
    if start_epoch == 0:
        return f"trained {num_epochs} epochs in {seconds:.1f} s"
    if start_epoch >= num_epochs:
        return f"nothing to train: the workdir's run had already trained {start_epoch} epochs"
    return (
        f"trained {num_epochs - start_epoch} epochs ({start_epoch + 1}-{num_epochs}, resumed "
        f"after epoch {start_epoch}) in {seconds:.1f} s; {num_epochs} in all"
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs (or resumes) the language model `config` describes in `workdir`.

    Writes `config.json`, `vocab.json`, Orbax checkpoints under `checkpoints/`,
    `metrics.jsonl`, TensorBoard event files and `perplexity.png`; prints the book's
    progress and final lines. SIGTERM / SIGINT stop it at the next chunk boundary with a
    checkpoint saved (`result["stopped_by"]` names the signal).

    Returns:
      `state`, `model`, `vocab`, `perplexity`, `val_perplexity`, `test_perplexity`,
      `tokens_per_sec`, `train_seconds`, `epochs_trained`, `continuations` (one per
      `config.prefixes`; not after a stop) and `stopped_by` (None, or the signal).

    Raises:
      ConfigError, data.DataError, TrainingError, checkpoints.CheckpointError: one-line
      messages. Nothing already in `workdir` is changed before the config, the data and the
      checkpoint are known to fit together.
    """
    job = LanguageModelJob(config)
    result = loop.run(job, workdir)
    history = result.history
    out = {
        "state": result.state,
        "model": job.model,
        "vocab": job.vocab,
        "perplexity": metrics.value(history[-1], "train_perplexity") if history else math.nan,
        "val_perplexity": metrics.value(history[-1], "eval_perplexity") if history else None,
        "test_perplexity": metrics.value(history[-1], "test_perplexity") if history else None,
        "train_seconds": result.train_seconds,
        "epochs_trained": result.epochs_trained,
        "stopped_by": result.stopped_by,
    }
    out.update(result.extras)
    return out
