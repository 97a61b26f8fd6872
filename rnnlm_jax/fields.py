"""The language-model job's config fields, as one table: each field's type, allowed values,
default and a line of help.

The table is the only place a default lives. `defaults()` is the config every shipped
config file starts from (so every one of them accepts every field on the command line,
e.g. `--config.corpus=text`); `fill_defaults` gives a config that lacks fields (an older
workdir's `config.json`, a config file of your own) the defaults of the ones it lacks;
`check_fields` checks every field's type and range and refuses a field the table does not
know (with the nearest name, for a typo). Checks that tie fields together live in
`configuration.validate`.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import ml_collections

# Kinds: "int", "number" (int or float), "bool", "str", "strings" (a non-empty tuple of
# non-empty strings).


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
FIELDS: dict[str, Field] = {
    # Data.
    "corpus": F("timemachine", "str", "timemachine | ptb | shakespeare | text (your files)",
                choices=("timemachine", "ptb", "shakespeare", "text")),
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
    "token": F("char", "str", "char | word tokens", choices=("char", "word")),
    "max_tokens": F(10000, "int", "training tokens kept (<= 0: all of them)", -BIG, BIG),
    "min_freq": F(0, "int", "tokens seen fewer times become <unk> (0 keeps all)", 0, BIG),
    "num_val": F(0, "int", "timemachine: held-out tokens right after the training text", 0,
                 BIG),
    "batch_size": F(32, "int", "sequences per minibatch", 1, BIG),
    "num_steps": F(35, "int", "time steps per minibatch", 1, BIG),
    "partition": F("sequential", "str", "sequential (state carried) | random (state reset "
                   "every minibatch)", choices=("sequential", "random")),
    "random_offset": F(True, "bool", "sequential: start each epoch at a random offset in "
                       "[0, num_steps] (False: at token 0)"),
    # Model.
    "cell": F("rnn", "str", "rnn | gru | lstm", choices=("rnn", "gru", "lstm")),
    "num_hiddens": F(256, "int", "hidden units per layer", 1, BIG),
    "num_layers": F(1, "int", "stacked recurrent layers", 1, BIG),
    "initializer": F("normal", "str", "normal | uniform (scale init_scale) | xavier | flax | "
                     "pytorch", choices=("normal", "uniform", "xavier", "flax", "pytorch")),
    "init_scale": F(0.01, "number", "std (normal) or bound (uniform) of the weights", 0, None,
                    low_open=True),
    "dropout": F(0.0, "number", "dropout between stacked layers", 0, 1),
    "embed_dim": F(0, "int", "a learned embedding of this width (0: one-hot inputs)", 0, BIG),
    "embed_dropout": F(0.0, "number", "dropout on the embedding's output", 0, 1),
    "output_dropout": F(0.0, "number", "dropout on the last layer's outputs", 0, 1),
    "tie_embeddings": F(False, "bool", "the head's kernel is the embedding transposed"),
    "custom_vjp": F(True, "bool", "fast layers with hand-written backward passes (False: "
                    "flax's cells and jax.grad)"),
    "lstm_impl": F("auto", "str", "lstm: scan | cudnn (CUDA only) | auto",
                   choices=("auto", "scan", "cudnn")),
    "unroll": F(1, "int", "time steps per iteration of the compiled loop", 1, BIG),
    "dtype": F("float32", "str", "dtype of the matmul operands", choices=("float32",
               "bfloat16")),
    # Training.
    "lr": F(1.0, "number", "SGD learning rate", 0, None, low_open=True),
    "clip": F(1.0, "number", "gradients clipped to this global L2 norm", 0, None,
              low_open=True),
    "lr_decay": F(1.0, "number", "lr * lr_decay ** max(epoch + 1 - decay_after, 0) (1: "
                  "constant)", 0, 1, low_open=True, high_closed=True),
    "decay_after": F(0, "int", "epochs at the full rate before lr_decay applies", 0, BIG),
    "num_epochs": F(500, "int", "epochs to train", 1, BIG),
    "seed": F(0, "int", "parameters, data order and dropout", 0, MAX_SEED, high_closed=True),
    # Checkpoints.
    "checkpoint_every_epochs": F(50, "int", "a checkpoint every this many epochs (also "
                                 "after the last and on SIGTERM)", 1, BIG),
    "max_to_keep": F(3, "int", "checkpoints kept (older ones are deleted)", 1, BIG),
    # Logging and prediction.
    "log_every_epochs": F(10, "int", "a progress line and a sample every this many epochs",
                          1, BIG),
    "prefixes": F(("time traveller", "traveller"), "strings", "prompts continued at the end "
                  "(the first also every log_every_epochs)"),
    "num_preds": F(50, "int", "tokens predicted after each prefix", 0, BIG),
}  # fmt: skip
del F


class FieldError(ValueError):
    """A config field is unknown or its value has the wrong type or range."""


def defaults() -> ml_collections.ConfigDict:
    """A config holding every field at its default (the book's seed recipe)."""
    return ml_collections.ConfigDict({name: f.default for name, f in FIELDS.items()})


def fill_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `config` with every field it lacks set to the table's default."""
    given = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return ml_collections.ConfigDict({**defaults().to_dict(), **given})


def help_text() -> str:
    """The table as text: `name (default): help`, one field a line."""
    return "\n".join(f"{name} ({f.default!r}): {f.help}" for name, f in FIELDS.items())


def unknown_field_message(name: str) -> str:
    """`config.X is not a field of ...`, with the nearest known names."""
    near = difflib.get_close_matches(name, FIELDS, n=3)
    hint = f"; did you mean {' or '.join(near)}?" if near else ""
    return f"config.{name} is not a field of the language-model job{hint}"


def check_fields(config: ml_collections.ConfigDict) -> None:
    """`FieldError` (one line, naming the field) for an unknown field or a bad value."""
    for name in config.keys():
        if name not in FIELDS:
            raise FieldError(unknown_field_message(name))
    for name, field in FIELDS.items():
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
