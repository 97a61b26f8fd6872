"""Loading a trained language model from its workdir alone (no config file, no data)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import jax

from rnnlm_jax.config.checks import ConfigError, model_from_config
from rnnlm_jax.config.fields import fill_defaults
from rnnlm_jax.nn.models import RNNModel
from rnnlm_jax.train import checkpoints
from rnnlm_jax.train import workdir as workdirs
from rnnlm_jax.train.checkpoints import CheckpointError
from rnnlm_jax.train.step import abstract_train_state


def load_trained(workdir: str | Path, step: int | None = None):
    """Loads a run from its workdir alone: `(model, params, vocab, config)`.

    `step` picks a checkpoint by its name (default: the newest that restores, see
    `checkpoints.restore_good`). Waits for a save in flight (the checkpoint lock) and
    changes nothing in the workdir.
    """
    workdir = workdirs.resolve(workdir)
    if not workdir.is_dir():
        raise CheckpointError(f"--workdir={workdir} is not a folder")
    config = checkpoints.read_config(workdir)
    if config.get("job") == "population":
        raise ConfigError(
            f"{workdir} is a population run (its members trained at once, vmapped), not one "
            "language model: to sample or score member i, train it alone with the same "
            "--config and --sweep_index=i (it ends where the member ends, to float rounding) "
            "and use that trial's workdir"
        )
    vocab = checkpoints.read_vocab(workdir, config.get("token", "char"))
    with contextlib.suppress(TypeError, ValueError):
        config = fill_defaults(config)  # an older workdir's config lacks the newer fields
    try:
        model: RNNModel = model_from_config(config, len(vocab))
        abstract = abstract_train_state(model, config)
    except (KeyError, AttributeError, ValueError, TypeError) as e:
        raise CheckpointError(
            f"cannot use {workdir / checkpoints.CONFIG_FILE}: it does not describe a language "
            f"model of this version of rnnlm_jax ({type(e).__name__}: "
            f"{checkpoints._first_line(e, 200)})"
        ) from None
    with workdirs.checkpoint_lock(workdir, shared=True):
        if step is None:
            state, _, _, _ = checkpoints.restore_good(workdir, abstract)
        else:
            state, _ = checkpoints.restore(workdir, abstract, step)
    return model, jax.device_get(state.params), vocab, config
