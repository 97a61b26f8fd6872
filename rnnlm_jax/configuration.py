"""Checks a run's config and turns it into the objects it describes (model, dtype)."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from rnnlm_jax import fields
from rnnlm_jax.fast_layers import resolve_lstm_impl
from rnnlm_jax.models import RNNModel

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class ConfigError(ValueError):
    """A config field has a value the run cannot use; the message names the field."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks `config` and returns it with every field it lacks set to its default.

    Raises `ConfigError` (one line, naming the field) for an unknown field, a value of the
    wrong type or range (the table in `rnnlm_jax.fields`) or fields that do not fit together.
    """
    try:
        fields.check_fields(config)
    except fields.FieldError as e:
        raise ConfigError(str(e)) from None
    config = fields.fill_defaults(config)
    embed_dim = config.embed_dim
    _check(
        embed_dim or not (config.embed_dropout or config.tie_embeddings),
        "config.embed_dropout and config.tie_embeddings need config.embed_dim > 0",
    )
    _check(
        not config.tie_embeddings or embed_dim == config.num_hiddens,
        "config.tie_embeddings needs config.embed_dim == config.num_hiddens",
    )
    if config.corpus == "text":
        _check(bool(config.text_files), "config.corpus='text' needs config.text_files")
        names = [n.strip() for n in config.text_files.split(",")]
        _check(
            len(names) in (1, 3) and bool(names[0]),
            f"config.text_files={config.text_files!r} names {len(names)} files: give one "
            "file (split by config.valid_fraction and config.test_fraction) or three, "
            "train,valid,test (valid and test may be left empty)",
        )
    _check(
        config.valid_fraction + config.test_fraction < 0.5 or config.corpus != "text",
        f"config.valid_fraction + config.test_fraction = "
        f"{config.valid_fraction + config.test_fraction:g} leaves less than half the text "
        "for training",
    )
    _check(
        config.lstm_impl != "cudnn"
        or (config.dtype == "float32" and resolve_lstm_impl("auto") == "cudnn"),
        "config.lstm_impl='cudnn' needs a CUDA GPU and config.dtype=float32 (use 'auto' or 'scan')",
    )
    _check(
        config.dtype == "float32" or config.cell != "rnn" or config.custom_vjp,
        "config.dtype=bfloat16 with cell rnn needs config.custom_vjp=True "
        "(flax's SimpleCell would carry a bfloat16 state)",
    )
    return config


def model_from_config(config: ml_collections.ConfigDict, vocab_size: int) -> RNNModel:
    """The `RNNModel` that `config` describes, for a vocab of `vocab_size` tokens (fields
    the config lacks, as an older workdir's may, take the table's defaults)."""
    config = fields.fill_defaults(config)
    return RNNModel(
        vocab_size=vocab_size,
        cell=config.cell,
        num_hiddens=config.num_hiddens,
        num_layers=config.num_layers,
        initializer=config.initializer,
        init_scale=config.init_scale,
        dropout=config.dropout,
        embed_dim=config.embed_dim,
        embed_dropout=config.embed_dropout,
        output_dropout=config.output_dropout,
        tie_embeddings=config.tie_embeddings,
        custom_vjp=config.custom_vjp,
        unroll=config.unroll,
        dtype=DTYPES[config.dtype],
        lstm_impl=config.lstm_impl,
    )
