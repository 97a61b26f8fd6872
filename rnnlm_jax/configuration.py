"""Checks a run's config and turns it into the objects it describes (model, dtype)."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from rnnlm_jax.corpora import CORPORA
from rnnlm_jax.data import PARTITIONS
from rnnlm_jax.fast_layers import LSTM_IMPLS, resolve_lstm_impl
from rnnlm_jax.models import CELLS, INITS, RNNModel
from rnnlm_jax.vocab import CLEANINGS, TOKEN_TYPES

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class ConfigError(ValueError):
    """A config field has a value the run cannot use; the message names the field."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _choice(config, field: str, choices) -> None:
    value = config[field]
    _check(value in choices, f"config.{field}={value!r} is not one of {tuple(choices)}")


def _at_least(config, field: str, low, kind=int) -> None:
    value = config[field]
    _check(
        isinstance(value, kind) and not isinstance(value, bool) and value >= low,
        f"config.{field}={value!r} must be {'an integer' if kind is int else 'a number'} >= {low}",
    )


# The fields every text job reads (the others have defaults: `config.get`).
REQUIRED = (
    "batch_size", "num_steps", "num_hiddens", "num_layers", "num_epochs", "lr", "clip",
    "cell", "initializer", "init_scale", "token", "min_freq", "partition", "dtype",
    "custom_vjp", "unroll", "seed", "max_tokens", "num_val", "num_preds", "prefixes",
    "log_every_epochs", "checkpoint_every_epochs", "max_to_keep",
)  # fmt: skip
# The time machine corpus also reads these.
REQUIRED_TIMEMACHINE = ("data_file", "data_dir", "data_url")
MAX_SEED = 2**32 - 1  # JAX's and NumPy's seeds are 32-bit


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises `ConfigError` (one line, naming the field) for a value the run cannot use."""
    needed = REQUIRED + (
        REQUIRED_TIMEMACHINE if config.get("corpus", "timemachine") == "timemachine" else ()
    )
    missing = [field for field in needed if field not in config]
    _check(
        not missing,
        f"the config defines no {', '.join(missing)} (get_config() must set every field a run "
        "reads; see configs/timemachine.py)",
    )
    _check(
        isinstance(config.seed, int) and config.seed <= MAX_SEED,
        f"config.seed={config.seed!r} must be an integer in [0, {MAX_SEED}]",
    )
    for field in ("batch_size", "num_steps", "num_hiddens", "num_layers", "num_epochs"):
        _at_least(config, field, 1)
    for field in ("log_every_epochs", "unroll", "checkpoint_every_epochs", "max_to_keep"):
        _at_least(config, field, 1)
    for field in ("num_preds", "min_freq", "seed"):
        _at_least(config, field, 0)
    _check(isinstance(config.max_tokens, int), "config.max_tokens must be an integer (<= 0: all)")
    for field in ("lr", "clip", "init_scale"):
        value = config[field]
        _check(
            isinstance(value, (int, float)) and value > 0,
            f"config.{field}={value!r} must be a number > 0",
        )
    for field in ("dropout", "embed_dropout", "output_dropout"):
        value = config.get(field, 0.0)
        _check(
            isinstance(value, (int, float)) and 0 <= value < 1,
            f"config.{field}={value!r} must be a number in [0, 1)",
        )
    embed_dim = config.get("embed_dim", 0)
    _check(
        isinstance(embed_dim, int) and embed_dim >= 0,
        f"config.embed_dim={embed_dim!r} must be an integer >= 0 (0: one-hot inputs)",
    )
    _check(
        embed_dim or not (config.get("embed_dropout", 0.0) or config.get("tie_embeddings", False)),
        "config.embed_dropout and config.tie_embeddings need config.embed_dim > 0",
    )
    _check(
        not config.get("tie_embeddings", False) or embed_dim == config.num_hiddens,
        "config.tie_embeddings needs config.embed_dim == config.num_hiddens",
    )
    decay = config.get("lr_decay", 1.0)
    _check(
        isinstance(decay, (int, float)) and 0 < decay <= 1,
        f"config.lr_decay={decay!r} must be a number in (0, 1] (1: a constant rate)",
    )
    _check(
        isinstance(config.get("decay_after", 0), int) and config.get("decay_after", 0) >= 0,
        "config.decay_after must be an integer >= 0 (epochs at the full rate)",
    )
    _check(
        isinstance(config.get("random_offset", True), bool),
        "config.random_offset must be True or False",
    )
    if "corpus" in config:
        _choice(config, "corpus", CORPORA)
    if config.get("corpus") == "text":
        _check(bool(config.get("text_files")), "config.corpus='text' needs config.text_files")
        for field in ("valid_fraction", "test_fraction"):
            value = config.get(field, 0.0)
            _check(
                isinstance(value, (int, float)) and 0 <= value < 0.5,
                f"config.{field}={value!r} must be a number in [0, 0.5)",
            )
    if "cleaning" in config:
        _choice(config, "cleaning", CLEANINGS)
    _check(
        isinstance(config.num_val, int) and config.num_val >= 0,
        f"config.num_val={config.num_val!r} must be an integer >= 0 (0: no validation)",
    )
    _choice(config, "cell", CELLS)
    _choice(config, "initializer", INITS)
    _choice(config, "token", TOKEN_TYPES)
    _choice(config, "partition", PARTITIONS)
    _choice(config, "dtype", DTYPES)
    if "lstm_impl" in config:
        _choice(config, "lstm_impl", LSTM_IMPLS)
        _check(
            config.lstm_impl != "cudnn"
            or (config.dtype == "float32" and resolve_lstm_impl("auto") == "cudnn"),
            "config.lstm_impl='cudnn' needs a CUDA GPU and config.dtype=float32 "
            "(use 'auto' or 'scan')",
        )
    _check(isinstance(config.custom_vjp, bool), "config.custom_vjp must be True or False")
    _check(
        config.dtype == "float32" or config.cell != "rnn" or config.custom_vjp,
        "config.dtype=bfloat16 with cell rnn needs config.custom_vjp=True "
        "(flax's SimpleCell would carry a bfloat16 state)",
    )
    prefixes = config.prefixes
    _check(
        isinstance(prefixes, (tuple, list))
        and len(prefixes) > 0
        and all(isinstance(p, str) and p for p in prefixes),
        f"config.prefixes={prefixes!r} must be a non-empty tuple of non-empty strings",
    )


def model_from_config(config: ml_collections.ConfigDict, vocab_size: int) -> RNNModel:
    """The `RNNModel` that `config` describes, for a vocab of `vocab_size` tokens.

    Fields that only later versions write (`dropout`, `custom_vjp`, `unroll`, `dtype`,
    `lstm_impl`) take
    the model's defaults when a config (e.g. an older workdir's) lacks them.
    """
    defaults = RNNModel(vocab_size)
    return RNNModel(
        vocab_size=vocab_size,
        cell=config.cell,
        num_hiddens=config.num_hiddens,
        num_layers=config.num_layers,
        initializer=config.initializer,
        init_scale=config.init_scale,
        dropout=config.get("dropout", defaults.dropout),
        embed_dim=config.get("embed_dim", 0),
        embed_dropout=config.get("embed_dropout", 0.0),
        output_dropout=config.get("output_dropout", 0.0),
        tie_embeddings=config.get("tie_embeddings", False),
        custom_vjp=config.get("custom_vjp", defaults.custom_vjp),
        unroll=config.get("unroll", defaults.unroll),
        dtype=DTYPES[config.get("dtype", "float32")],
        lstm_impl=config.get("lstm_impl", defaults.lstm_impl),
    )
