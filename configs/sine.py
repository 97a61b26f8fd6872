r"""Exercise 3 of section 8.6: the sequence section's autoregressive model, with an RNN.

    python main.py --config=configs/sine.py
    python main.py --config=configs/sine.py --config.cell=gru --workdir=runs/sine_gru

Trains the book's MLP baseline and an RNN regressor on the same noisy sine series with the
same seed, then prints the 1-step-ahead, free-running and k-step-ahead errors of both and
plots their predictions (`sine_predictions.png`, `sine_k_step.png` in the workdir).
"""

import ml_collections


def get_config(arg=None):
    """The book's setting; `:smoke` is a seconds-long version for tests."""
    config = ml_collections.ConfigDict()
    config.task = "sine"  # main.py runs rnnlm_jax.sine instead of the language model.

    # Data (section 8.1): x_t = sin(0.01 t) + N(0, noise), t = 1..T.
    config.T = 1000  # The book's series length.
    config.noise = 0.2  # The book's noise standard deviation.
    config.tau = 4  # Embedding: predict x_t from x_{t-4}..x_{t-1}.
    config.n_train = 600  # The first 600 examples train; the rest only test.
    config.seed = 0  # Noise, initialisation and shuffling, shared by both models.

    # Training, the book's recipe for both models.
    config.batch_size = 16
    config.lr = 0.01  # Adam.
    config.num_epochs = 5

    # Models.
    config.mlp_hiddens = 10  # The book's MLP: tau -> 10 ReLU -> 1.
    config.cell = "rnn"  # The RNN regressor's cell ("gru", "lstm" also work).
    config.num_hiddens = 32  # Its width.
    config.num_layers = 1

    # Evaluation.
    config.k_steps = (1, 4, 16, 64)  # The book's k-step-ahead predictions.

    if arg == "smoke":
        config.T = 200
        config.n_train = 100
        config.num_epochs = 2
        config.k_steps = (1, 4)
    elif arg not in (None, ""):
        raise ValueError(f"unknown variant {arg!r}; expected smoke")
    return config
