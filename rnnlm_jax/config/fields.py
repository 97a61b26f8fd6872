"""Every job's config fields, as tables: each field's type, allowed values, default and a
line of help. `config.job` names the job and so the table (`TABLES`).

The tables are the only place a default lives (the model's come from
`rnnlm_jax.nn.spec.ModelSpec`). `defaults(job)` is the config every shipped config file
starts from (so every one of them accepts every field on the command line, e.g.
`--config.corpus=text`); `fill_defaults` gives a config that lacks fields (an older
workdir's `config.json`, a config file of your own) the defaults of the ones it lacks, and
translates the fields of older versions; `check_fields` checks every field's type and range
and refuses a field the table does not know (with the nearest name, for a typo). Checks
that tie fields together live in `rnnlm_jax.config.checks`.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import ml_collections

from rnnlm_jax.nn.spec import ModelSpec

# Kinds: "int", "number" (int or float), "bool", "str", "strings" (a non-empty tuple of
# non-empty strings), "ints" (a non-empty tuple of integers >= 1).


@dataclasses.dataclass(frozen=True)
class Field:
    default: Any
    kind: str
    help: str
    low: float | None = None  # smallest allowed value (inclusive unless low_open)
    high: float | None = None  # largest allowed value (exclusive unless high_closed)
    choices: tuple | None = None
    low_open: bool = False
    high_closed: bool = False


MAX_SEED = 2**32 - 1  # JAX's and NumPy's seeds are 32-bit
BIG = 2**31  # integer fields: a value this large is a typo, not a plan

F = Field
_SPEC = {f.name: f.default for f in dataclasses.fields(ModelSpec)}

# The run loop's fields, in every job's table (`rnnlm_jax.train.loop`).
LOOP: dict[str, Field] = {
    "job": F(
        "lm",
        "str",
        "lm (a language model) | population (the sweep's trials at once) | sine (exercise 3) "
        "| synthetic (a state-tracking or recall task, `rnnlm_jax.data.synthetic`)",
        choices=("lm", "population", "sine", "synthetic"),
    ),
    "num_epochs": F(500, "int", "epochs to train", 1, BIG),
    "seed": F(0, "int", "parameters, data order and dropout", 0, MAX_SEED, high_closed=True),
    "steps_per_chunk": F(
        0,
        "int",
        "minibatches per compiled call (0: sized to about 1e11 "
        "FLOPs; an epoch that small is one call)",
        0,
        BIG,
    ),
    "checkpoint_every_epochs": F(
        50,
        "int",
        "a checkpoint every this many epochs (also after the last and on SIGTERM)",
        1,
        BIG,
    ),
    "checkpoint_every_steps": F(
        0, "int", "also a checkpoint every this many minibatches, mid-epoch too (0: none)", 0, BIG
    ),
    "checkpoint_every_minutes": F(
        0.0,
        "number",
        "also a checkpoint when this many minutes have passed since the last one (0: none)",
        0,
        None,
    ),
    "max_to_keep": F(3, "int", "checkpoints kept (older ones are deleted)", 1, BIG),
    "train_steps": F(
        0,
        "int",
        "minibatches to train in all; when set it bounds the run "
        "instead of num_epochs (0: num_epochs epochs)",
        0,
        BIG,
    ),
    "log_every_epochs": F(
        10, "int", "a progress line (and a sample) every this many epochs", 1, BIG
    ),
}
LM: dict[str, Field] = {
    **LOOP,
    # Data.
    "corpus": F("timemachine", "str", "timemachine | ptb | shakespeare | text (your files) | "
                "enwik8 | text8 | wikitext2 | wikitext103 (word files) | wikitext2_raw | "
                "wikitext103_raw", choices=("timemachine", "ptb", "shakespeare", "text", "enwik8",
                "text8", "wikitext2", "wikitext103", "wikitext2_raw", "wikitext103_raw")),
    "data_file": F("", "str", "an explicit path to the corpus's one file (timemachine, "
                   "shakespeare); wins over data_dir"),
    "data_dir": F("", "str", "where named corpora are found or downloaded; '' means "
                  "$RNNLM_JAX_DATA_DIR or ~/.cache/rnnlm_jax"),
    "data_url": F("", "str", "where a missing named corpus is downloaded from ('': the "
                  "corpus's own address)"),
    "text_files": F("", "str", "corpus=text: one UTF-8 file (split by the fractions) or "
                    "train,valid,test"),
    "valid_fraction": F(0.1, "number", "corpus=text, one file: the share of its tokens held "
                        "out for validation (after the training part)", 0, 0.5),
    "test_fraction": F(0.0, "number", "corpus=text, one file: the share held out for the "
                       "test (at the end)", 0, 0.5),
    "cleaning": F("auto", "str", "auto (the book's for timemachine, none otherwise) | book "
                  "(letters only, lowercase) | none", choices=("auto", "book", "none")),
    "token": F("char", "str", "char | word | byte (UTF-8 bytes) | sentencepiece (subwords "
               "learned from the training text)", choices=("char", "word", "byte",
               "sentencepiece")),
    "vocab_size": F(0, "int", "token=sentencepiece: its pieces (required)", 0, BIG),
    "model_type": F("unigram", "str", "token=sentencepiece: unigram | bpe",
                    choices=("unigram", "bpe")),
    "sample_mb": F(20.0, "number", "token=sentencepiece: MB of the training text it learns "
                   "from (evenly spaced windows)", 0, None, low_open=True),
    "max_tokens": F(10000, "int", "training tokens kept (<= 0: all of them)", -BIG, BIG),
    "min_freq": F(0, "int", "tokens seen fewer times become <unk> (0 keeps all)", 0, BIG),
    "num_val": F(0, "int", "timemachine: held-out tokens right after the training text", 0,
                 BIG),
    "eval_every_steps": F(0, "int", "also evaluate every this many minibatches, on the first "
                          "eval_tokens of the validation text (0: at epoch ends only)", 0, BIG),
    "eval_tokens": F(0, "int", "validation tokens the evaluations during training read (0: "
                     "all); the end of the run reads all", 0, BIG),
    "batch_size": F(32, "int", "sequences per minibatch", 1, BIG),
    "num_steps": F(35, "int", "time steps per minibatch", 1, BIG),
    "partition": F("sequential", "str", "sequential (state carried) | random (state reset "
                   "every minibatch)", choices=("sequential", "random")),
    "state_reset": F(0.0, "number", "sequential: the probability that a row's carried state "
                     "is reset to zero before a minibatch (so the model also learns to start "
                     "from nothing, as windows scored from a fresh state need)", 0, 1),
    "random_offset": F(True, "bool", "sequential: start each epoch at a random offset in "
                       "[0, num_steps] (False: at token 0)"),
    # Model.
    "cell": F(_SPEC["cell"], "str", "rnn | gru | lstm | slstm (xLSTM's), or trained in "
              "parallel over time: mingru | minlstm | rglru | lru, or with a matrix state: "
              "mlstm | gla | mamba2 | gated_deltanet | deltanet | deltaproduct | retnet | "
              "hgrn2 | rwkv7, or attention (causal softmax attention over attention_window steps; "
              "residual or gpt blocks)",
              choices=("rnn", "gru", "lstm", "slstm", "mingru", "minlstm", "rglru", "lru",
                       "mlstm", "gla", "mamba2", "gated_deltanet", "deltanet", "deltaproduct",
                       "retnet", "hgrn2", "rwkv7", "attention")),
    "block": F(_SPEC["block"], "str", "stack (plain stacked layers) | residual (pre-norm "
               "residual blocks: the recurrence, then a gated MLP) | xlstm (xLSTM's blocks: "
               "mlstm's up-projection, conv, mLSTM, skip, gate, no MLP; slstm's conv, sLSTM, "
               "group norm, gated MLP) | gpt (nanoGPT's blocks, cell attention)",
               choices=("stack", "residual", "xlstm", "gpt")),
    "mixers": F(_SPEC["mixers"], "str", "hybrids: each residual block's mixer, a pattern "
                "repeated over num_layers, e.g. 'gated_deltanet*2,attention' or, block xlstm, "
                "'mlstm*7,slstm' ('': every block mixes with cell)"),
    "attention_window": F(_SPEC["attention_window"], "int", "attention: the most recent steps "
                          "each step attends to (their keys and values are the carried "
                          "state)", 1, BIG),
    "positions": F(_SPEC["positions"], "str", "attention's positions: rotary | learned "
                   "(nanoGPT's, a table of attention_window rows; the first block must be "
                   "attention) | none", choices=("rotary", "learned", "none")),
    "mlp_expansion": F(_SPEC["mlp_expansion"], "int", "block=residual: the gated MLP's width "
                       "in multiples of num_hiddens", 1, BIG),
    "conv_width": F(_SPEC["conv_width"], "int", "block=residual: a causal convolution of this "
                    "width over the recurrence's input, added to it (0: none; rglru, gla, "
                    "mamba2, gated_deltanet, deltanet and deltaproduct have their own)", 0,
                    BIG),
    "num_hiddens": F(_SPEC["num_hiddens"], "int", "hidden units per layer", 1, BIG),
    "num_layers": F(_SPEC["num_layers"], "int", "stacked recurrent layers", 1, BIG),
    "initializer": F(_SPEC["initializer"], "str",
        "normal | uniform (scale init_scale) | xavier | flax | "
                     "pytorch", choices=("normal", "uniform", "xavier", "flax", "pytorch")),
    "init_scale": F(_SPEC["init_scale"], "number",
        "std (normal) or bound (uniform) of the weights", 0, None,
                    low_open=True),
    "dropout": F(_SPEC["dropout"], "number", "dropout between stacked layers", 0, 1),
    "embed_dim": F(_SPEC["embed_dim"], "int",
        "a learned embedding of this width (0: one-hot inputs)", 0, BIG),
    "embed_dropout": F(_SPEC["embed_dropout"], "number", "dropout on the embedding's output", 0, 1),
    "output_dropout": F(_SPEC["output_dropout"], "number",
        "dropout on the last layer's outputs", 0, 1),
    "tie_embeddings": F(_SPEC["tie_embeddings"], "bool",
        "the head's kernel is the embedding transposed"),
    "impl": F(_SPEC["impl"], "str", "what runs the recurrence: fast (hand-written backward "
              "passes) | flax (flax's cells, jax.grad) | cudnn (lstm, CUDA) | auto (cudnn "
              "where it can, else fast)", choices=("auto", "fast", "flax", "cudnn")),
    "scan": F(_SPEC["scan"], "str", "how mingru | minlstm | rglru | lru run over time: "
              "associative (jax.lax.associative_scan) | sequential | chunked (chunks side by "
              "side) | auto (the faster on this backend)",
              choices=("auto", "associative", "sequential", "chunked")),
    "num_heads": F(_SPEC["num_heads"], "int", "rglru: diagonal blocks of its gates' weights; "
                   "slstm: blocks of its recurrent weights; "
                   "a matrix-state cell's heads (block xlstm: of its inner width "
                   "2 x num_hiddens)", 1, BIG),
    "key_dim": F(_SPEC["key_dim"], "int", "a matrix-state cell's key width per head (0: "
                 "num_hiddens / num_heads)", 0, BIG),
    "value_dim": F(_SPEC["value_dim"], "int", "a matrix-state cell's value width per head "
                   "(0: num_hiddens / num_heads)", 0, BIG),
    "form": F(_SPEC["form"], "str", "how a matrix-state cell runs over time: recurrent (step "
              "by step) | chunkwise | parallel (one chunk of T) | auto (recurrent for one "
              "step, parallel up to a chunk, else chunkwise)",
              choices=("auto", "recurrent", "chunkwise", "parallel")),
    "chunk_size": F(_SPEC["chunk_size"], "int", "the chunkwise form's chunk in steps (0: the "
                    "cell's measured default; longer than num_steps: num_steps)", 0, BIG),
    "negative_eigenvalues": F(_SPEC["negative_eigenvalues"], "bool", "gla | mamba2 | "
                              "gated_deltanet | deltanet | deltaproduct | mingru | minlstm: the "
                              "transition's eigenvalues in [-1, 1] instead of [0, 1] (Grazzi "
                              "et al. 2025)"),
    "gate_soft_cap": F(_SPEC["gate_soft_cap"], "number", "mlstm: its input and forget gates' "
                       "pre-activations soft-capped, c tanh(x / c) (xLSTM 7B's 15; 0: none)",
                       0, None),
    "num_householder": F(_SPEC["num_householder"], "int", "deltaproduct: Householder updates "
                         "per token (n_h; 1 is Gated DeltaNet)", 1, BIG),
    "remat": F(_SPEC["remat"], "str", "what the backward pass recomputes to save memory: none "
               "| block (each block or layer, from its input) | chunk (each block per "
               "segment of 512 steps, the state carried between them)",
               choices=("none", "block", "chunk")),
    "unroll": F(_SPEC["unroll"], "int", "time steps per iteration of the compiled loop", 1, BIG),
    "dtype": F(_SPEC["dtype"], "str", "dtype of the matmul operands", choices=("float32",
               "bfloat16")),
    # Training.
    "optimizer": F("sgd", "str", "sgd (the book's) | adam | adamw", choices=("sgd", "adam",
                   "adamw")),
    "lr": F(1.0, "number", "learning rate (the peak, with warmup or decay)", 0, None,
            low_open=True),
    "weight_decay": F(0.0, "number", "on the weight matrices: adamw decoupled, sgd / adam "
                      "as an L2 term", 0, None),
    "beta1": F(0.9, "number", "adam / adamw: the first moment's decay", 0, 1),
    "beta2": F(0.999, "number", "adam / adamw: the second moment's decay", 0, 1),
    "warmup_steps": F(0, "int", "minibatches of linear warmup from 0 to lr", 0, BIG),
    "lr_schedule": F("constant", "str", "constant | cosine | linear (decay to "
                     "final_lr_fraction * lr at the last minibatch)",
                     choices=("constant", "cosine", "linear")),
    "final_lr_fraction": F(0.1, "number", "cosine / linear: the last step's lr over lr", 0, 1,
                           high_closed=True),
    "clip": F(1.0, "number", "gradients clipped to this global L2 norm", 0, None,
              low_open=True),
    "lr_decay": F(1.0, "number", "lr * lr_decay ** max(epoch + 1 - decay_after, 0) (1: "
                  "constant)", 0, 1, low_open=True, high_closed=True),
    "decay_after": F(0, "int", "epochs at the full rate before lr_decay applies", 0, BIG),
    # Prediction.
    "prefixes": F(("time traveller", "traveller"), "strings", "prompts continued at the end "
                  "(the first also every log_every_epochs)"),
    "num_preds": F(50, "int", "tokens predicted after each prefix", 0, BIG),
}  # fmt: skip

# Exercise 3 of section 8.6: the sequence section's autoregressive model, with an RNN
# (`rnnlm_jax.jobs.sine`).
SINE: dict[str, Field] = {
    **LOOP,
    "T": F(1000, "int", "series length: x_t = sin(0.01 t) + N(0, noise), t = 1..T", 2, BIG),
    "noise": F(0.2, "number", "the noise's standard deviation", 0, None),
    "tau": F(4, "int", "predict x_t from x_{t-tau}..x_{t-1}", 1, BIG),
    "n_train": F(600, "int", "the first n_train examples train; the rest only test", 1, BIG),
    "batch_size": F(16, "int", "examples per minibatch", 1, BIG),
    "lr": F(0.01, "number", "Adam's learning rate", 0, None, low_open=True),
    "mlp_hiddens": F(10, "int", "the book's MLP: tau -> mlp_hiddens ReLU -> 1", 1, BIG),
    "cell": F("rnn", "str", "the RNN regressor's cell", choices=("rnn", "gru", "lstm")),
    "num_hiddens": F(32, "int", "its width", 1, BIG),
    "num_layers": F(1, "int", "its layers", 1, BIG),
    "k_steps": F((1, 4, 16, 64), "ints", "the k-step-ahead predictions judged"),
}


def _slice(first: str, last: str) -> dict[str, Field]:
    """The LM table's fields from `first` to `last`, in order."""
    names = list(LM)
    return {n: LM[n] for n in names[names.index(first) : names.index(last) + 1]}


# State tracking and recall (`rnnlm_jax.jobs.synthetic`): the task, the lengths it trains and
# is tested on, then the language model's own model and training fields.
SYNTHETIC: dict[str, Field] = {
    **LOOP,
    "task": F("parity", "str", "parity | modular_arithmetic | cycle_navigation | s3 | s5 | "
              "mqar (rnnlm_jax.data.synthetic)", choices=("parity", "modular_arithmetic",
              "cycle_navigation", "s3", "s5", "mqar")),
    "train_min_len": F(3, "int", "training sequences' shortest length", 1, BIG),
    "train_max_len": F(40, "int", "training sequences' longest length (mqar: mqar_seq_len)",
                       1, BIG),
    "test_min_len": F(40, "int", "test sequences' shortest length", 1, BIG),
    "test_max_len": F(256, "int", "test sequences' longest length", 1, BIG),
    "test_bins": F(6, "int", "the test lengths' bins accuracy is reported in", 1, BIG),
    "modulus": F(5, "int", "modular_arithmetic: the modulus", 2, BIG),
    "num_kv_pairs": F(16, "int", "mqar: key-value pairs per sequence", 1, BIG),
    "mqar_vocab_size": F(512, "int", "mqar: tokens (keys from [1, V/2), values from [V/2, V))",
                         4, BIG),
    "mqar_seq_len": F(256, "int", "mqar: the sequences' length", 4, BIG),
    "power_a": F(0.01, "number", "mqar: the power law of the queries' gaps (1: uniform)", 0,
                 1, low_open=True, high_closed=True),
    "batch_size": F(64, "int", "sequences per minibatch", 1, BIG),
    "steps_per_epoch": F(500, "int", "minibatches per epoch (an evaluation after each)", 1,
                         BIG),
    "eval_examples": F(1024, "int", "sequences in each evaluation set", 1, BIG),
    **_slice("cell", "dtype"),
    **_slice("optimizer", "decay_after"),
}  # fmt: skip
del F

TABLES: dict[str, dict[str, Field]] = {"lm": LM, "population": LM, "sine": SINE,
                                       "synthetic": SYNTHETIC}  # fmt: skip
FIELDS = LM  # the language model's table (the default job's)

# Fields of older versions: each is translated to today's, then dropped.
LEGACY = {
    # An older version's name for `job`; today the synthetic job's task (never a job's name).
    "task": lambda v: {"job": v} if v in ("lm", "population", "sine") else {"task": v},
    "custom_vjp": lambda v: {} if v else {"impl": "flax"},
    "lstm_impl": lambda v: {"impl": {"scan": "fast", "cudnn": "cudnn"}.get(v, "auto")},
}


class FieldError(ValueError):
    """A config field is unknown or its value has the wrong type or range."""


def table(config_or_job=None) -> dict[str, Field]:
    """The table of a job (a name) or of a config (its `job` field; none: `lm`)."""
    if isinstance(config_or_job, str) or config_or_job is None:
        job = config_or_job or "lm"
    else:
        job = config_or_job.get("job", "lm") if hasattr(config_or_job, "get") else "lm"
    if job not in TABLES:
        raise FieldError(f"config.job={job!r} must be one of {tuple(TABLES)}")
    return TABLES[job]


def defaults(job: str = "lm") -> ml_collections.ConfigDict:
    """A config holding every field of `job` at its default (for `lm`, the book's recipe)."""
    fields = table(job)
    config = ml_collections.ConfigDict({name: f.default for name, f in fields.items()})
    config.job = job
    return config


def translate(given: dict) -> dict:
    """`given` with the fields of older versions (`LEGACY`) turned into today's."""
    given = dict(given)
    for name, new in LEGACY.items():
        if name in given:
            for key, value in new(given.pop(name)).items():
                given.setdefault(key, value)
    return given


def fill_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `config` with older fields translated and every field it lacks set to its
    job's default."""
    given = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    given = translate(given)
    job = given.get("job", "lm")
    return ml_collections.ConfigDict(
        {**defaults(job if job in TABLES else "lm").to_dict(), **given}
    )


def help_text(job: str = "lm") -> str:
    """A job's table as text: `name (default): help`, one field a line."""
    return "\n".join(f"{name} ({f.default!r}): {f.help}" for name, f in table(job).items())


def unknown_field_message(name: str, job: str = "lm") -> str:
    """`config.X is not a field of ...`, with the nearest known names."""
    near = difflib.get_close_matches(name, table(job), n=3)
    hint = f"; did you mean {' or '.join(near)}?" if near else ""
    what = {"lm": "the language-model job", "population": "population mode",
            "sine": "the sine job", "synthetic": "the synthetic-task job"}[job]  # fmt: skip
    return f"config.{name} is not a field of {what}{hint}"


def check_fields(config: ml_collections.ConfigDict) -> None:
    """`FieldError` (one line, naming the field) for an unknown field or a bad value."""
    job = config.get("job", "lm")
    if not isinstance(job, str) or job not in TABLES:
        raise FieldError(f"config.job={job!r} must be one of {tuple(TABLES)}")
    fields = table(job)
    for name in config.keys():
        if name not in fields and name not in LEGACY:
            raise FieldError(unknown_field_message(name, job))
    for name, field in fields.items():
        if name in config:
            _check_value(name, field, config[name])


def _check_value(name: str, field: Field, value) -> None:
    def bad(expected: str):
        raise FieldError(f"config.{name}={value!r} must be {expected}")

    if field.kind == "bool":
        if not isinstance(value, bool):
            bad("True or False")
        return
    if field.kind == "str":
        if not isinstance(value, str):
            bad("a string")
        if field.choices and value not in field.choices:
            bad(f"one of {field.choices}")
        return
    if field.kind == "ints":
        if not (
            isinstance(value, (tuple, list))
            and len(value) > 0
            and all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in value)
        ):
            bad("a non-empty tuple of integers >= 1")
        return
    if field.kind == "strings":
        if not (
            isinstance(value, (tuple, list))
            and len(value) > 0
            and all(isinstance(p, str) and p for p in value)
        ):
            bad("a non-empty tuple of non-empty strings")
        return
    is_int = isinstance(value, int) and not isinstance(value, bool)
    is_number = is_int or isinstance(value, float)
    if (field.kind == "int" and not is_int) or not is_number or value != value:
        bad(("an integer" if field.kind == "int" else "a number") + _range(field))
    low_ok = field.low is None or (value > field.low if field.low_open else value >= field.low)
    high_ok = field.high is None or (
        value <= field.high if field.high_closed else value < field.high
    )
    if not (low_ok and high_ok):
        bad(("an integer" if field.kind == "int" else "a number") + _range(field))


def _range(field: Field) -> str:
    low, high = field.low, field.high
    if field.kind == "int" and high is not None and high >= BIG:
        high = None
    if field.kind == "int" and low is not None and low <= -BIG:
        low = None
    if low is not None and high is not None:
        left, right = "(" if field.low_open else "[", "]" if field.high_closed else ")"
        return f" in {left}{low:g}, {high:g}{right}"
    if low is not None:
        return f" {'>' if field.low_open else '>='} {low:g}"
    if high is not None:
        return f" {'<=' if field.high_closed else '<'} {high:g}"
    return ""
