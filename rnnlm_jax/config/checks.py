"""Checks a run's config (each field against its job's table, then the fields that must fit
together) and turns it into the model it describes."""

from __future__ import annotations

import jax
import ml_collections

from rnnlm_jax.config import fields
from rnnlm_jax.data import synthetic
from rnnlm_jax.nn.blocks import block_mixers
from rnnlm_jax.nn.fast_layers import cuda_available, resolve_impl
from rnnlm_jax.nn.layer import CHUNK_SIZES, NEGATIVE_EIGENVALUE_CELLS
from rnnlm_jax.nn.linear_cells import LINEAR_CELLS
from rnnlm_jax.nn.linear_scan import resolve_scan
from rnnlm_jax.nn.matrix_cells import MATRIX_CELLS
from rnnlm_jax.nn.models import RNNModel, check_model_fields
from rnnlm_jax.nn.spec import DTYPES, ModelSpec  # noqa: F401
from rnnlm_jax.nn.xlstm_block import xlstm_widths


class ConfigError(ValueError):
    """A config field has a value the run cannot use; the message names the field."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks `config` and returns it with every field it lacks set to its default.

    Raises `ConfigError` (one line, naming the field) for an unknown field, a value of the
    wrong type or range (the table in `rnnlm_jax.config.fields`) or fields that do not fit together.
    """
    try:
        fields.check_fields(config)
    except fields.FieldError as e:
        raise ConfigError(str(e)) from None
    config = fields.fill_defaults(config)
    if config.job == "sine":
        _check_sine(config)
        return config
    if config.job == "synthetic":
        _check_synthetic(config)
        _check_model(config)
        _check_lr_decay(config)
        return config
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
        config.token in ("char", "word")
        or config.corpus not in ("timemachine", "ptb", "shakespeare"),
        f"config.token={config.token!r} reads through token files: use it with "
        f"config.corpus='text' or a named corpus (enwik8, text8, wikitext...); "
        f"{config.corpus} reads char or word tokens",
    )
    _check(
        config.token != "sentencepiece" or config.vocab_size > 0,
        "config.token='sentencepiece' needs config.vocab_size > 0 (its number of pieces)",
    )
    _check(
        config.valid_fraction + config.test_fraction < 0.5 or config.corpus != "text",
        f"config.valid_fraction + config.test_fraction = "
        f"{config.valid_fraction + config.test_fraction:g} leaves less than half the text "
        "for training",
    )
    _check_model(config)
    _check(
        not config.state_reset or config.partition == "sequential",
        f"config.state_reset={config.state_reset:g} resets a carried state: it needs "
        "config.partition='sequential' (random partitioning resets every minibatch)",
    )
    _check_lr_decay(config)
    _check(
        config.job != "population"
        or (
            config.optimizer == "sgd"
            and not config.weight_decay
            and config.lr_schedule == "constant"
            and not config.warmup_steps
        ),  # fmt: skip
        "population mode trains the book's clipped SGD (each member its lr and clip): "
        "config.optimizer='sgd' with no weight_decay, warmup_steps or lr_schedule",
    )
    return config


def _check_lr_decay(config: ml_collections.ConfigDict) -> None:
    _check(
        config.lr_decay == 1.0 or config.lr_schedule == "constant",
        "config.lr_decay (per epoch) needs config.lr_schedule='constant'",
    )


def _check_model(config: ml_collections.ConfigDict) -> None:
    """The model fields that must fit together (every job with a language model's fields)."""
    embed_dim = config.embed_dim
    _check(
        embed_dim or not (config.embed_dropout or config.tie_embeddings),
        "config.embed_dropout and config.tie_embeddings need config.embed_dim > 0",
    )
    _check(
        not config.tie_embeddings or embed_dim == config.num_hiddens,
        "config.tie_embeddings needs config.embed_dim == config.num_hiddens",
    )
    _check(
        config.impl != "cudnn"
        or (config.cell == "lstm" and config.dtype == "float32" and cuda_available()),
        "config.impl='cudnn' needs cell lstm, a CUDA GPU and config.dtype=float32 (use 'auto' "
        "or 'fast')",
    )
    _check(
        config.dtype == "float32" or config.cell != "rnn" or config.impl != "flax",
        "config.dtype=bfloat16 with cell rnn needs config.impl other than 'flax' "
        "(flax's SimpleCell would carry a bfloat16 state)",
    )
    _check(
        config.block == "stack" or embed_dim in (0, config.num_hiddens),
        f"config.block={config.block!r} needs config.embed_dim 0 or config.num_hiddens (its "
        "blocks add to an embedding of width num_hiddens)",
    )
    try:
        check_model_fields(config)
        mixers = block_mixers(config.cell, config.mixers, config.num_layers)
    except ValueError as e:
        raise ConfigError(f"config.{e}") from None
    _check(
        not config.negative_eigenvalues
        or (config.block != "xlstm" and set(mixers) & set(NEGATIVE_EIGENVALUE_CELLS)),
        f"config.negative_eigenvalues widens a decay or delta transition to [-1, 1]: cell "
        f"{config.cell!r} has none (cells {', '.join(NEGATIVE_EIGENVALUE_CELLS)})",
    )
    matrix = config.cell in MATRIX_CELLS
    if config.block == "xlstm":
        _check(
            not (config.key_dim or config.value_dim),
            "config.block='xlstm' sets its heads' widths (2 x num_hiddens / num_heads): leave "
            "config.key_dim and config.value_dim at 0",
        )
        try:
            xlstm_widths(config.num_hiddens, config.num_heads)
        except ValueError as e:
            raise ConfigError(f"config.{e}") from None
    _check(
        config.block == "xlstm"
        or not (matrix or config.cell in ("rglru", "slstm"))
        or config.num_hiddens % config.num_heads == 0,
        f"config.num_heads={config.num_heads} must divide config.num_hiddens="
        f"{config.num_hiddens} (cell {config.cell} splits it into heads)",
    )
    _check(
        config.remat != "block" or config.block != "stack" or matrix or config.cell in LINEAR_CELLS,
        f"config.remat='block' recomputes residual blocks, or the layers of a parallel-in-time "
        f"or matrix-state cell; a stack of {config.cell} has neither (use 'chunk' or 'none')",
    )


def _check_synthetic(config: ml_collections.ConfigDict) -> None:
    """The synthetic-task job's fields that must fit together."""
    _check(
        config.train_min_len <= config.train_max_len,
        f"config.train_min_len={config.train_min_len} exceeds config.train_max_len="
        f"{config.train_max_len}",
    )
    _check(
        config.test_min_len <= config.test_max_len,
        f"config.test_min_len={config.test_min_len} exceeds config.test_max_len="
        f"{config.test_max_len}",
    )
    if config.task == "mqar":
        try:
            synthetic.Task("mqar", vocab_size=config.mqar_vocab_size,
                           num_kv_pairs=config.num_kv_pairs)  # fmt: skip
        except ValueError as e:
            raise ConfigError(f"config.{e}") from None
        _check(
            config.mqar_seq_len >= 4 * config.num_kv_pairs,
            f"config.mqar_seq_len={config.mqar_seq_len} leaves no room for "
            f"config.num_kv_pairs={config.num_kv_pairs} pairs and their queries: it needs at "
            f"least {4 * config.num_kv_pairs}",
        )
        return
    _check(
        config.test_max_len > config.train_max_len,
        f"config.test_max_len={config.test_max_len} tests no length beyond training's "
        f"(config.train_max_len={config.train_max_len}): {config.task} measures how far a "
        "model generalises past the lengths it was trained on",
    )
    shortest = 3 if config.task == "modular_arithmetic" else 1
    _check(
        config.train_min_len >= shortest,
        f"config.train_min_len={config.train_min_len}: {config.task}'s shortest sequence has "
        f"{shortest} tokens",
    )


def _check_sine(config: ml_collections.ConfigDict) -> None:
    """The sine job's fields that must fit together."""
    _check(
        config.T > config.tau + max(config.k_steps), "sine config: T must exceed tau + max(k_steps)"
    )
    _check(
        0 < config.n_train <= config.T - config.tau, "sine config: n_train must be in [1, T - tau]"
    )


def resolved_impl(config: ml_collections.ConfigDict) -> str:
    """What runs the recurrence of `config`'s model on this machine, as the run's first
    lines say: e.g. `fast (auto, cpu)`."""
    if config.cell == "attention" or config.get("mixers"):
        mixers = block_mixers(config.cell, config.mixers, config.num_layers)
        names = ", ".join(dict.fromkeys(mixers))
        window = ""
        if "attention" in mixers:
            window = f", attention over {config.attention_window} steps"
        return f"{config.block} blocks of {names}{window} ({jax.default_backend()})"
    if config.cell in MATRIX_CELLS:
        chunk = config.chunk_size or CHUNK_SIZES[config.cell]
        how = f"{config.form} form" + (f", chunks of {chunk}" if config.form != "recurrent" else "")
        if config.dtype != "float32":  # the stabiliser and the state need float32
            how += f", the recurrence in float32 ({config.dtype} projections)"
        return f"{how} ({jax.default_backend()})"
    if config.cell in LINEAR_CELLS:
        scan = resolve_scan(config.scan)
        how = f"{config.scan}, " if scan != config.scan else ""
        return f"{scan} scan ({how}{jax.default_backend()})"
    impl = resolve_impl(config.impl, config.cell, DTYPES[config.dtype])
    how = f"{config.impl}, " if impl != config.impl else ""
    return f"{impl} ({how}{jax.default_backend()})"


def model_from_config(config: ml_collections.ConfigDict, vocab_size: int) -> RNNModel:
    """The `RNNModel` that `config` describes, for a vocab of `vocab_size` tokens (fields
    the config lacks, as an older workdir's may, take the table's defaults)."""
    spec = ModelSpec.from_config(fields.fill_defaults(config))
    return RNNModel.from_spec(spec, vocab_size)
