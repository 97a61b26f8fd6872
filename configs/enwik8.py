r"""Byte-level language models on enwik8 (the first 100,000,000 bytes of the 2006 English
Wikipedia dump: the first 90M train, the next 5M validate, the last 5M test), reported in
bits per byte (the "bits per character" of enwik8 results), or on text8 (`:text8`:
characters, the same split).

    python main.py --config=configs/enwik8.py                # ~30 min on 2 CPU cores
    python main.py --config=configs/enwik8.py:text8          # the same on text8
    python main.py --config=configs/enwik8.py:awd_lstm       # the published GPU recipe

Variants (after `:`; several join with `,`):
  cpu       the default: two residual minGRU blocks of width 256 (configs/shakespeare.py's
            `long` model), AdamW with warmup and cosine decay, minibatches of 16 x 128,
            10,000 steps (20.5M bytes, 23% of the training text), evaluated every 1,000
            steps on the first 500,000 validation bytes, then on all of the validation and
            test bytes. On a 2-core Intel Xeon a 300-step slice trained 14,100 bytes/sec
            and its whole evaluation took about 3 minutes: about 29 minutes in all
  awd_lstm  Merity et al.'s 3-layer LSTM recipe (salesforce/awd-lstm-lm's README: emsize
            400, nhid 1840, dropout 0.4 / 0.1 / 0.1, Adam lr 1e-3, bptt 200, batch 128,
            weight decay 1.2e-6, 50 epochs): 1.232 bpc on the enwik8 test set in "An
            Analysis of Neural Language Modeling at Multiple Scales" (arXiv:1803.08240),
            2 days on one GPU. Approximated: this project has no weight drop (DropConnect)
            and every layer is 1840 wide (the recipe's last is 400), so expect it above 1.232
  text8     corpus text8 (lowercase letters and spaces), character tokens
  smoke     seconds on a CPU, for tests: a small model, a few steps
The data: `enwik8/enwik8` (or `text8/text8`) under `$RNNLM_JAX_DATA_DIR` (or
`~/.cache/rnnlm_jax/`), downloaded there (and unpacked, verified) if missing. The first run
tokenizes it once into a token file beside it (`enwik8.byte.ids`); later runs read that.
"""

from rnnlm_jax.config import fields


def get_config(arg=None):
    variants = [v for v in (arg or "cpu").split(",") if v]
    unknown = set(variants) - {"cpu", "awd_lstm", "text8", "smoke"}
    if unknown:
        raise ValueError(f"unknown variant(s) {sorted(unknown)} of configs/enwik8.py")
    config = fields.defaults()

    config.corpus = "enwik8"
    config.token = "byte"
    config.cleaning = "none"
    config.max_tokens = -1
    config.batch_size = 16
    config.num_steps = 128
    config.partition = "sequential"
    config.random_offset = True

    config.cell = "mingru"
    config.block = "residual"
    config.num_hiddens = 256
    config.num_layers = 2
    config.mlp_expansion = 2
    config.embed_dim = 0
    config.initializer = "flax"

    config.optimizer = "adamw"
    config.lr = 3e-3
    config.beta2 = 0.99
    config.weight_decay = 0.1
    config.warmup_steps = 200
    config.lr_schedule = "cosine"
    config.final_lr_fraction = 0.1
    config.clip = 1.0
    config.train_steps = 10_000
    config.eval_every_steps = 1_000
    config.eval_tokens = 500_000
    config.checkpoint_every_steps = 1_000
    config.checkpoint_every_epochs = 1
    config.max_to_keep = 2
    config.prefixes = ("<page>\n    <title>",)
    config.num_preds = 200
    config.seed = 0

    for variant in sorted(variants, key=lambda v: v == "smoke"):
        if variant == "text8":
            config.corpus = "text8"
            config.token = "char"
            config.prefixes = ("the history of",)
        if variant == "awd_lstm":
            config.cell = "lstm"
            config.block = "stack"
            config.num_layers = 3
            config.num_hiddens = 1840
            config.embed_dim = 400
            config.dropout = 0.1
            config.embed_dropout = 0.1
            config.output_dropout = 0.4
            config.initializer = "pytorch"
            config.optimizer = "adam"
            config.lr = 1e-3
            config.weight_decay = 1.2e-6
            config.warmup_steps = 0
            config.lr_schedule = "constant"
            config.num_steps = 200
            config.batch_size = 128
            config.train_steps = 0  # 50 epochs of the whole training text
            config.num_epochs = 50
            config.eval_every_steps = 0
            config.eval_tokens = 0
            config.checkpoint_every_steps = 0
            config.checkpoint_every_minutes = 30.0
        if variant == "smoke":
            config.num_hiddens = 32
            config.num_layers = 1
            config.embed_dim = 0
            config.batch_size = 4
            config.num_steps = 16
            config.train_steps = 12
            config.warmup_steps = 2
            config.eval_every_steps = 4
            config.eval_tokens = 2_000
            config.checkpoint_every_steps = 4
            config.num_preds = 20
    return config
