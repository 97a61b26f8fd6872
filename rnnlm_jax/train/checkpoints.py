"""Checkpoints in the workdir: the train state through Orbax, the config and vocab as JSON.

Layout of a workdir:
  config.json         the config that ran (ml_collections JSON)
  vocab.json          the vocab (`Vocab.save`: its tokens, token type and cleaning)
  checkpoints/<N>/    Orbax checkpoint after N minibatches of the run: `state` (the job's
                      train state), `meta` (epoch, position within the next epoch, step,
                      seed, the epoch's partial sums) and, for a checkpoint taken
                      mid-epoch, `carry` (the hidden state carried to that position). The
                      data order of every epoch is a function of (seed, epoch), so nothing
                      else is needed to resume exactly.
  best/<N>/           with validation: the checkpoint of the best validation perplexity.
(Workdirs of older versions named checkpoints by epoch and kept no position: they resume.)
No pickle anywhere. Orbax writes each checkpoint into a temporary folder and renames it when
complete, so a process killed at any moment leaves the last complete checkpoint usable; the
temporary folders it leaves are ignored and cleaned up at the next start.

Damage is caught before it is used: each checkpoint holds `checksums.json` (the SHA-256 of
every file Orbax wrote, added once the save is complete), and a checkpoint whose files do
not match, or that Orbax cannot restore, is skipped for the newest one that restores
(`restore_good`). Saves run off the training thread (`Saver`: Orbax writes in the background;
the checksums are written once its save has committed) and hold the workdir's checkpoint
lock (`rnnlm_jax.train.workdir`) until then, so a reader never sees one that is being
written or deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from pathlib import Path

import jax
import ml_collections

from rnnlm_jax.data import tokenizers
from rnnlm_jax.data.vocab import Vocab
from rnnlm_jax.files import write_json_atomic
from rnnlm_jax.train import workdir as workdirs

log = logging.getLogger(__name__)


def _import_orbax():
    """`orbax.checkpoint`, leaving the user's logging set-up as it was: orbax logs through
    absl while it is imported, and absl then calls `logging.basicConfig()` if the root
    logger has no handler, after which the user's own `basicConfig(...)` does nothing."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    import orbax.checkpoint

    root.handlers[:] = handlers
    root.setLevel(level)
    return orbax.checkpoint


ocp = _import_orbax()

CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"  # the checkpoint with the best validation perplexity so far
CHECKSUM_FILE = "checksums.json"  # inside each checkpoint: {"sha256": {relative path: hex}}
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"


class CheckpointError(Exception):
    """A workdir's checkpoint cannot be used; the message says why."""


def make_manager(
    workdir: str | Path, max_to_keep: int | None = 3, directory: str = CHECKPOINT_DIR
) -> ocp.CheckpointManager:
    """The Orbax `CheckpointManager` that saves into `<workdir>/<directory>`.

    Saves are asynchronous: call `wait_until_finished` (or `close`) on every exit path.
    Temporary folders left by a save that was killed are cleaned up when it is created.
    """
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True
    )
    return ocp.CheckpointManager(Path(workdir).absolute() / directory, options=options)


def latest_epoch(workdir: str | Path) -> int | None:
    """The epochs completed by the latest complete checkpoint in `workdir` (a checkpoint
    taken mid-epoch counts the epochs before it), or None. Reads only."""
    found = steps(workdir)
    if not found:
        return None
    meta = read_meta(Path(workdir) / CHECKPOINT_DIR / str(found[0]))
    return meta.get("epoch") if meta else None


def read_meta(step_dir: Path) -> dict | None:
    """A checkpoint's `meta` (its JSON), or None if unreadable. Reads only."""
    try:
        meta = json.loads((step_dir / "meta" / "metadata").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


class Saver:
    """Saves a run's checkpoints into `<workdir>/<directory>` off the training thread.

    `save` returns once Orbax holds a copy of the arrays; Orbax writes them in the
    background, and a thread of ours then writes the checksums. The workdir's checkpoint
    lock is held from the call until the checksums are written, so no reader sees a
    checkpoint half written or half deleted; a save waits for the one before it. In a
    multi-process run (where Orbax synchronises the processes) saves are synchronous and
    process 0 alone takes the lock and writes the checksums. Call `close` on every exit
    path.
    """

    def __init__(
        self, workdir: str | Path, max_to_keep: int | None = 3, directory: str = CHECKPOINT_DIR
    ):
        self.manager = make_manager(workdir, max_to_keep, directory)
        self.directory = Path(self.manager.directory)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, step: int, state, carry, meta: dict) -> None:
        """Saves `state` (and `carry` unless None) with `meta` as checkpoint `step`."""
        self.wait()
        if self.manager.latest_step() == step:
            return  # Already saved (Orbax would refuse to overwrite it anyway).
        main = jax.process_index() == 0
        lock = contextlib.ExitStack()
        if main:
            lock.enter_context(
                workdirs.checkpoint_lock(self.directory.parent, shared=False, timeout=600)
            )
        items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
        if carry is not None:
            items["carry"] = ocp.args.StandardSave({"carry": carry})  # a tree, not an array
        try:
            self.manager.save(step, args=ocp.args.Composite(**items), force=True)
        except BaseException:
            lock.close()
            raise
        if jax.process_count() > 1:
            self._finish(step, main, lock)
            self.wait()
            return
        self._thread = threading.Thread(
            target=self._finish, args=(step, main, lock), name="checkpoint-save", daemon=True
        )
        self._thread.start()

    def _finish(self, step: int, main: bool, lock: contextlib.ExitStack) -> None:
        try:
            self.manager.wait_until_finished()  # committed: renamed from its temporary folder
            if main:
                step_dir = self.directory / str(step)
                write_json_atomic(step_dir / CHECKSUM_FILE, _digests(step_dir))
        except BaseException as e:
            self._error = e
        finally:
            lock.close()

    def wait(self) -> None:
        """Waits for the save in flight; raises its error, if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self) -> None:
        """Waits for the save in flight and closes the manager."""
        try:
            self.wait()
        finally:
            self.manager.close()


def _digests(step_dir: Path) -> dict:
    """`{"sha256": {path relative to step_dir: hex digest}}` of every file in `step_dir`."""
    digests = {}
    for path in sorted(step_dir.rglob("*")):
        if path.is_file() and path.name != CHECKSUM_FILE:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            digests[str(path.relative_to(step_dir))] = h.hexdigest()
    return {"sha256": digests}


def damage(step_dir: Path) -> str | None:
    """Why the checkpoint in `step_dir` does not match its checksums, or None if it does
    (or if it has none: a checkpoint of an older version, or one killed before they were
    written, is left to Orbax to judge)."""
    manifest = step_dir / CHECKSUM_FILE
    if not manifest.is_file():
        return None
    try:
        expected = json.loads(manifest.read_text())["sha256"]
        expected.items()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"its {CHECKSUM_FILE} is unreadable"
    actual = _digests(step_dir)["sha256"]
    for name, digest in expected.items():
        if name not in actual:
            return f"its file {name} is missing"
        if actual[name] != digest:
            return f"its file {name} does not match its checksum"
    return None


def steps(workdir: str | Path) -> list[int]:
    """The steps (names) of the complete checkpoints in `workdir`, newest first (reads only)."""
    directory = Path(workdir) / CHECKPOINT_DIR
    if not directory.is_dir():
        return []
    found = [int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir()]
    return sorted(found, reverse=True)


def _device_leaves(abstract):
    """`abstract` with every leaf lacking a sharding placed on the first local device."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(
        lambda s: (
            s
            if getattr(s, "sharding", None) is not None
            else jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device)
        ),
        abstract,
    )


def restore(workdir: str | Path, abstract_state, step: int | None = None, abstract_carry=None):
    """Restores checkpoint `step` (default: the latest) into the structure of
    `abstract_state` (e.g. `train.abstract_train_state`); returns `(state, meta)`, or
    `(state, carry, meta)` when `abstract_carry` is given (`carry` None for a checkpoint
    taken at an epoch's end).

    Leaves that carry no sharding are restored onto the first local device, whatever
    devices the checkpoint was saved from. Only reads: nothing in the workdir changes.
    """
    step = (steps(workdir) or [None])[0] if step is None else step
    path = Path(workdir).absolute() / CHECKPOINT_DIR / str(step)
    if step is None or not path.is_dir():
        raise CheckpointError(f"{workdir} holds no checkpoint{'' if step is None else f' {step}'}")
    meta = read_meta(path)
    items = {
        "state": ocp.args.StandardRestore(_device_leaves(abstract_state)),
        "meta": ocp.args.JsonRestore(),
    }
    mid_epoch = bool(meta and meta.get("position"))
    want_carry = bool(jax.tree.leaves(abstract_carry)) and mid_epoch
    if want_carry:
        items["carry"] = ocp.args.StandardRestore({"carry": _device_leaves(abstract_carry)})
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(path, args=ocp.args.Composite(**items))
    if abstract_carry is None:
        return restored["state"], restored["meta"]
    carry = restored["carry"]["carry"] if want_carry else None
    return restored["state"], carry, restored["meta"]


def restore_good(workdir: str | Path, abstract_state, abstract_carry=None):
    """Restores the newest checkpoint in `workdir` that is intact and restores, skipping
    (with a `warning:` line on stderr each) the newer ones that are not.

    Returns `(state, carry, meta, skipped)`: `carry` as `restore` gives it (None without
    `abstract_carry`), `skipped` the checkpoints passed over. Raises `CheckpointError`
    (one line, every checkpoint and why) if none restores. Only reads.
    """
    skipped, reasons = [], []
    for step in steps(workdir):
        reason = damage(Path(workdir) / CHECKPOINT_DIR / str(step))
        if reason is None:
            try:
                state, carry, meta = restore(workdir, abstract_state, step, abstract_carry or ())
                if not isinstance(meta, dict) or not isinstance(meta.get("epoch"), int):
                    raise CheckpointError(f"its meta says {meta!r}")
                return state, carry, meta, skipped
            except Exception as e:  # Orbax's and tensorstore's errors have no common base
                reason = f"it does not restore ({type(e).__name__}: {_first_line(e)})"
        log.warning(f"skipping checkpoint {step} in {workdir}: {reason}")
        skipped.append(step)
        reasons.append(f"{step}: {reason}")
    if not reasons:
        raise CheckpointError(f"{workdir} holds no checkpoint")
    raise CheckpointError(f"no checkpoint in {workdir} restores ({'; '.join(reasons)})")


def _first_line(error: BaseException, limit: int = 160) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else "")[:limit]


def set_aside(workdir: str | Path, skipped: list[int]) -> None:
    """Renames the skipped (damaged) checkpoints to `<N>.damaged`, where Orbax neither reads
    nor deletes them, so a resumed run can save its own checkpoint N again."""
    directory = Path(workdir) / CHECKPOINT_DIR
    for step in skipped:
        target = directory / f"{step}.damaged"
        k = 1
        while target.exists():
            target, k = directory / f"{step}.damaged.{k}", k + 1
        os.replace(directory / str(step), target)
        log.warning(f"moved the damaged checkpoint {step} to {target}")


def read_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The workdir's `config.json`; `CheckpointError` naming the file if it is missing or
    is not a JSON object."""
    path = Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: is {workdir} a workdir of rnnlm_jax?")
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{path} cannot be read as JSON ({e})") from None
    if not isinstance(fields, dict):
        raise CheckpointError(f"{path} does not hold a config (a JSON object)")
    return ml_collections.ConfigDict(fields)


def read_vocab(workdir: str | Path, token: str = "char") -> Vocab:
    """The workdir's vocab (`token`: the token type of a workdir written before the vocab
    file said it); `CheckpointError` naming the file if it is missing or malformed."""
    path = Path(workdir) / VOCAB_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: is {workdir} a workdir of rnnlm_jax?")
    try:
        return tokenizers.load(path, token)
    except (OSError, ValueError) as e:
        raise CheckpointError(str(e)) from None
