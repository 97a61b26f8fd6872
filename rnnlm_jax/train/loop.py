"""The one run loop: every job (the language model, population mode, exercise 3's sine
regressor, yours) trains through `run(job, workdir)`.

The loop owns what every run needs: the workdir check and lock, resume, the stop request
(SIGTERM / SIGINT), evaluation at the end of each epoch, checkpoints (the latest ones and
the best by validation), metrics (`metrics.jsonl`, TensorBoard, a plot) and the final
report. A job (`Job`) supplies only what differs: its state, its batches, its compiled
chunk of steps, its evaluation and its report.

Steps, not epochs: an epoch runs as chunks of `steps_per_chunk` minibatches (one compiled
call each), and between chunks the loop may save (every `checkpoint_every_steps`
minibatches, every `checkpoint_every_minutes`, and after every `checkpoint_every_epochs`
epochs) or stop (a signal saves at the next chunk boundary and exits). Chunk boundaries
depend only on the config, and a checkpoint holds the position within the epoch, the
hidden state carried to it and the epoch's partial sums, so a run resumed mid-epoch is
bit-identical to one never interrupted.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections

from rnnlm_jax.train import checkpoints, metrics, parallel
from rnnlm_jax.train import workdir as workdirs
from rnnlm_jax.train.preemption import StopRequest

log = logging.getLogger(__name__)

# Chunks are sized to about this many FLOPs (about a second on a 2-core CPU), so a signal is
# answered within seconds however long an epoch is; a small epoch stays one chunk.
CHUNK_FLOPS = 1e11


class TrainingError(Exception):
    """Training cannot go on (e.g. the loss became NaN or Inf)."""


class Job:
    """What a job gives the run loop. Subclasses set the attributes in `__init__` and
    override the methods; the loop calls them in this order:

      load() (before the workdir is touched: a data error leaves nothing behind; keep it
      to reading data: a signal during load() is Python's default, not a stop request),
      abstract_state(), then init_state() or a restore, check_resume(workdir, saved),
      compile(...) (in a fresh run, in a thread beside init_state(), on the abstract
      state), write_files(workdir) (only if the run trains), then per epoch
      epoch_data(epoch), train_chunk(...) per chunk, end_epoch(...), and at the end
      report(...).

    Attributes:
      name: what the job is, for messages.
      config: the validated config; the loop reads `num_epochs`, `seed`, `steps_per_chunk`,
        `checkpoint_every_epochs`, `checkpoint_every_steps`, `checkpoint_every_minutes` and
        `max_to_keep` (the fields `rnnlm_jax.config.fields.LOOP` every job's table has).
      steps_per_epoch: minibatches per epoch.
      flops_per_step: for sizing chunks automatically (`steps_per_chunk=0`); 0 keeps an
        epoch one chunk.
      best_key: a record's key whose lowest value the `best/` checkpoint keeps (or None).
      plot_keys: the record keys drawn in `plot_file` (empty: no plot).
    """

    name = "job"
    config: ml_collections.ConfigDict
    workdir: Path  # set by `run`
    steps_per_epoch: int = 1
    flops_per_step: float = 0.0
    best_key: str | None = None
    plot_keys: tuple[str, ...] = ()
    plot_file = "perplexity.png"
    plot_ylabel = "perplexity"

    def load(self) -> None:
        """Reads the data (called before anything is written)."""

    def abstract_state(self):
        """The state's structure (`jax.ShapeDtypeStruct` leaves), for restoring."""
        raise NotImplementedError

    def init_state(self):
        """The state a new run starts from."""
        raise NotImplementedError

    def begin_carry(self):
        """What the first chunk of an epoch starts from and a chunk hands to the next (the
        hidden state of a sequentially partitioned corpus), or None."""
        return None

    def compile(self, state, carry, lengths: set[int]) -> None:
        """Compiles the chunk program for every chunk length in `lengths` ahead of training
        (while a signal still stops the run at once), so none compiles mid-run (the
        language-model job: one program, the longest, that shorter chunks are padded to).
        `state` is the train state or, in a fresh run, `abstract_state()` (compiled in a
        thread while `init_state` runs)."""

    def describe(self) -> list[str]:
        """Lines on what will run (e.g. the implementation chosen), printed to stderr once
        the run is known to train: stdout keeps the job's own lines."""
        return []

    def check_resume(self, workdir: Path, saved: ml_collections.ConfigDict) -> dict:
        """Raises if the workdir's run cannot be resumed with this config; returns the
        fields that differ, `{field: (saved, new)}`, to print."""
        return {}

    def write_files(self, workdir: Path) -> None:
        """Writes what the run needs beside its checkpoints (`config.json`, ...)."""

    def epoch_data(self, epoch: int):
        """The host data of epoch `epoch` (0-based), a function of `(seed, epoch)` only."""
        return None

    def train_chunk(self, state, carry, data, start: int, stop: int):
        """Trains minibatches `start:stop` of the epoch whose data is `data`; returns
        `(state, carry, sums)`, `sums` a dict of floats (or lists of floats) the loop adds
        up over the epoch."""
        raise NotImplementedError

    def end_epoch(self, state, epoch: int, sums: dict, seconds: float) -> dict:
        """The record of epoch `epoch` (1-based) from its summed chunk `sums`: evaluates,
        raises `TrainingError` if training diverged. Must hold `"epoch": epoch`. The run's
        last epoch (which `train_steps` may end early) is `epoch == loop.num_epochs(job)`."""
        return {"epoch": epoch, **sums, "seconds": seconds}

    def evaluate_at(self, state, step: int) -> dict:
        """The record of an evaluation every `eval_every_steps` minibatches (mid-epoch):
        e.g. the loss on a fixed prefix of the validation text."""
        return {}

    def log_epoch(self, state, record: dict, logger: metrics.MetricsLogger) -> None:
        """Prints (and logs) what the job shows every `log_every_epochs` epochs."""

    def chunk_record(self, sums: dict, seconds: float) -> dict:
        """The progress record of one chunk of a long epoch."""
        return {"seconds": seconds}

    def report(self, state, result: RunResult) -> None:
        """Prints the final lines (and writes the job's own result files)."""


@dataclasses.dataclass
class RunResult:
    """What `run` returns: the final state, the run's epoch records, and this process's
    share: the epoch it resumed after, the epochs it trained and their seconds, and the
    signal that stopped it (None if it finished)."""

    state: Any
    history: list[dict[str, Any]]
    start_epoch: int
    epochs_trained: int
    train_seconds: float
    stopped_by: str | None
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)


def total_steps(job: Job) -> int:
    """The minibatches the run trains: `train_steps` when set (it bounds the run instead of
    `num_epochs`), else `num_epochs` whole epochs."""
    steps = job.config.get("train_steps", 0)
    return steps if steps else job.config.num_epochs * job.steps_per_epoch


def num_epochs(job: Job) -> int:
    """The epochs the run starts (the last one may stop early, at `train_steps`)."""
    return -(-total_steps(job) // job.steps_per_epoch)


def epoch_steps(job: Job, epoch: int) -> int:
    """Minibatches of epoch `epoch` (0-based) the run trains."""
    return min(job.steps_per_epoch, total_steps(job) - epoch * job.steps_per_epoch)


def _every(config) -> list[int]:
    """The step intervals the loop stops at between chunks (checkpoints, evaluations)."""
    return [e for e in (config.checkpoint_every_steps, config.get("eval_every_steps", 0)) if e]


def chunk_bounds(job: Job, epoch: int) -> list[tuple[int, int]]:
    """The `(start, stop)` minibatch ranges epoch `epoch` (0-based) runs as: cut every
    `steps_per_chunk` minibatches (0: sized to `CHUNK_FLOPS`) and at every multiple of
    `checkpoint_every_steps` and of `eval_every_steps` counted from the run's first
    minibatch; the run's last epoch ends at `train_steps`. Only the config decides them, so
    a resumed run cuts where an uninterrupted one does."""
    n, config = epoch_steps(job, epoch), job.config
    size = config.steps_per_chunk or auto_chunk(job)
    cuts = set(range(size, n, size))
    first = epoch * job.steps_per_epoch
    for every in _every(config):
        cuts |= {s - first for s in range(every * (first // every + 1), first + n, every)}
    edges = [0, *sorted(cuts), n]
    return list(zip(edges[:-1], edges[1:]))


def chunk_lengths(job: Job, start_epoch: int) -> set[int]:
    """Every chunk length from epoch `start_epoch` on. The cuts repeat every
    `every / gcd(steps_per_epoch, every)` epochs for each interval `every` (or every epoch
    without them), so those epochs, and the last, say all."""
    n, period = job.steps_per_epoch, 1
    for every in _every(job.config):
        period = math.lcm(period, every // math.gcd(n, every))
    end = num_epochs(job)
    epochs = set(range(start_epoch, min(end, start_epoch + period))) | {end - 1}
    return {b - a for epoch in epochs if epoch >= start_epoch for a, b in chunk_bounds(job, epoch)}


def auto_chunk(job: Job) -> int:
    """Minibatches per chunk when `steps_per_chunk=0`: about `CHUNK_FLOPS` of work."""
    if job.flops_per_step <= 0:
        return job.steps_per_epoch
    return max(1, min(job.steps_per_epoch, int(CHUNK_FLOPS // job.flops_per_step)))


def run(job: Job, workdir: str | Path) -> RunResult:
    """Runs (or resumes) `job` in `workdir`; see the module docstring.

    Raises the job's one-line errors, `TrainingError`, `checkpoints.CheckpointError` and
    `workdir.WorkdirInUse`. Nothing already in `workdir` is changed before the config, the
    data and the checkpoint are known to fit together.
    """
    workdir = workdirs.resolve(workdir)
    workdirs.check(workdir)
    job.workdir = workdir
    job.load()  # before anything is made: a data error leaves no workdir
    created = not workdir.exists()
    main_process = parallel.is_main_process()
    if main_process:
        workdirs.make(workdir)
    # From here a signal stops the run: at once while there is nothing to save (building
    # the state, compilation, the first chunk), at the next chunk boundary with a
    # checkpoint saved once there is.
    try:
        with StopRequest() as stop, _hold(workdir, main_process):
            return _Run(job, workdir, main_process, stop).go()
    except BaseException:
        if created and main_process and workdir.is_dir() and not any(workdir.iterdir()):
            workdir.rmdir()  # a run that failed before writing anything leaves nothing
        raise


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


def _add(total, part):
    """Sums of floats, or of lists of floats, key by key."""
    if isinstance(part, (list, tuple)):
        return [a + b for a, b in zip(total, part)]
    return total + part


class _Run:
    """One process's run of a job in a held workdir."""

    def __init__(self, job: Job, workdir: Path, main_process: bool, stop: StopRequest):
        self.job, self.config = job, job.config
        self.workdir, self.main, self.stop = workdir, main_process, stop

    def go(self) -> RunResult:
        job, config, workdir = self.job, self.config, self.workdir
        abstract = job.abstract_state()
        begin = job.begin_carry()
        start_epoch, position, sums, skipped = 0, 0, {}, []
        found = checkpoints.steps(workdir)
        compiling = None
        if found:
            saved = checkpoints.read_config(workdir)
            changed = job.check_resume(workdir, saved)
            state, carry, meta, skipped = checkpoints.restore_good(
                workdir, abstract, _abstract(begin)
            )
            start_epoch, position = meta["epoch"], meta.get("position", 0)
            sums = meta.get("sums") or {}
            if carry is None:
                carry = begin
            notes = "".join(f", {k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
            where = f"after epoch {start_epoch}" + (
                f" and {position} of epoch {start_epoch + 1}'s {job.steps_per_epoch} steps"
                if position
                else ""
            )
            log.info(f"resuming {workdir} {where}{notes}")
        else:
            state, carry, compiling = self._init_compiling(abstract, begin)
        self.num_epochs = num_epochs(job)
        trains = start_epoch < self.num_epochs
        if trains and self.main:
            for line in job.describe():
                log.info(line, extra={"stderr": True})
            checkpoints.set_aside(workdir, skipped)
        self.start_epoch = start_epoch
        if trains:
            if compiling is not None:
                compiling.result()  # its error, if any, is raised here
            else:
                job.compile(state, carry, chunk_lengths(job, start_epoch))
            if self.main:  # once the job compiles: a model that cannot leaves no files
                job.write_files(workdir)
        logger = metrics.MetricsLogger(
            workdir,
            start_epoch,
            write=self.main and trains,
            resume_step=self._step(start_epoch, position),
        )
        savers = []
        try:
            if trains:
                self.saver = checkpoints.Saver(workdir, config.max_to_keep)
                savers.append(self.saver)
                self.best_saver = None
                if job.best_key and jax.process_count() == 1:
                    # A second Orbax manager hangs a multi-process run's saves.
                    self.best_saver = checkpoints.Saver(workdir, 1, checkpoints.BEST_DIR)
                    savers.append(self.best_saver)
                state, stopped_by = self._train(
                    state, carry, begin, start_epoch, position, sums, logger
                )
            else:
                stopped_by = None
        finally:
            for saver in savers:
                saver.close()  # every exit path: no half-written checkpoint
            logger.close()
        history = logger.history
        this_process = [r for r in history if r["epoch"] > start_epoch]
        if history and self.main and trains and job.plot_keys:
            keys = [k for k in job.plot_keys
                    if any(metrics.value(r, k) is not None for r in history)]  # fmt: skip
            metrics.plot(history, workdir / job.plot_file, keys, job.plot_ylabel)
        result = RunResult(
            state=state,
            history=history,
            start_epoch=start_epoch,
            epochs_trained=len(this_process),
            train_seconds=sum(r.get("seconds", 0.0) for r in this_process),
            stopped_by=stopped_by,
        )
        if stopped_by:
            last = self.last_saved
            where = f"after epoch {last[0]}" + (
                f" and {last[1]} of epoch {last[0] + 1}'s {job.steps_per_epoch} steps"
                if last[1]
                else ""
            )
            log.info(
                f"stopped by {stopped_by} {where}: checkpoint saved in "
                f"{workdir / checkpoints.CHECKPOINT_DIR}; run the same command to resume"
            )
            return result
        job.report(state, result)
        return result

    def _init_compiling(self, abstract, begin):
        """A fresh run's initial state, and the future of its chunk program compiled from
        the state's shapes meanwhile, in a thread: the two compilations side by side (on 2
        cores about 1.5 s of the start). None if the run trains nothing. The state's leaves
        come in `abstract`'s tree, as a restored state's do: its static parts (the optimizer,
        the apply function) are the very objects the program was compiled with."""
        job = self.job
        if num_epochs(job) <= 0:
            return job.init_state(), begin, None
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="compile")
        try:
            compiling = pool.submit(job.compile, abstract, begin, chunk_lengths(job, 0))
            state = job.init_state()
        finally:
            pool.shutdown(wait=True)  # a failed init still waits for the compilation
        state = jax.tree.unflatten(jax.tree.structure(abstract), jax.tree.leaves(state))
        return state, begin, compiling

    def _step(self, epoch: int, position: int) -> int:
        """The run's minibatch count at `position` of epoch `epoch` (0-based)."""
        return epoch * self.job.steps_per_epoch + position

    def _train(self, state, carry, begin, start_epoch, position, sums, logger):
        job, config = self.job, self.config
        progress = metrics.Progress(self.num_epochs)
        best = min((metrics.value(r, job.best_key) for r in logger.history
                    if metrics.value(r, job.best_key) is not None), default=math.inf)  # fmt: skip
        last_save = time.monotonic()
        self.last_saved = (start_epoch, position)
        every_minutes = config.checkpoint_every_minutes
        if config.get("train_steps", 0) and start_epoch == 0 and position == 0:
            shape = f"{self.num_epochs} epoch(s) of {job.steps_per_epoch} minibatches"
            if config.train_steps % job.steps_per_epoch:
                shape += ", the last one cut short"
            log.info(f"config.train_steps={config.train_steps} bounds the run (config.num_epochs "
                     f"is not read): {shape}", extra={"stderr": True})  # fmt: skip
        eval_every = config.get("eval_every_steps", 0)
        for epoch in range(start_epoch, self.num_epochs):
            data = job.epoch_data(epoch)
            bounds = chunk_bounds(job, epoch)
            long_epoch = len(bounds) > 1
            steps = epoch_steps(job, epoch)
            if epoch > start_epoch:
                position, sums, carry = 0, {}, begin
            seconds = sums.pop("_seconds", 0.0) if sums else 0.0
            for start, stop in bounds:
                if stop <= position:
                    continue
                began = time.perf_counter()
                state, carry, part = job.train_chunk(state, carry, data, start, stop)
                elapsed = time.perf_counter() - began
                seconds += elapsed
                sums = {k: _add(sums[k], v) if k in sums else v for k, v in part.items()}
                position = stop
                self.stop.arm()  # from now on a signal saves before stopping
                step = self._step(epoch, position)
                if position == steps:
                    break  # the epoch's end saves below, after its evaluation
                if eval_every and step % eval_every == 0:
                    logger.write_step(
                        {"epoch": epoch, "step": step, **job.evaluate_at(state, step)}
                    )
                if long_epoch:
                    shown = job.chunk_record(part, elapsed)
                    logger.write_progress(
                        {"epoch": epoch + 1, "step": step, "position": position, **shown}
                    )
                    progress.update_chunk(epoch, position, job.steps_per_epoch, shown)
                stopping = self._stop_requested()
                due = (
                    stopping
                    or (config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0)
                    or (every_minutes and time.monotonic() - last_save >= 60 * every_minutes)
                )
                if due:
                    meta_sums = {**sums, "_seconds": seconds}
                    self._save(self.saver, state, carry, epoch, position, meta_sums)
                    last_save = time.monotonic()
                if stopping:
                    return state, stopping
            record = job.end_epoch(state, epoch + 1, sums, seconds)
            record = {"epoch": record["epoch"], "step": self._step(epoch, steps), **record}
            logger.write(record)
            progress.update(record)
            if (epoch + 1) % config.log_every_epochs == 0:
                job.log_epoch(state, record, logger)
            done = epoch + 1 == self.num_epochs
            step = self._step(epoch, steps)
            if self.best_saver is not None and record.get(job.best_key, math.inf) < best:
                best = record[job.best_key]
                self._save(self.best_saver, state, None, epoch + 1, 0, {})
            stopping = self._stop_requested()
            due = (
                stopping
                or done
                or (epoch + 1) % config.checkpoint_every_epochs == 0
                or (config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0)
                or (every_minutes and time.monotonic() - last_save >= 60 * every_minutes)
            )
            if due:
                self._save(self.saver, state, None, epoch + 1, 0, {})
                last_save = time.monotonic()
            if stopping:
                return state, stopping
        return state, None

    def _stop_requested(self) -> str | None:
        """The signal that asks this run to stop at this chunk boundary, or None. In a
        multi-process run the processes agree (one collective of their flags): when any
        of them was signalled, all save the same step and stop with that signal."""
        if jax.process_count() == 1:
            return self.stop.signal_name
        return parallel.agreed_signal(self.stop.signal_name)

    def _save(self, saver, state, carry, epoch: int, position: int, sums: dict) -> None:
        meta = {
            "epoch": epoch,
            "position": position,
            "step": self._step(epoch, position),
            "seed": self.config.seed,
            "sums": sums,
        }
        saver.save(self._step(epoch, position), state, carry if position else None, meta)
        if saver is self.saver:
            self.last_saved = (epoch, position)


def _abstract(tree):
    """The `jax.ShapeDtypeStruct`s (with shardings) of a pytree of arrays, or None."""
    if tree is None:
        return None
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, "sharding", None)),
        tree,
    )
