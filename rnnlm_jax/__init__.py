"""rnnlm_jax: recurrent language models in JAX/Flax, after d2l section 8.6.

The package is in layers, each importing only from the ones before it:

    files     atomic writes, used by every layer
    nn        recurrences, fast layers, RNNLayer, the Dense head, RNNModel, ModelSpec
    data      corpora and where they come from, the vocab, minibatches
    config    every job's table of config fields, the checks that tie them together
    train     the step (train_step, train_chunk), the one run loop, checkpoints, metrics
    infer     generation, scoring, loading a trained model from its workdir
    jobs      what the loop trains: the language model, population mode, exercise 3,
              state-tracking and recall tasks
    run       the command line, sweeps

The names below load their module on first use, so `import rnnlm_jax` (or
`rnnlm_jax.data`, `.nn.models`, `.train`) imports neither Orbax nor matplotlib, and nothing
in the package touches the caller's logging set-up.
"""

import importlib.util
from typing import TYPE_CHECKING

from rnnlm_jax import _compat

_EXPORTS = {
    "ModelSpec": "nn.spec",
    "RNNLayer": "nn.layer",
    "RNNModel": "nn.models",
    "Score": "infer.scoring",
    "Vocab": "data.vocab",
    "create_train_state": "train.step",
    "find_time_machine": "data.sources",
    "load_corpus": "data.batching",
    "load_trained": "infer.load",
    "predict": "infer.generation",
    "sample": "infer.generation",
    "score": "infer.scoring",
    "train_and_evaluate": "jobs.lm",
    "train_chunk": "train.step",
    "train_epoch": "train.step",
    "train_step": "train.step",
}
if TYPE_CHECKING:  # what a type checker sees of the names loaded on first use
    from rnnlm_jax.data.batching import load_corpus  # noqa: F401
    from rnnlm_jax.data.sources import find_time_machine  # noqa: F401
    from rnnlm_jax.data.vocab import Vocab  # noqa: F401
    from rnnlm_jax.infer.generation import predict, sample  # noqa: F401
    from rnnlm_jax.infer.load import load_trained  # noqa: F401
    from rnnlm_jax.infer.scoring import Score, score  # noqa: F401
    from rnnlm_jax.jobs.lm import train_and_evaluate  # noqa: F401
    from rnnlm_jax.nn.layer import RNNLayer  # noqa: F401
    from rnnlm_jax.nn.models import RNNModel  # noqa: F401
    from rnnlm_jax.nn.spec import ModelSpec  # noqa: F401
    from rnnlm_jax.train.step import (  # noqa: F401
        create_train_state,
        train_chunk,
        train_epoch,
        train_step,
    )

_compat.install()  # the module paths of the previous release, deprecated
__all__ = sorted(_EXPORTS)
__version__ = "0.6.0"


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    if importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")  # a subpackage, e.g. `.train`
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])
