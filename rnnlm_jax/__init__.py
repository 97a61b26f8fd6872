"""rnnlm_jax: recurrent language models in JAX/Flax, after d2l section 8.6.

from rnnlm_jax import data, models, training, generation
"""

from rnnlm_jax.data import Vocab, find_time_machine, load_corpus
from rnnlm_jax.generation import predict
from rnnlm_jax.models import RNNLayer, RNNModel
from rnnlm_jax.training import create_train_state, train_and_evaluate, train_step

__all__ = [
    "RNNLayer",
    "RNNModel",
    "Vocab",
    "create_train_state",
    "find_time_machine",
    "load_corpus",
    "predict",
    "train_and_evaluate",
    "train_step",
]
__version__ = "0.1.0"
