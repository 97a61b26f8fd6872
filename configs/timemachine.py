r"""The book's section 8.6: a character RNN language model on The Time Machine.

    python main.py --config=configs/timemachine.py
    python main.py --config=configs/timemachine.py:gru --workdir=runs/gru
    python main.py --config=configs/timemachine.py:smoke --config.num_epochs=3

Variants (the text after `:`; several join with `,`, e.g. `:gru,deep`):
  smoke     seconds on a CPU, for tests
  gru       section 9.1 (concise GRU): PyTorch's initializer, lr 1, 500 epochs
  lstm      section 9.2 (concise LSTM): flax's initializer, lr 1, 500 epochs
  deep_lstm section 9.3 (a 2-layer LSTM of 256 units): flax's initializer, lr 2
  val       hold out the 10,000 tokens after the training text (validation perplexity)
  overfit   exercise 1: a wide model on 3,000 tokens; train perplexity -> 1, val rises
  deep      exercise 2: two layers (--config.num_layers=3 for three), with validation
  word      word tokens (min_freq 3, the rest -> <unk>), 25,000 words, 7,000 held out
  random    the book's random partitioning (state reset every minibatch)
The default is the seed's configuration.
"""

from rnnlm_jax.config import fields


def get_config(arg=None):
    """Returns the seed configuration, changed as the variant `arg` says.

    Every field of `rnnlm_jax.config.fields` is here (at its default unless set below), so any of
    them can be set on the command line: e.g. your own text with `--config.corpus=text
    --config.text_files=mybook.txt`.
    """
    config = fields.defaults()

    # Data: the book's text (shipped in the package), char tokens, the first 10,000 kept.
    config.corpus = "timemachine"
    config.token = "char"  # The book's char-level model ("word" tokenizes on whitespace).
    config.max_tokens = 10000  # load_data_time_machine's truncation (<= 0: the whole text).
    config.min_freq = 0  # Vocab: drop tokens seen fewer times (0 keeps all, as the book).
    config.num_val = 0  # Held-out tokens right after the first max_tokens (0: none, as the book).
    config.batch_size = 32  # The book's minibatch size.
    config.num_steps = 35  # The book's sequence length per minibatch.
    config.partition = "sequential"  # use_random_iter=False; "random" resets state every batch.

    # Model.
    config.cell = "rnn"  # The section's vanilla tanh RNN ("gru", "lstm" are the next sections').
    config.num_hiddens = 256  # The book's hidden width.
    config.num_layers = 1  # One recurrent layer, as in the section.
    config.initializer = "normal"  # N(0, init_scale), zero biases: what gave the book's 1.2.
    # (normal, xavier, flax; pytorch: U(+-1/sqrt(H)) as chapter 9's PyTorch; uniform: U(+-scale))
    config.init_scale = 0.01  # MXNet train_ch8 re-initialises with Normal(0.01).
    config.impl = "auto"  # Fast layers, hand-written backward pass ("flax": flax's cells).

    # Training.
    config.lr = 1.0  # The book's SGD learning rate.
    config.clip = 1.0  # Gradient clipping at global L2 norm theta = 1.
    config.num_epochs = 500  # The book's budget.
    config.seed = 0  # Parameter init and every epoch's random offset / shuffle.

    # Checkpoints (Orbax, in <workdir>/checkpoints; the same command resumes).
    config.checkpoint_every_epochs = 50  # Also always after the last epoch and on SIGTERM.
    config.max_to_keep = 3  # Older checkpoints are deleted.

    # Logging and prediction.
    config.log_every_epochs = 10  # The book prints a prediction every 10 epochs.
    config.prefixes = ("time traveller", "traveller")  # The book's two final prompts.
    config.num_preds = 50  # Characters predicted after each prefix.

    for variant in (arg or "").split(","):
        _apply_variant(config, variant)
    return config


def get_sweep(arg=None):
    """Trials for `--sweep_index=i` / `--mode=sweep` / `--mode=population`: override sets.

    python main.py --config=configs/timemachine.py --mode=sweep --workdir=runs/sweep
    """
    if "smoke" in (arg or "").split(","):  # seconds-long trials, for the tests
        return [{"lr": 0.5}, {"lr": 1.0, "clip": 0.5}, {"seed": 1}]
    return [{"cell": cell, "lr": lr} for cell in ("rnn", "gru", "lstm") for lr in (0.5, 1.0)]


def _apply_variant(config, variant):
    if variant == "":
        return
    if variant == "smoke":
        config.num_hiddens = 32  # Small and fast: seconds on a CPU.
        config.max_tokens = 2000
        config.batch_size = 8
        config.num_epochs = 4
        config.log_every_epochs = 2
        config.checkpoint_every_epochs = 2
        config.num_preds = 10
    elif variant == "rnn":
        config.cell = variant
    elif variant in ("gru", "lstm", "deep_lstm"):
        # Chapter 9 (the book: perplexity 1.0 in PyTorch, 1.1 in MXNet). With lr 1 (2 for the
        # deep LSTM) and clipping at 1, every recipe's training perplexity spikes to 1.2-1.6 now
        # and then and recovers within a few epochs (PyTorch's run of the book's model too);
        # each variant uses the initializer with which seeds 0 and 1 both end <= 1.1 (README):
        # PyTorch's (U(+-1/sqrt(H))) for the GRU, flax's (LeCun-normal input kernels,
        # orthogonal recurrent kernels, zero biases) for the LSTMs, which spike less often.
        # With the MXNet recipe's N(0, 0.01) the LSTM ends at 1.19, a 2-layer LSTM at 8.0.
        config.cell = "gru" if variant == "gru" else "lstm"
        config.initializer = "pytorch" if variant == "gru" else "flax"
        if variant == "deep_lstm":
            config.num_layers = 2  # Section 9.3: two stacked LSTM layers of 256 units ...
            config.lr = 2.0  # ... trained with lr 2.
    elif variant == "val":
        config.num_val = 10000  # The next 10,000 characters of the book.
    elif variant == "overfit":
        config.num_val = 10000
        config.max_tokens = 3000  # A small training text ...
        config.num_hiddens = 512  # ... and a wide model: it memorises the text.
        config.batch_size = 16  # 5 minibatches per epoch from 3,000 tokens.
        config.num_epochs = 400
        config.log_every_epochs = 50
    elif variant == "deep":
        config.num_layers = 2  # Exercise 2: the output of layer 1 feeds layer 2.
        config.num_val = 10000
    elif variant == "word":
        config.token = "word"
        config.min_freq = 3  # Rare words become <unk>.
        config.max_tokens = 25000  # Of the book's 32,775 words ...
        config.num_val = 7000  # ... and held-out words after them.
        config.num_epochs = 100
        config.prefixes = ("the time traveller", "the")
        config.num_preds = 12  # Words.
    elif variant == "random":
        config.partition = "random"
    else:
        raise ValueError(
            f"unknown variant {variant!r}; expected smoke, rnn, gru, lstm, deep_lstm, val, "
            "overfit, deep, word or random"
        )
