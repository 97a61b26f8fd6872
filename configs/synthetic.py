r"""What a recurrence can compute: state tracking and recall, as the papers measure them.

    python main.py --config=configs/synthetic.py:parity --workdir=runs/parity_lstm
    python main.py --config=configs/synthetic.py:parity,mamba2 --config.negative_eigenvalues=True
    python main.py --config=configs/synthetic.py:mqar,gla --config.num_hiddens=128

Variants (after `:`; several join with `,`), one task and any of the cells:
  parity, modular_arithmetic, cycle_navigation, s3, s5
            Deletang et al.'s protocol as the xLSTM paper and Grazzi et al. run it: trained
            on lengths 3-40, tested on lengths 40-256, reported as scaled accuracy (0 at
            chance, 1 perfect) over the test lengths and in six bins of them
  mqar      Zoology's multi-query associative recall: 16 key-value pairs in sequences of
            256 tokens from a vocabulary of 512, accuracy on the queries' values
  a cell    lstm (the default), gru, rnn: one layer of width 64 reading one-hot tokens, as
            Deletang et al. ran them (in residual blocks the LSTM learned parity at the
            training lengths but stayed at chance past them: docs/capabilities.md);
            slstm, mingru, minlstm, rglru, lru, mlstm, gla, mamba2, gated_deltanet,
            deltanet, deltaproduct, retnet, hgrn2, rwkv7, attention (over a window of 256 steps,
            rotary positions): two pre-norm residual blocks of width 64 (gated MLP of
            width 128, 4 heads); hybrids and xLSTM's
            blocks by their fields (--config.mixers=gated_deltanet,attention;
            --config.block=xlstm --config.mixers=mlstm,slstm)
  smoke     seconds on a CPU, for tests
Every run trains 3,000 minibatches of 64 with AdamW (lr 3e-3, warmup 100, cosine to 0.1 of
it, clipped at 1) and ends with `synthetic_results.json` in the workdir.
`benchmarks/capabilities.py` runs every cell on every task (docs/capabilities.md).
"""

from rnnlm_jax.config import fields
from rnnlm_jax.data.synthetic import TASKS

CLASSIC = ("lstm", "gru", "rnn")
CELLS = ("lstm", "gru", "rnn", "slstm", "mingru", "minlstm", "rglru", "lru", "mlstm", "gla",
         "mamba2", "gated_deltanet", "deltanet", "deltaproduct", "retnet", "hgrn2", "rwkv7",
         "attention")  # fmt: skip


def get_config(arg=None):
    variants = [v for v in (arg or "parity").split(",") if v]
    unknown = set(variants) - {"smoke", *TASKS, *CELLS}
    if unknown:
        raise ValueError(f"unknown variant(s) {sorted(unknown)} of configs/synthetic.py; "
                         f"expected a task {TASKS}, a cell {CELLS} or smoke")  # fmt: skip
    config = fields.defaults("synthetic")  # every field: each can be set on the command line
    tasks = [v for v in variants if v in TASKS]
    if len(tasks) > 1:
        raise ValueError(f"configs/synthetic.py: one task at a time, not {tasks}")
    config.task = tasks[0] if tasks else "parity"
    # The protocol (Deletang et al. 2023; Beck et al. 2024; Grazzi et al. 2025).
    config.train_min_len, config.train_max_len = 3, 40
    config.test_min_len, config.test_max_len = 40, 256
    config.test_bins = 6
    config.modulus = 5
    # MQAR (Arora et al. 2023), at a vocabulary this machine trains in minutes.
    config.num_kv_pairs, config.mqar_seq_len, config.mqar_vocab_size = 16, 256, 512
    config.power_a = 0.01
    config.eval_examples = 1024

    config.cell = "lstm"
    config.block = "residual"
    config.num_hiddens = 64
    config.num_layers = 2
    config.mlp_expansion = 2
    config.num_heads = 4
    config.initializer = "flax"

    config.optimizer = "adamw"
    config.lr = 3e-3
    config.beta2 = 0.99
    config.weight_decay = 0.0
    config.warmup_steps = 100
    config.lr_schedule = "cosine"
    config.final_lr_fraction = 0.1
    config.clip = 1.0
    config.batch_size = 64
    config.steps_per_epoch = 500
    config.train_steps = 3000
    config.num_epochs = 6
    config.seed = 0
    config.checkpoint_every_epochs = 1
    config.max_to_keep = 1
    config.log_every_epochs = 1

    for variant in variants:
        if variant in CELLS:
            config.cell = variant
    if config.cell == "deltaproduct":  # two Householder updates a token (n_h = 1: Gated DeltaNet)
        config.num_householder = 2
    if config.cell in CLASSIC:  # Deletang et al.'s: one plain layer
        config.block, config.num_layers = "stack", 1
    if "smoke" in variants:
        config.num_hiddens, config.num_layers = 16, 1
        config.train_max_len, config.test_max_len, config.test_min_len = 12, 24, 12
        config.mqar_seq_len, config.num_kv_pairs, config.mqar_vocab_size = 32, 4, 64
        config.steps_per_epoch, config.train_steps, config.num_epochs = 10, 20, 2
        config.warmup_steps, config.eval_examples, config.batch_size = 2, 64, 16
    return config
