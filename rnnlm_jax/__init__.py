"""rnnlm_jax: recurrent language models in JAX/Flax, after d2l section 8.6.

from rnnlm_jax import vocab, data, layer, models, training   # the pieces
from rnnlm_jax import generation, scoring                    # using a trained model
from rnnlm_jax import experiment, checkpoints                # a whole run in a workdir
from rnnlm_jax import parallel, sweeps, population, sine     # scaling, exercise 3

The names below load their module on first use, so `import rnnlm_jax` (or
`rnnlm_jax.data`, `.models`, `.training`) imports neither Orbax nor matplotlib, and nothing
in the package touches the caller's logging set-up.
"""

import importlib.util

_EXPORTS = {
    "RNNLayer": "layer",
    "RNNModel": "models",
    "Score": "scoring",
    "Vocab": "vocab",
    "create_train_state": "training",
    "find_time_machine": "data",
    "load_corpus": "data",
    "load_trained": "checkpoints",
    "predict": "generation",
    "score": "scoring",
    "train_and_evaluate": "experiment",
    "train_epoch": "training",
    "train_step": "training",
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    if importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")  # a submodule, e.g. `.checkpoints`
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])
