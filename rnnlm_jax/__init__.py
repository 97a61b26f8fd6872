"""rnnlm_jax: recurrent language models in JAX/Flax, after d2l section 8.6.

from rnnlm_jax import data, models, training, generation   # the pieces
from rnnlm_jax import experiment, checkpoints              # a whole run in a workdir
from rnnlm_jax import parallel, sweeps, population, sine   # scaling, exercise 3
"""

from rnnlm_jax.checkpoints import load_trained
from rnnlm_jax.data import Vocab, find_time_machine, load_corpus
from rnnlm_jax.experiment import train_and_evaluate
from rnnlm_jax.generation import predict
from rnnlm_jax.models import RNNLayer, RNNModel
from rnnlm_jax.training import create_train_state, train_epoch, train_step

__all__ = [
    "RNNLayer",
    "RNNModel",
    "Vocab",
    "create_train_state",
    "find_time_machine",
    "load_corpus",
    "load_trained",
    "predict",
    "train_and_evaluate",
    "train_epoch",
    "train_step",
]
__version__ = "0.1.0"
