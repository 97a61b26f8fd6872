r"""Character language models on tiny Shakespeare, split as nanoGPT's `shakespeare_char`
(the first 90% of karpathy/char-rnn's `input.txt` trains, the last 10% validates), next to
nanoGPT's CPU recipe (validation loss 1.88 after about 3 minutes, its README).

    python main.py --config=configs/shakespeare.py                 # the best, ~30 s on 2 CPUs
    python main.py --config=configs/shakespeare.py:rglru           # another cell, same budget
    python main.py --config=configs/shakespeare.py:long            # width 256, twice the text
    python main.py --config=configs/shakespeare.py:gla,nanotime    # width 256, nanoGPT's time

Variants (after `:`; several join with `,`):
  best      the default: the fastest to nanoGPT's 1.88 found on 2 CPU cores: two residual
            minGRU blocks of width 128 (RMSNorm, the recurrence, RMSNorm, a gated MLP of
            width 256), AdamW with warmup and cosine decay, minibatches of 8 x 128, the
            first 800,000 training characters read once
  lstm      the book's LSTM and recipe instead (configs/timemachine.py:lstm: 1 x 256,
            one-hot inputs, flax's initializer, SGD lr 1 clipped at 1, minibatches of
            32 x 35), on the same characters
  mingru, minlstm, rglru, lru
            the best model with that cell (rglru: Griffin's recurrent block)
  mlstm, gla, mamba2, gated_deltanet, deltanet, deltaproduct, retnet, hgrn2, rwkv7
            the best model with that matrix-state cell (4 heads, chunkwise; deltaproduct
            with 2 Householder updates per token)
  xlstm     the mlstm model in xLSTM's own mLSTM blocks (up-projection, convolution,
            learnable skip, no MLP) instead of the residual blocks
  long      the best model at width 256 (MLP 512), all 1,003,854 training characters
            twice (0.97x nanoGPT's CPU recipe's wall time on a 2-core AMD EPYC, 1.24x on a
            2-core Intel Xeon)
  nanotime  the `long` model of the cell chosen (mingru unless another is named), trained
            for the steps that fit nanoGPT's CPU recipe's wall time on a 2-core Intel Xeon
            (about 110 s, `NANOTIME_STEPS`, from each cell's measured tokens/sec)
  nanobest  the best model found within nanoGPT's wall time on 2 cores: the `long` minGRU
            with an MLP of width H (mlp_expansion 1: 1.5x the tokens/sec), a causal
            convolution of width 4 added to each recurrence's input (`conv_width`), 1,900
            steps (just under 2 epochs), and each row's state reset with probability 0.1
            before a minibatch (`state_reset`), so it also learns to start from nothing, as
            nanoGPT's windows score it
  gpt       nanoGPT's CPU recipe in this codebase (its README's command: 4 blocks of
            LayerNorm, causal attention and an MLP, 4 heads of 32, learned positions, the
            head tied to the embedding, windows of 64 drawn at random, batch 12, AdamW lr
            1e-3 with 100 warmup steps and cosine to 1e-4, weight decay 0.1, beta2 0.99,
            clip 1, 2,000 steps; nanoGPT's init): the same function as nanoGPT's `model.py`
            for the same weights (tests/test_attention.py)
  smoke     seconds on a CPU, for tests (a slice of the text, a small model)
The data: `tinyshakespeare.txt` under `$RNNLM_JAX_DATA_DIR` (or `~/.cache/rnnlm_jax/`),
downloaded there if missing; `--config.data_file=input.txt` for a copy of your own.
Results, with the expected last lines: README.md ("Tiny Shakespeare") and
docs/recurrences.md.
"""

from rnnlm_jax.config import fields

MODELS = ("lstm", "mingru", "minlstm", "rglru", "lru", "mlstm", "gla", "mamba2", "gated_deltanet",
          "deltanet", "deltaproduct", "retnet", "hgrn2", "rwkv7")  # fmt: skip
# Steps of 8 x 128 characters at width 256 that fit about 110 s on 2 cores of an Intel Xeon,
# start-up and compilation included: each cell's tokens/sec against minGRU's 15,700,
# measured side by side (minGRU 1.00, mlstm 0.48, gla 0.41, mamba2 0.45, gated_deltanet 0.32).
NANOTIME_STEPS = {"mingru": 1450, "mlstm": 700, "gla": 600, "mamba2": 650, "gated_deltanet": 470}
# `nanobest`'s steps: what fits nanoGPT's time beside it, start-up and evaluation included
# (1,950 steps: 1.02x over two rounds, the rounds 0.97x and 1.06x; 1,850: worse than `long`
# with the state carried, 1.500).
NANOBEST_STEPS = 1900


def get_config(arg=None):
    variants = [v for v in (arg or "best").split(",") if v]
    unknown = set(variants) - {"best", "long", "nanotime", "nanobest", "smoke", "xlstm", "gpt",
                               *MODELS}  # fmt: skip
    if unknown:
        raise ValueError(f"unknown variant(s) {sorted(unknown)} of configs/shakespeare.py")
    config = fields.defaults()  # every field, so each can be set on the command line

    # Data: characters, no cleaning, every training character, nanoGPT's split.
    config.corpus = "shakespeare"
    config.token = "char"
    config.cleaning = "none"
    config.max_tokens = 800_000  # the first 80% of the training text, read once
    config.batch_size = 8
    config.num_steps = 128
    config.partition = "sequential"  # the state carried from minibatch to minibatch
    config.random_offset = True

    # Model (the `best` one; the variants below change it).
    config.cell = "mingru"
    config.block = "residual"
    config.num_hiddens = 128
    config.num_layers = 2
    config.mlp_expansion = 2
    config.num_heads = 4  # rglru's gate blocks
    config.initializer = "flax"
    config.dtype = "float32"

    # Training: AdamW, warmup, cosine decay to a tenth, clipped at 1.
    config.optimizer = "adamw"
    config.lr = 3e-3
    config.beta2 = 0.99
    config.weight_decay = 0.1
    config.warmup_steps = 50
    config.lr_schedule = "cosine"
    config.final_lr_fraction = 0.1
    config.clip = 1.0
    config.num_epochs = 1
    config.seed = 0

    config.checkpoint_every_epochs = 1
    config.max_to_keep = 1
    config.log_every_epochs = 10  # one epoch: the sample comes once, at the end
    config.prefixes = ("ROMEO:",)
    config.num_preds = 200

    # The cell first (the budget depends on it), smoke last (it shrinks any model).
    for variant in sorted(variants, key=lambda v: (v == "smoke", v == "nanotime")):
        if variant == "lstm":  # the book's LSTM and its recipe (sections 8.6, 9.2)
            config.cell, config.block = "lstm", "stack"
            config.num_hiddens, config.num_layers = 256, 1
            config.initializer = "flax"  # as configs/timemachine.py:lstm
            config.batch_size, config.num_steps = 32, 35
            config.optimizer, config.lr, config.weight_decay = "sgd", 1.0, 0.0
            config.warmup_steps, config.lr_schedule = 0, "constant"
        elif variant in MODELS:
            config.cell = variant
            if variant == "deltaproduct":
                config.num_householder = 2
        elif variant == "xlstm":
            config.cell, config.block = "mlstm", "xlstm"
        elif variant == "gpt":  # nanoGPT's CPU recipe (README), train_shakespeare_char's rest
            config.cell, config.block, config.positions = "attention", "gpt", "learned"
            config.num_hiddens = config.embed_dim = 128
            config.num_layers, config.num_heads = 4, 4
            config.attention_window = config.num_steps = 64
            config.tie_embeddings = True
            config.initializer, config.init_scale = "normal", 0.02
            config.batch_size = 12
            config.partition = "random"  # random windows, each from a fresh state
            config.max_tokens = -1
            config.train_steps = 2000
            config.weight_decay, config.beta2 = 0.1, 0.99
            config.warmup_steps, config.final_lr_fraction, config.lr = 100, 0.1, 1e-3
        elif variant in ("long", "nanotime", "nanobest"):
            config.max_tokens = -1
            config.num_hiddens = 256
            config.num_epochs = 2  # one schedule over both: warmup, then cosine to the end
        if variant == "nanobest":
            config.mlp_expansion = 1
            config.conv_width = 4
            config.state_reset = 0.1
            config.train_steps = NANOBEST_STEPS
        if variant == "nanotime":
            if config.cell not in NANOTIME_STEPS or config.block == "xlstm":
                raise ValueError(f"configs/shakespeare.py: no measured nanotime budget for "
                                 f"{config.cell} in {config.block} blocks; cells (residual "
                                 f"blocks): {sorted(NANOTIME_STEPS)}")  # fmt: skip
            config.train_steps = NANOTIME_STEPS[config.cell]
        elif variant == "smoke":
            config.max_tokens = 4000
            config.batch_size, config.num_steps = 4, 16
            config.num_hiddens, config.num_layers = 32, 1
            config.num_epochs, config.train_steps = 2, 0
            config.num_preds = 20
    if "nanobest" in variants and (config.cell, config.block) != ("mingru", "residual"):
        raise ValueError(f"configs/shakespeare.py: nanobest is the minGRU's recipe, measured "
                         f"for it; for {config.cell} take {config.cell},nanotime")  # fmt: skip
    return config
