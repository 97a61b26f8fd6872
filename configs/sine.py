r"""Exercise 3 of section 8.6: the sequence section's autoregressive model, with an RNN.

    python main.py --config=configs/sine.py
    python main.py --config=configs/sine.py --config.cell=gru --workdir=runs/sine_gru

Trains the book's MLP baseline and an RNN regressor on the same noisy sine series with the
same seed, then prints the 1-step-ahead, free-running and k-step-ahead errors of both and
plots their predictions (`sine_predictions.png`, `sine_k_step.png` in the workdir). Like
every job it resumes when run again (`config.job = "sine"` picks `rnnlm_jax.jobs.sine`).
"""

from rnnlm_jax.config import fields


def get_config(arg=None):
    """The book's setting; `:smoke` is a seconds-long version for tests.

    Every field of the sine job's table (`rnnlm_jax.config.fields.SINE`) is here, at its
    default unless set below.
    """
    config = fields.defaults("sine")
    # Data (section 8.1): x_t = sin(0.01 t) + N(0, noise), t = 1..T, the book's T = 1000,
    # noise 0.2, tau 4; the first 600 examples train. Seed 0 draws the noise, the
    # initialisation and the shuffling, shared by both models.
    # Training, the book's recipe for both models: Adam, lr 0.01, minibatches of 16.
    config.num_epochs = 5
    config.checkpoint_every_epochs = 1

    if arg == "smoke":
        config.T = 200
        config.n_train = 100
        config.num_epochs = 2
        config.k_steps = (1, 4)
    elif arg not in (None, ""):
        raise ValueError(f"unknown variant {arg!r}; expected smoke")
    return config
