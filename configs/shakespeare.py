r"""Character language models on tiny Shakespeare, split as nanoGPT's `shakespeare_char`
(the first 90% of karpathy/char-rnn's `input.txt` trains, the last 10% validates), next to
nanoGPT's CPU recipe (validation loss 1.88 after about 3 minutes, its README).

    python main.py --config=configs/shakespeare.py                 # the best: ~50 s, 2 CPUs
    python main.py --config=configs/shakespeare.py:rglru           # one cell, 1 epoch
    python main.py --config=configs/shakespeare.py:best,long       # the best, ~100 s

Variants (after `:`; several join with `,`):
  best      the default: the fastest to nanoGPT's 1.88 found on 2 CPU cores
  lstm      a 1 x 256 LSTM on one-hot inputs (the book's model) trained with Adam
  mingru, minlstm, rglru, lru
            two residual blocks of width 256 of that cell (RMSNorm, the recurrence, RMSNorm,
            a gated MLP; rglru as Griffin's recurrent block), Adam
  long      the same model trained for about the wall time nanoGPT's CPU recipe takes
            (103 s on a 2-core machine of this kind)
  smoke     seconds on a CPU, for tests (a slice of the text, a small model)
The data: `tinyshakespeare.txt` under `$RNNLM_JAX_DATA_DIR` (or `~/.cache/rnnlm_jax/`),
downloaded there if missing; `--config.data_file=input.txt` for a copy of your own.
Results, with the expected last lines: README.md ("Tiny Shakespeare") and
docs/recurrences.md.
"""

from rnnlm_jax.config import fields

MODELS = ("lstm", "mingru", "minlstm", "rglru", "lru")


def get_config(arg=None):
    variants = [v for v in (arg or "best").split(",") if v]
    unknown = set(variants) - {"best", "long", "smoke", *MODELS}
    if unknown:
        raise ValueError(f"unknown variant(s) {sorted(unknown)} of configs/shakespeare.py")
    config = fields.defaults()  # every field, so each can be set on the command line

    # Data: characters, no cleaning, every training character, nanoGPT's split.
    config.corpus = "shakespeare"
    config.token = "char"
    config.cleaning = "none"
    config.max_tokens = -1
    config.batch_size = 32
    config.num_steps = 128
    config.partition = "sequential"  # the state carried from minibatch to minibatch
    config.random_offset = True

    # Model (the `best` one; the variants below change it).
    config.cell = "mingru"
    config.block = "residual"
    config.num_hiddens = 256
    config.num_layers = 2
    config.mlp_expansion = 2
    config.num_heads = 4
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
    config.log_every_epochs = 1
    config.prefixes = ("ROMEO:",)
    config.num_preds = 200

    for variant in variants:
        if variant == "lstm":
            config.cell, config.block, config.num_layers = "lstm", "stack", 1
        elif variant in MODELS:
            config.cell, config.block = variant, "residual"
        elif variant == "long":
            config.num_epochs *= 2
        elif variant == "smoke":
            config.data_file = ""
            config.max_tokens = 4000
            config.batch_size, config.num_steps = 4, 16
            config.num_hiddens, config.num_layers = 32, 1
            config.num_epochs = 2
            config.num_preds = 20
    return config
