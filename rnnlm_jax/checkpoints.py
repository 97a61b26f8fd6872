"""Checkpoints in the workdir: the train state through Orbax, the config and vocab as JSON.

Layout of a workdir:
  config.json         the config that ran (ml_collections JSON)
  vocab.json          the vocab (`Vocab.save`: its tokens, token type and cleaning)
  checkpoints/<N>/    Orbax checkpoint after N epochs: `state` (params, optimizer state,
                      step) and `meta` (epoch, seed); the data order of every epoch is a
                      function of (seed, epoch), so nothing else is needed to resume exactly.
  best/<N>/           with validation: the checkpoint of the best validation perplexity.
No pickle anywhere. Orbax writes each checkpoint into a temporary folder and renames it when
complete, so a process killed at any moment leaves the last complete checkpoint usable; the
temporary folders it leaves are ignored and cleaned up at the next start.

Damage is caught before it is used: each checkpoint holds `checksums.json` (the SHA-256 of
every file Orbax wrote, added once the save is complete), and a checkpoint whose files do
not match, or that Orbax cannot restore, is skipped for the newest one that restores
(`restore_good`). Saves hold the workdir's checkpoint lock (`rnnlm_jax.workdir`), so a
reader never sees one that is being written or deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
from pathlib import Path

import jax
import ml_collections

from rnnlm_jax import workdir as workdirs
from rnnlm_jax.configuration import ConfigError, model_from_config
from rnnlm_jax.fields import fill_defaults
from rnnlm_jax.files import write_json_atomic
from rnnlm_jax.models import RNNModel
from rnnlm_jax.training import abstract_train_state
from rnnlm_jax.vocab import Vocab


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
# Fields that fix the parameters' shapes: a checkpoint cannot be restored into another value.
MODEL_FIELDS = ("cell", "num_hiddens", "num_layers", "token", "min_freq")


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
    """The epoch of the latest complete checkpoint in `workdir`, or None (reads only)."""
    found = epochs(workdir)
    return found[0] if found else None


def save(manager: ocp.CheckpointManager, epoch: int, state, seed: int, force: bool = False):
    """Saves `state` as the checkpoint after `epoch` epochs, waits until it (and the deletion
    of the ones past `max_to_keep`) is complete, then writes its checksums. The workdir's
    checkpoint lock is held throughout, so no reader sees a checkpoint half written or
    half deleted; only process 0 takes it and writes the checksums."""
    if manager.latest_step() == epoch:
        return  # Already saved (Orbax would refuse to overwrite it anyway).
    directory = Path(manager.directory)
    main = jax.process_index() == 0
    lock = workdirs.checkpoint_lock(directory.parent, shared=False, timeout=600)
    with lock if main else contextlib.nullcontext():
        manager.save(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                meta=ocp.args.JsonSave({"epoch": epoch, "seed": seed, "step": int(state.step)}),
            ),
            force=force,
        )
        manager.wait_until_finished()
        if main:
            write_json_atomic(
                directory / str(epoch) / CHECKSUM_FILE, _digests(directory / str(epoch))
            )


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


def epochs(workdir: str | Path) -> list[int]:
    """The epochs of the complete checkpoints in `workdir`, newest first (reads only)."""
    directory = Path(workdir) / CHECKPOINT_DIR
    if not directory.is_dir():
        return []
    found = [int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir()]
    return sorted(found, reverse=True)


def restore(workdir: str | Path, abstract_state, epoch: int | None = None):
    """Restores the checkpoint after `epoch` (default: the latest) into the structure of
    `abstract_state` (e.g. `training.abstract_train_state`); returns `(state, meta)`.

    Leaves of `abstract_state` that carry no sharding are restored onto the first local
    device, whatever devices the checkpoint was saved from. Only reads: nothing in the
    workdir changes.
    """
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract_state = jax.tree.map(
        lambda s: (
            s
            if getattr(s, "sharding", None) is not None
            else jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device)
        ),
        abstract_state,
    )
    epoch = latest_epoch(workdir) if epoch is None else epoch
    path = Path(workdir).absolute() / CHECKPOINT_DIR / str(epoch)
    if epoch is None or not path.is_dir():
        raise CheckpointError(
            f"{workdir} holds no checkpoint{'' if epoch is None else f' {epoch}'}"
        )
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(
            path,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                meta=ocp.args.JsonRestore(),
            ),
        )
    return restored["state"], restored["meta"]


def restore_good(workdir: str | Path, abstract_state):
    """Restores the newest checkpoint in `workdir` that is intact and restores, skipping
    (with a `warning:` line on stderr each) the newer ones that are not.

    Returns `(state, meta, skipped)`, `skipped` the epochs passed over. Raises
    `CheckpointError` (one line, every checkpoint and why) if none restores. Only reads.
    """
    skipped, reasons = [], []
    for epoch in epochs(workdir):
        reason = damage(Path(workdir) / CHECKPOINT_DIR / str(epoch))
        if reason is None:
            try:
                state, meta = restore(workdir, abstract_state, epoch)
                if not isinstance(meta, dict) or meta.get("epoch") != epoch:
                    raise CheckpointError(f"its meta says epoch {meta!r}")
                return state, meta, skipped
            except Exception as e:  # Orbax's and tensorstore's errors have no common base
                reason = f"it does not restore ({type(e).__name__}: {_first_line(e)})"
        print(f"warning: skipping checkpoint {epoch} in {workdir}: {reason}", file=sys.stderr)
        skipped.append(epoch)
        reasons.append(f"{epoch}: {reason}")
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
    for epoch in skipped:
        target = directory / f"{epoch}.damaged"
        k = 1
        while target.exists():
            target, k = directory / f"{epoch}.damaged.{k}", k + 1
        os.replace(directory / str(epoch), target)
        print(f"warning: moved the damaged checkpoint {epoch} to {target}", file=sys.stderr)


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
        return Vocab.load(path, token)
    except (OSError, ValueError) as e:
        raise CheckpointError(str(e)) from None


def check_compatible(saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict):
    """Raises `ConfigError` naming every model field whose value differs from the checkpoint's.

    Returns the other fields that differ, as `{field: (saved, new)}`.
    """
    differ = {
        k: (saved.get(k), config.get(k))
        for k in sorted(set(saved.keys()) | set(config.keys()))
        if saved.get(k) != config.get(k) and not _same_sequence(saved.get(k), config.get(k))
    }
    bad = [k for k in MODEL_FIELDS if k in differ]
    if bad:
        details = ", ".join(f"{k} {differ[k][0]!r} (checkpoint) vs {differ[k][1]!r}" for k in bad)
        raise ConfigError(
            f"the workdir's checkpoint was made with another model: {details}; "
            "use another --workdir or the checkpoint's values"
        )
    return differ


def _same_sequence(a, b) -> bool:
    """JSON turns tuples into lists: ('a', 'b') and ['a', 'b'] are the same value."""
    return isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and list(a) == list(b)


def load_trained(workdir: str | Path, epoch: int | None = None):
    """Loads a run from its workdir alone (no data file): `(model, params, vocab, config)`.

    `epoch` picks a checkpoint (default: the newest that restores, see `restore_good`).
    Waits for a save in flight (the checkpoint lock) and changes nothing in the workdir.
    """
    workdir = workdirs.resolve(workdir)
    if not workdir.is_dir():
        raise CheckpointError(f"--workdir={workdir} is not a folder")
    config = read_config(workdir)
    vocab = read_vocab(workdir, config.get("token", "char"))
    with contextlib.suppress(TypeError, ValueError):
        config = fill_defaults(config)  # an older workdir's config lacks the newer fields
    try:
        model: RNNModel = model_from_config(config, len(vocab))
        abstract = abstract_train_state(model, config)
    except (KeyError, AttributeError, ValueError, TypeError) as e:
        raise CheckpointError(
            f"cannot use {workdir / CONFIG_FILE}: it does not describe a model of this version "
            f"of rnnlm_jax ({type(e).__name__}: {_first_line(e, 200)})"
        ) from None
    with workdirs.checkpoint_lock(workdir, shared=True):
        if epoch is None:
            state, _, _ = restore_good(workdir, abstract)
        else:
            state, _ = restore(workdir, abstract, epoch)
    return model, jax.device_get(state.params), vocab, config
