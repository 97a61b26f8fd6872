"""One run in a workdir: `train_and_evaluate` (data, resume, the epoch loop, checkpoints, logs).

Running the same config with the same workdir again continues from the latest complete
checkpoint, and the result is bit-identical to a run that was never interrupted: every
epoch starts from a fresh hidden state, its minibatches depend only on `(seed, epoch)`, and
the checkpoint holds the whole train state.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from rnnlm_jax import checkpoints, corpora, data, metrics, parallel, scoring, training
from rnnlm_jax import workdir as workdirs
from rnnlm_jax.configuration import ConfigError, model_from_config, validate
from rnnlm_jax.fields import fill_defaults
from rnnlm_jax.files import write_json_atomic
from rnnlm_jax.generation import predict
from rnnlm_jax.preemption import StopRequest


class TrainingError(Exception):
    """Training cannot go on (e.g. the loss became NaN or Inf)."""


def device_name() -> str:
    """The JAX device the run uses, e.g. `cpu:0` or `cuda:0`."""
    return str(jax.devices()[0])


def steps_per_epoch(config: ml_collections.ConfigDict, train_len: int) -> int:
    """Minibatches per epoch of `config` over a training corpus of `train_len` tokens."""
    return data.num_batches_per_epoch(
        train_len, config.batch_size, config.num_steps, config.partition, config.random_offset
    )


def load_data(config: ml_collections.ConfigDict) -> corpora.Corpus:
    """The `corpora.Corpus` of a validated `config` (train, valid, test ids and the vocab).

    Raises `ConfigError` if the training or validation text is too short to batch (a
    `DataError` for your own text files, whose length is the data's, not the config's).
    """
    corpus = corpora.load(config)
    own = config.corpus == "text"
    error = data.DataError if own else ConfigError
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
    return corpus


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs (or resumes) the job described by `config` in `workdir`.

    Writes `config.json`, `vocab.json`, Orbax checkpoints under `checkpoints/`,
    `metrics.jsonl`, TensorBoard event files and `perplexity.png`; prints the book's
    progress and final lines. SIGTERM / SIGINT stop it after the current epoch with a
    checkpoint saved (`result["stopped_by"]` names the signal).

    Returns:
      `state`, `model`, `vocab`, `perplexity`, `tokens_per_sec`, `train_seconds`,
      `continuations` (one per `config.prefixes`) and `stopped_by` (None, or the signal).

    Raises:
      ConfigError, data.DataError, TrainingError, checkpoints.CheckpointError: one-line
      messages. Nothing already in `workdir` is changed before the config, the data and the
      checkpoint are known to fit together.
    """
    config = validate(config)
    problem = parallel.check_divisible(config.batch_size)
    if problem:
        raise ConfigError(f"config.{problem}")
    workdir = workdirs.resolve(workdir)
    workdirs.check(workdir)
    corpus = load_data(config)  # before anything is made: a data error leaves no workdir
    created = not workdir.exists()
    main_process = parallel.is_main_process()
    if main_process:
        workdirs.make(workdir)
    # From here a signal stops the run: at once while there is nothing to save (compilation,
    # the first epoch), after the current epoch with a checkpoint saved once there is.
    try:
        with StopRequest() as stop, _hold(workdir, main_process):
            result = _run(config, workdir, corpus, main_process, stop)
    except BaseException:
        if created and main_process and workdir.is_dir() and not any(workdir.iterdir()):
            workdir.rmdir()  # a run that failed before writing anything leaves nothing
        raise
    return result


@contextlib.contextmanager
def _hold(workdir: Path, main_process: bool):
    """Process 0 holds the workdir (`workdir.hold`); in a multi-process run the others learn
    whether it could, and stop with it if not."""
    with contextlib.ExitStack() as stack:
        error = None
        if main_process:
            try:
                stack.enter_context(workdirs.hold(workdir))
            except workdirs.WorkdirInUse as e:
                error = e
        if jax.process_count() > 1 and not parallel.agree(error is None):
            raise error or workdirs.WorkdirInUse(f"{workdir} is in use by another run")
        if error:
            raise error
        yield


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


def _check_fits(config, abstract_state) -> None:
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


def _run(config, workdir: Path, corpus: corpora.Corpus, main_process: bool, stop: StopRequest):
    """`train_and_evaluate` once the workdir is held: resume or start, train, report."""
    vocab = corpus.vocab
    model = model_from_config(config, len(vocab))
    steps = steps_per_epoch(config, len(corpus.train))
    abstract_state = training.abstract_train_state(model, config, steps)  # traced once
    _check_fits(config, abstract_state)
    mesh = parallel.data_mesh()
    replicated = parallel.replicated(mesh)
    start_epoch, changed, skipped = 0, {}, []
    if corpus.about:
        print(corpus.about, flush=True)
    if checkpoints.epochs(workdir):
        saved = fill_defaults(checkpoints.read_config(workdir))
        changed = checkpoints.check_compatible(saved, config)
        saved_vocab = checkpoints.read_vocab(workdir, config.token)
        if saved_vocab.idx_to_token != vocab.idx_to_token:
            raise ConfigError(
                "the data gives another vocab than the one the checkpoint was made with"
            )
        replicated_state = jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), abstract_state
        )
        state, meta, skipped = checkpoints.restore_good(workdir, replicated_state)
        start_epoch = meta["epoch"]
        notes = "".join(f", {k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
        print(f"resuming {workdir} after epoch {start_epoch}{notes}", flush=True)
    else:  # Every process computes the same replicated initial state.
        state = jax.jit(
            lambda: training.initial_train_state(model, config, steps),
            out_shardings=replicated,
        )()
    # Only a run that trains writes: a finished run (or one refused above) changes nothing.
    trains = start_epoch < config.num_epochs
    if trains and main_process:
        checkpoints.set_aside(workdir, skipped)
        write_json_atomic(workdir / checkpoints.CONFIG_FILE, config.to_dict())
        vocab.save(workdir / checkpoints.VOCAB_FILE)
    manager = checkpoints.make_manager(workdir, config.max_to_keep) if trains else None
    try:
        state, logger, stopped_by = _train_epochs(
            config, workdir, model, vocab, corpus, state, manager, start_epoch, stop, mesh
        )
    finally:
        if manager is not None:
            manager.wait_until_finished()  # every exit path: no half-written checkpoint
            manager.close()

    history = logger.history
    this_process = [r for r in history if r["epoch"] > start_epoch]
    # The first epoch of a process includes compilation; a finished run that trained
    # nothing now reports the epochs it logged before.
    timed = this_process[1:] or this_process or history[1:]
    tokens = sum(r["tokens_per_sec"] * r["seconds"] for r in timed)
    seconds = sum(r["seconds"] for r in timed)
    if history and main_process and trains:
        keys = [k for k in ("perplexity", "val_perplexity", "test_perplexity") if k in history[-1]]
        metrics.plot_perplexity(history, workdir / "perplexity.png", keys)
    result = {
        "state": state,
        "model": model,
        "vocab": vocab,
        "perplexity": history[-1]["perplexity"] if history else math.nan,
        "val_perplexity": history[-1].get("val_perplexity") if history else None,
        "test_perplexity": history[-1].get("test_perplexity") if history else None,
        "tokens_per_sec": tokens / seconds if seconds else math.nan,
        "train_seconds": sum(r["seconds"] for r in this_process),
        "epochs_trained": len(this_process),
        "stopped_by": stopped_by,
    }
    if stopped_by:
        print(
            f"stopped by {stopped_by} after epoch {history[-1]['epoch']}: checkpoint saved in "
            f"{workdir / checkpoints.CHECKPOINT_DIR}; run the same command to resume",
            flush=True,
        )
        return result
    result["continuations"] = [
        predict(state.params, p, config.num_preds, vocab, model, config.token)
        for p in config.prefixes
    ]
    val, test = result["val_perplexity"], result["test_perplexity"]
    held_out = [
        f"{name} perplexity {p:.1f}" for name, p in (("validation", val), ("test", test)) if p
    ]
    print(
        f"perplexity {result['perplexity']:.1f}, {result['tokens_per_sec']:.1f} tokens/sec "
        f"on {device_name()}" + (f" ({', '.join(held_out)})" if held_out else "")
    )
    for text in result["continuations"]:
        print(text)
    print(_trained_line(start_epoch, config.num_epochs, result["train_seconds"]), flush=True)
    return result


def _trained_line(start_epoch: int, num_epochs: int, seconds: float) -> str:
    """What this process trained: all of it, the epochs after a resume, or nothing."""
    if start_epoch == 0:
        return f"trained {num_epochs} epochs in {seconds:.1f} s"
    if start_epoch >= num_epochs:
        return f"nothing to train: the workdir's run had already trained {start_epoch} epochs"
    return (
        f"trained {num_epochs - start_epoch} epochs ({start_epoch + 1}-{num_epochs}, resumed "
        f"after epoch {start_epoch}) in {seconds:.1f} s; {num_epochs} in all"
    )


def _train_epochs(config, workdir, model, vocab, corpus, state, manager, start_epoch, stop, mesh):
    """The epoch loop from `start_epoch`: train, log, checkpoint, stop on a signal.

    Returns `(state, logger, stopped_by)`: the final state, the logger holding the run's
    history, and the name of the signal that stopped it (or None).
    """

    def split(x, axis):  # a host array, as a global array split over the devices along `axis`
        return jax.tree.map(lambda a: parallel.global_array(np.asarray(a), mesh, axis), x)

    begin_state = split(training.begin_state(model, config.batch_size), axis=1)  # [L, B, H]
    reset_each_batch = config.partition == "random"
    val_batches = None
    if corpus.valid is not None:
        val = data.eval_batches(corpus.valid, config.batch_size, config.num_steps)
        val_batches = split(val, axis=1)  # [N, B, T]
    trains = start_epoch < config.num_epochs
    logger = metrics.MetricsLogger(
        workdir, start_epoch, write=parallel.is_main_process() and trains
    )
    # The best-by-validation checkpoint, kept beside the latest ones in <workdir>/best.
    # (Single-process runs only: a second Orbax manager hangs a multi-process run's saves.)
    best_manager = None
    if val_batches is not None and jax.process_count() == 1 and trains:
        best_manager = checkpoints.make_manager(workdir, 1, checkpoints.BEST_DIR)
    vals = [r["val_perplexity"] for r in logger.history if "val_perplexity" in r]
    best = min(vals, default=math.inf)
    progress = metrics.Progress(config.num_epochs)
    stopped_by = None
    try:
        for epoch in range(start_epoch, config.num_epochs):
            X_all, Y_all = data.epoch_batches(
                corpus.train,
                config.batch_size,
                config.num_steps,
                config.partition,
                config.seed,
                epoch,
                config.random_offset,
            )
            start = time.perf_counter()
            X_all, Y_all = split((X_all, Y_all), axis=1)  # one transfer per epoch
            state, m = training.train_epoch(
                state, X_all, Y_all, begin_state, reset_each_batch=reset_each_batch
            )
            m = {k: float(v) for k, v in jax.device_get(m).items()}  # one transfer
            seconds = time.perf_counter() - start
            record = _epoch_record(epoch + 1, m, seconds, len(vocab))
            stop.arm()  # from now on a signal saves this epoch's state before stopping
            if val_batches is not None:
                v = jax.device_get(training.evaluate(state, *val_batches, begin_state))
                record["val_perplexity"] = metrics.perplexity(
                    float(v["loss_sum"] / v["num_tokens"])
                )
            done = epoch + 1 == config.num_epochs
            if done and corpus.test is not None:  # every process: the params are global arrays
                # Batch 1, the state carried through the whole test text: one compiled scan.
                log_probs = scoring.token_log_probs(model, state.params, corpus.test)
                record["test_perplexity"] = metrics.perplexity(-float(jax.numpy.mean(log_probs)))
            logger.write(record)
            progress.update(record)
            if (epoch + 1) % config.log_every_epochs == 0:
                text = predict(
                    state.params, config.prefixes[0], config.num_preds, vocab, model, config.token
                )
                logger.write_text("sample", text, epoch + 1)
                print(f"epoch {epoch + 1}: perplexity {record['perplexity']:.2f}, {text}")
            if best_manager is not None and record.get("val_perplexity", math.inf) < best:
                best = record["val_perplexity"]
                checkpoints.save(best_manager, epoch + 1, state, config.seed, force=True)
            if stop.signal_name or done or (epoch + 1) % config.checkpoint_every_epochs == 0:
                checkpoints.save(manager, epoch + 1, state, config.seed, force=True)
            if stop.signal_name:
                stopped_by = stop.signal_name
                break
    finally:
        if best_manager is not None:
            best_manager.wait_until_finished()
            best_manager.close()
        logger.close()
    return state, logger, stopped_by


def _epoch_record(epoch: int, m: dict[str, float], seconds: float, vocab_size: int):
    """The epoch's metrics record; `TrainingError` if the training loss diverged: not finite,
    or far above a uniform guess's log(V) (over max(2 log V, log V + 5): a perplexity no run
    that learns reaches; an lr of 100 gives 1e59), checked before anything is derived from it."""
    mean_loss = m["loss_sum"] / m["num_tokens"]
    uniform = math.log(max(vocab_size, 2))
    if not (math.isfinite(mean_loss) and mean_loss <= max(2 * uniform, uniform + 5)):
        raise TrainingError(
            f"the training loss became {mean_loss:.6g} in epoch {epoch} (a uniform guess: "
            f"{uniform:.3g}): training diverged; try a smaller lr or clip"
        )
    return {
        "epoch": epoch,
        "perplexity": metrics.perplexity(mean_loss),
        "loss": mean_loss,
        "grad_norm": m["grad_norm"],
        "tokens_per_sec": m["num_tokens"] / seconds,
        "seconds": seconds,
    }
