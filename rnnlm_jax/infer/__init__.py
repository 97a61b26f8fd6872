"""Using a trained model: generating text (`generation`), scoring it (`scoring`) and loading
a language model from its workdir (`load`).

`rnnlm_jax.infer` offers `predict`, `sample`, `score`, `Score` and `load_trained`; loading a
workdir imports Orbax only when called.
"""

from rnnlm_jax.infer.generation import predict, sample  # noqa: F401
from rnnlm_jax.infer.scoring import Score, score  # noqa: F401


def load_trained(workdir, step=None):
    """`rnnlm_jax.infer.load.load_trained` (imported on first use: it needs Orbax)."""
    from rnnlm_jax.infer.load import load_trained as load

    return load(workdir, step)
