"""`ModelSpec`: the recurrent language model as plain values, the typed form of a config's
model fields. `RNNModel` has these fields (and `vocab_size`), and hands the recurrent
stack's share (`LAYER_FIELDS`) to its `RNNLayer` by name; `rnnlm_jax.config.fields` takes
their defaults from here, so each default lives in one place."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What a language model of `RNNModel` is.

    Attributes:
      cell: `rnn`, `gru`, `lstm`, `slstm` (xLSTM's), or a recurrence trained in parallel
        over time: `mingru`, `minlstm`, `rglru`, `lru` (`linear_cells`), `mlstm`, `gla`,
        `mamba2`, `gated_deltanet` (`matrix_cells`), or `attention` (residual blocks).
      block: `stack` (the plain stack of recurrent layers: the book's), `residual`
        (pre-norm residual blocks of a recurrence and a gated MLP, `blocks`) or `xlstm`
        (xLSTM's mLSTM blocks, cell `mlstm`, `xlstm_block`).
      mlp_expansion: the residual blocks' MLP width, in multiples of H.
      conv_width: w > 0, a causal convolution of width w added to each residual block's
        recurrence input (`blocks`); 0, none.
      mixers: a pattern of each residual block's mixer (hybrids; `blocks.block_mixers`);
        empty: every block mixes with `cell`.
      attention_window: attention's window of steps, carried as its state.
      positions: attention's positions: rotary | learned (nanoGPT's) | none.
      num_hiddens, num_layers: H and L of the recurrent stack.
      initializer, init_scale: how the weights are drawn (`nn.initializers`).
      dropout: between stacked layers; embed_dropout, output_dropout: on the embedding's
        output and on the last layer's outputs.
      embed_dim: E > 0, a learned embedding; 0, one-hot inputs (the book's).
      tie_embeddings: the head's kernel is the embedding transposed (needs E == H).
      impl: what runs the recurrence: auto | fast | flax | cudnn (`fast_layers.resolve_impl`).
      scan: how the linear cells run over time: auto | associative | sequential.
      num_heads: the RG-LRU's gates' diagonal blocks; a matrix-state cell's heads.
      key_dim, value_dim: a matrix-state cell's widths per head (0: H / num_heads).
      form: how a matrix-state cell runs over time: auto | recurrent | chunkwise | parallel.
      chunk_size: the chunkwise form's chunk (0: the cell's measured default).
      negative_eigenvalues: gla, mamba2, gated_deltanet, deltanet, deltaproduct, mingru,
        minlstm: the transition's eigenvalues in [-1, 1] instead of [0, 1] (Grazzi et al.
        2025).
      gate_soft_cap: mlstm: its gate pre-activations soft-capped, `c tanh(x / c)` (xLSTM
        7B's 15; 0: none).
      num_householder: deltaproduct: Householder updates per token (n_h).
      remat: none | block | chunk: what the backward pass recomputes to save memory.
      unroll: time steps per iteration of the compiled loop.
      dtype: the matmuls' operand dtype, `float32` or `bfloat16`.
    """

    cell: str = "rnn"
    block: str = "stack"
    mlp_expansion: int = 3
    conv_width: int = 0
    mixers: str = ""
    attention_window: int = 256
    positions: str = "rotary"
    num_hiddens: int = 256
    num_layers: int = 1
    initializer: str = "normal"
    init_scale: float = 0.01
    dropout: float = 0.0
    embed_dim: int = 0
    embed_dropout: float = 0.0
    output_dropout: float = 0.0
    tie_embeddings: bool = False
    impl: str = "auto"
    scan: str = "auto"
    num_heads: int = 1
    key_dim: int = 0
    value_dim: int = 0
    form: str = "auto"
    chunk_size: int = 0
    negative_eigenvalues: bool = False
    gate_soft_cap: float = 15.0
    num_householder: int = 1
    remat: str = "none"
    unroll: int = 1
    dtype: str = "float32"

    @classmethod
    def from_config(cls, config: Any) -> ModelSpec:
        """The spec of a config (any mapping or `ConfigDict`); fields it lacks keep their
        defaults."""
        given = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        return cls(**{f.name: given[f.name] for f in dataclasses.fields(cls) if f.name in given})

    def model_kwargs(self) -> dict[str, Any]:
        """`RNNModel`'s keyword arguments (`dtype` as a JAX dtype)."""
        kwargs = dataclasses.asdict(self)
        kwargs["dtype"] = DTYPES[self.dtype]
        return kwargs


# The fields `RNNModel` hands to its `RNNLayer` as they are.
LAYER_FIELDS = ("cell", "num_hiddens", "num_layers", "dropout", "initializer", "init_scale",
                "impl", "scan", "num_heads", "key_dim", "value_dim", "form", "chunk_size",
                "negative_eigenvalues", "gate_soft_cap", "num_householder", "remat", "unroll",
                "dtype")  # fmt: skip
# The fields that fix the parameters' shapes: a checkpoint cannot be restored into others.
SHAPE_FIELDS = ("cell", "block", "mlp_expansion", "conv_width", "mixers", "positions",
                "attention_window", "num_hiddens", "num_layers",
                "num_heads", "key_dim", "value_dim", "num_householder", "embed_dim",
                "tie_embeddings")  # fmt: skip
