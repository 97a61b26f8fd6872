r"""Language models on WikiText (Merity et al. 2016, arXiv:1609.07843): WikiText-2 or
WikiText-103, word-level on its `.tokens` files (perplexity), or subwords learned by
sentencepiece on the raw files (`:subword`: perplexity per subword and per word, the total
loss over the word count, which is what papers compare).

    python main.py --config=configs/wikitext.py                  # WikiText-2, ~20 min CPU
    python main.py --config=configs/wikitext.py:subword          # sentencepiece, 8k pieces
    python main.py --config=configs/wikitext.py:medium           # Zaremba et al.'s medium
    python main.py --config=configs/wikitext.py:wt103,subword    # WikiText-103

Variants (after `:`; several join with `,`):
  cpu       the default: WikiText-2 words (33,278-word vocab), two residual minGRU blocks of
            width 256 with a tied embedding, AdamW, minibatches of 32 x 64, 3 epochs
  medium    Zaremba et al.'s medium LSTM (2 x 650, dropout 0.5, SGD lr 1 decayed by 0.8
            after epoch 6, 39 epochs, minibatches of 20 x 35: configs/ptb.py:medium) on
            WikiText-2's words: Merity et al. (2016) report this model on WikiText-2 in their
            Table 2
  subword   the raw files, sentencepiece unigram pieces (vocab_size 8,000) learned from
            the training text; reports perplexity per word too
  wt103     WikiText-103 instead of WikiText-2 (its 267,735-word vocab at word level; the
            cpu model's steps bounded by train_steps 20,000)
  smoke     seconds on a CPU, for tests
The data: `wikitext-2/wiki.{train,valid,test}.tokens` (raw: `wikitext-2-raw/wiki.*.raw`)
under `$RNNLM_JAX_DATA_DIR`, downloaded and unpacked there if missing.
"""

from rnnlm_jax.config import fields


def get_config(arg=None):
    variants = [v for v in (arg or "cpu").split(",") if v]
    unknown = set(variants) - {"cpu", "medium", "subword", "wt103", "smoke"}
    if unknown:
        raise ValueError(f"unknown variant(s) {sorted(unknown)} of configs/wikitext.py")
    config = fields.defaults()
    config.corpus = "wikitext2"
    config.token = "word"
    config.cleaning = "none"
    config.max_tokens = -1
    config.batch_size = 32
    config.num_steps = 64
    config.partition = "sequential"
    config.random_offset = True

    config.cell = "mingru"
    config.block = "residual"
    config.num_hiddens = 256
    config.num_layers = 2
    config.mlp_expansion = 2
    config.embed_dim = 256
    config.tie_embeddings = True
    config.initializer = "flax"
    config.optimizer = "adamw"
    config.lr = 2e-3
    config.beta2 = 0.99
    config.weight_decay = 0.1
    config.warmup_steps = 100
    config.lr_schedule = "cosine"
    config.clip = 1.0
    config.num_epochs = 3
    config.checkpoint_every_epochs = 1
    config.checkpoint_every_minutes = 10.0
    config.max_to_keep = 2
    config.log_every_epochs = 1
    config.prefixes = ("the",)
    config.num_preds = 30
    config.seed = 0

    for variant in sorted(variants, key=lambda v: v == "smoke"):
        if variant == "wt103":
            config.corpus = "wikitext103"
            config.train_steps = 20_000
            config.eval_every_steps = 2_000
            config.eval_tokens = 100_000
        if variant == "subword":
            config.corpus = config.corpus + "_raw"
            config.token = "sentencepiece"
            config.vocab_size = 8_000
            config.model_type = "unigram"
            config.prefixes = ("The",)
        if variant == "medium":
            config.cell = "lstm"
            config.block = "stack"
            config.num_layers = 2
            config.num_hiddens = 650
            config.embed_dim = 650
            config.tie_embeddings = False
            config.dropout = 0.5
            config.embed_dropout = 0.5
            config.output_dropout = 0.5
            config.initializer = "uniform"
            config.init_scale = 0.05
            config.optimizer = "sgd"
            config.lr = 1.0
            config.weight_decay = 0.0
            config.warmup_steps = 0
            config.lr_schedule = "constant"
            config.lr_decay = 0.8
            config.decay_after = 6
            config.clip = 5.0
            config.batch_size = 20
            config.num_steps = 35
            config.num_epochs = 39
            config.random_offset = False
        if variant == "smoke":
            config.num_hiddens = 32
            config.embed_dim = 32
            config.num_layers = 1
            config.batch_size = 4
            config.num_steps = 8
            config.train_steps = 10
            config.num_epochs = 1
            config.warmup_steps = 2
            config.eval_every_steps = 5
            config.eval_tokens = 0
            config.num_preds = 5
            if config.token == "sentencepiece":
                config.vocab_size = 120
    return config
