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
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import jax
import ml_collections

from rnnlm_jax.configuration import ConfigError, model_from_config
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
    directory = Path(workdir) / CHECKPOINT_DIR
    if not directory.is_dir():
        return None
    latest = ocp.path.step.latest_step_metadata(directory, ocp.path.step.standard_name_format())
    return None if latest is None else latest.step


def save(manager: ocp.CheckpointManager, epoch: int, state, seed: int, force: bool = False):
    """Starts saving `state` as the checkpoint after `epoch` epochs (asynchronously)."""
    if manager.latest_step() == epoch:
        return  # Already saved (Orbax would refuse to overwrite it anyway).
    manager.save(
        epoch,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            meta=ocp.args.JsonSave({"epoch": epoch, "seed": seed, "step": int(state.step)}),
        ),
        force=force,
    )


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


def read_config(workdir: str | Path) -> ml_collections.ConfigDict:
    path = Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: is {workdir} a workdir of rnnlm_jax?")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def read_vocab(workdir: str | Path, token: str = "char") -> Vocab:
    """The workdir's vocab (`token`: the token type of a workdir written before the vocab
    file said it)."""
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

    `epoch` picks a checkpoint (default: the latest).
    """
    config = read_config(workdir)
    vocab = read_vocab(workdir, config.get("token", "char"))
    try:
        model: RNNModel = model_from_config(config, len(vocab))
        state, _ = restore(workdir, abstract_train_state(model, config), epoch)
    except (KeyError, AttributeError, ValueError) as e:
        raise CheckpointError(
            f"cannot restore {workdir}: its checkpoint or config.json does not match this "
            f"version of rnnlm_jax ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None
    return model, jax.device_get(state.params), vocab, config
