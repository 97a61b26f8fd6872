"""The recurrent language model: token ids -> `RNNLayer` -> a Dense head to logits.

Shapes (T = num_steps, B = batch size, V = vocab size, H = num_hiddens,
L = num_layers, E = embed_dim):
  token ids `[B, T]` --one-hot (the book's) or an embedding, time-major--> `[T, B, V or E]`
  --RNNLayer--> outputs `[T, B, H]` --Dense--> logits `[T * B, V]`, plus the final state
  `[L, B, H]` (LSTM: a pair `(c, h)` of them).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnnlm_jax.nn.attention import POSITIONS
from rnnlm_jax.nn.blocks import ResidualBlock, block_mixers, block_state, check_conv_width
from rnnlm_jax.nn.head import Dense
from rnnlm_jax.nn.initializers import INITS, head_initializers, initializers  # noqa: F401
from rnnlm_jax.nn.layer import (  # noqa: F401
    CELLS,
    RNNLayer,
    State,
    hgrn2_lower_bounds,
    translate_deprecated,
    zero_state,
)
from rnnlm_jax.nn.matrix_cells import GATE_SOFT_CAP, head_widths
from rnnlm_jax.nn.spec import LAYER_FIELDS, ModelSpec

BLOCKS = ("stack", "residual", "xlstm", "gpt")

REMAT_STEPS = 512  # remat="chunk": the segments of time each block is recomputed over


class RNNModel(nn.Module):
    """The book's `RNNModel` (one-hot tokens -> `RNNLayer` -> Dense head to vocab logits),
    with the options of word-level models such as Zaremba et al.'s.

    It follows the model contract (`rnnlm_jax.nn.contract`) with `logits_layout =
    "time_major"`: logits `[T * B, V]`, row t * B + b for step t of sequence b.

    Attributes:
      vocab_size: V.
      embed_dim: E > 0: a learned embedding `[V, E]` (drawn like the kernels) feeds the
        layer; 0: the token ids stand for their one-hot (the book's).
      embed_dropout: dropout on the embedding's output (needs `embed_dim`).
      dropout: dropout between stacked layers (`RNNLayer`'s).
      output_dropout: dropout on the last layer's outputs, before the head.
      tie_embeddings: the head's kernel is the embedding transposed (needs E == H).
      mixers: blocks of several kinds (hybrids): a pattern of mixers repeated over the
        `num_layers` blocks, e.g. `gated_deltanet*2,attention` or, in xLSTM's blocks,
        `mlstm*7,slstm` (`blocks.block_mixers`); empty: every block mixes with `cell`.
        Blocks of several kinds keep their states as a tuple, one `[1, B, ...]` tree each.
      attention_window: cell or mixer `attention`: the W most recent steps each step
        attends to, whose keys and values the state carries (`attention`).
      positions: attention's positions: `rotary` (in every attention block), `learned`
        (nanoGPT's: a table of `attention_window` rows added to the first block's input, at
        the steps the state has counted; the first block must be attention) or `none`.
      block: `stack`, the tokens feed `RNNLayer`'s stack (the book's); `residual`, an
        embedding of width H (E must be 0 or H) feeds `num_layers` residual blocks
        (`blocks.ResidualBlock`: RMSNorm, the recurrence, RMSNorm, a gated MLP of width
        `mlp_expansion * H`), then a last RMSNorm and the head; `dropout` then applies to
        each block's two branches; `conv_width` w > 0 adds a causal convolution of width w
        to each recurrence's input (`blocks`; not for cells with their own); `xlstm` (cell
        `mlstm`), the same with xLSTM's mLSTM blocks (`xlstm_block`: LayerNorm,
        up-projection, convolution, mLSTM, skip, gate, down-projection, no MLP; `num_heads`
        of the inner width 2H), and with cell (or mixer) `slstm` xLSTM's sLSTM blocks
        (`slstm.SLSTMBlock`); `gpt` (cell `attention`), nanoGPT's blocks (LayerNorm,
        attention, LayerNorm, MLP of width 4H, no biases), a last LayerNorm, and the head
        tied to the embedding without a bias (set `tie_embeddings`).
      impl: as `RNNLayer`; with any but `flax` the Dense head is `rnnlm_jax.nn.head`'s (the
        same parameters, float32 logits, its matmuls' operands in `dtype`); `flax`: flax's
        own layers throughout.
      remat: `none`; `block`: each residual block (a stack: each layer of a parallel-in-time
        or matrix-state cell) recomputed in the backward pass from its input; `chunk`: the
        blocks (or the stack) run over segments of `REMAT_STEPS` steps by a scan, the state
        carried from one to the next, and the backward pass recomputes one segment at a
        time: it holds the segments' inputs and one segment's activations.
      other attributes: as `RNNLayer`. No dropout ever touches the recurrent connections.

    The fields besides `vocab_size` are `spec.ModelSpec`'s (`RNNModel.from_spec` builds one
    from a spec); the recurrent stack's share (`spec.LAYER_FIELDS`) goes to `RNNLayer` as
    it is.
    """

    vocab_size: int
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
    impl: str = "auto"
    scan: str = "auto"
    num_heads: int = 1
    key_dim: int = 0
    value_dim: int = 0
    form: str = "auto"
    chunk_size: int = 0
    negative_eigenvalues: bool = False
    gate_soft_cap: float = GATE_SOFT_CAP
    num_householder: int = 1
    remat: str = "none"
    unroll: int = 1
    dtype: Any = jnp.float32
    embed_dim: int = 0
    embed_dropout: float = 0.0
    output_dropout: float = 0.0
    tie_embeddings: bool = False

    custom_vjp: bool | None = None  # deprecated: impl
    lstm_impl: str | None = None  # deprecated: impl

    logits_layout = "time_major"  # a class constant, not a field: see `rnnlm_jax.nn.contract`

    def __post_init__(self):
        translate_deprecated(self)
        super().__post_init__()

    def setup(self):
        E, H = self.embed_dim, self.num_hiddens
        if self.block not in BLOCKS:
            raise ValueError(f"unknown block {self.block!r}; expected one of {BLOCKS}")
        check_model_fields(self)
        if self.block != "stack":
            if E not in (0, H):
                raise ValueError(f"block={self.block!r} needs embed_dim 0 or num_hiddens ({E} "
                                 f"vs {H})")  # fmt: skip
            E = H
        if E < 0 or (E == 0 and (self.tie_embeddings or self.embed_dropout)):
            raise ValueError("tie_embeddings and embed_dropout need embed_dim > 0")
        if self.tie_embeddings and E != H:
            raise ValueError(f"tie_embeddings needs embed_dim == num_hiddens ({E} vs {H})")
        inits = initializers(self.initializer, self.init_scale, self.num_hiddens)
        if E:
            self.embed = nn.Embed(
                self.vocab_size,
                E,
                embedding_init=inits.get("kernel_init", nn.linear.default_embed_init),
            )
        self.embed_drop = nn.Dropout(self.embed_dropout)
        self.output_drop = nn.Dropout(self.output_dropout)
        layer = {name: getattr(self, name) for name in LAYER_FIELDS}
        if self.block != "stack":
            own = ("cell", "num_hiddens", "num_layers", "dropout", "dtype")
            inner = {k: v for k, v in layer.items() if k not in own}
            inner["remat"] = "none"  # the whole block is recomputed, not its layer again
            kernel = inits.get("kernel_init", nn.initializers.lecun_normal())
            remat = self.remat == "block"  # chunk: `_by_segments` recomputes them
            block_cls = nn.remat(ResidualBlock, static_argnums=(3,)) if remat else ResidualBlock
            learned = self.positions == "learned"
            out_init = None
            if self.block == "gpt" and self.initializer == "normal":  # nanoGPT's c_proj init
                out_init = nn.initializers.normal(self.init_scale / (2 * self.num_layers) ** 0.5)
            self.blocks = [
                block_cls(
                    mixer,
                    self.mlp_expansion,
                    self.dropout,
                    inner,
                    kernel,
                    self.dtype,
                    self.block,
                    self.conv_width,
                    self.attention_window,
                    "none" if learned else self.positions,
                    self.attention_window if learned and i == 0 else 0,
                    out_init,
                    name=f"block_{i}",
                )  # fmt: skip
                for i, mixer in enumerate(self.block_mixers())
            ]
            self.lower_bounds = None
            if self.block == "residual" and "hgrn2" in self.block_mixers():
                N, K, _ = head_widths(H, self.num_heads, self.key_dim, self.value_dim)
                self.lower_bounds = self.param("lower_bounds", nn.initializers.zeros_init(),
                                               (self.num_layers, N * K), jnp.float32)  # fmt: skip
            if self.block == "gpt":
                self.final_norm = nn.LayerNorm(epsilon=1e-5, use_bias=False)
            else:
                self.final_norm = nn.RMSNorm()
        else:
            if self.remat == "chunk":  # `_by_segments` recomputes the stack
                layer["remat"] = "none"
            self.rnn = RNNLayer(vocab_size=self.vocab_size, **layer)
        head = head_initializers(self.initializer, self.init_scale, self.num_hiddens)
        if self.tie_embeddings and self.block == "gpt":
            pass  # nanoGPT's lm_head: the embedding, no bias
        elif self.tie_embeddings:
            self.head_bias = self.param(
                "head_bias",
                head.get("bias_init", nn.initializers.zeros_init()),  # flax's: zeros
                (self.vocab_size,),
                jnp.float32,
            )
        elif self.impl != "flax":  # the same parameters, a faster backward pass (`head`)
            self.dense = Dense(self.vocab_size, dtype=self.dtype, **head)
        else:  # flax's: forward-mode autodiff works through it
            self.dense = nn.Dense(self.vocab_size, dtype=self.dtype, **head)

    def __call__(
        self, tokens: jax.Array, state: State, deterministic: bool = True
    ) -> tuple[jax.Array, State]:
        """Runs the model over a minibatch.

        Args:
          tokens: int `[B, T]` token ids, as the data iterators yield them.
          state: `[L, B, H]` (LSTM: a pair of them).
          deterministic: False applies the dropouts (needs the `dropout` rng).

        Returns:
          `(logits, state)`: float32 logits `[T * B, V]` in time-major order
          (row t * B + b is step t of sequence b, matching `Y.T.reshape(-1)`)
          and the final state.
        """
        x = tokens.T  # time-major; without an embedding the ids stand for their one-hots
        if self.embed_dim or self.block != "stack":
            x = self.embed_drop(self.embed(x), deterministic=deterministic)
        if self.remat == "chunk" and x.shape[0] > REMAT_STEPS:
            outputs, state = self._by_segments(x, state, deterministic)
        else:
            outputs, state = self._recurrent(x, state, deterministic)
        if self.block != "stack":
            outputs = self.final_norm(outputs)
        outputs = self.output_drop(outputs, deterministic=deterministic)
        outputs = outputs.reshape(-1, outputs.shape[-1])
        if self.tie_embeddings and self.block == "gpt":
            logits = self.embed.attend(outputs)
        elif self.tie_embeddings:
            logits = self.embed.attend(outputs) + self.head_bias
        else:
            logits = self.dense(outputs)
        return logits.astype(jnp.float32), state

    def _by_segments(self, x, state, deterministic):
        """`_recurrent` over segments of `REMAT_STEPS` steps, the state carried, by a scan
        whose step is rematerialised, so the backward pass recomputes one segment at a
        time (a Python loop of checkpointed calls lets XLA schedule every recomputation at
        once: measured, it saved nothing). Steps past the last whole segment run after it."""
        T = x.shape[0]
        n = T // REMAT_STEPS

        def step(model, carry, xs):
            outputs, carry = model._recurrent(xs, carry, deterministic)
            return carry, outputs

        scan = nn.scan(
            nn.remat(step, prevent_cse=False),  # inside a scan CSE cannot undo it
            variable_broadcast="params",
            split_rngs={"params": False, "dropout": True},
        )
        whole = x[: n * REMAT_STEPS].reshape((n, REMAT_STEPS) + x.shape[1:])
        state, outputs = scan(self, state, whole)
        outputs = outputs.reshape((n * REMAT_STEPS,) + outputs.shape[2:])
        if n * REMAT_STEPS < T:
            rest, state = self._recurrent(x[n * REMAT_STEPS :], state, deterministic)
            outputs = jnp.concatenate([outputs, rest])
        return outputs, state

    def _recurrent(self, x, state, deterministic):
        """The recurrent part over time-major `x`: the stack, or the residual blocks (the
        last norm not yet applied)."""
        if self.block == "stack":
            return self.rnn(x, state, deterministic)
        mixed = self.is_mixed()
        bounds = self._hgrn2_bounds()
        finals = []
        for i, block in enumerate(self.blocks):
            block_state_ = state[i] if mixed else state
            pick = 0 if mixed else i
            bound = bounds[i] if bounds is not None and i > 0 else None
            x, final = block(x, jax.tree.map(lambda s, j=pick: s[j], block_state_), deterministic,
                             bound)  # fmt: skip
            finals.append(final)
        if mixed:
            return x, tuple(jax.tree.map(lambda s: s[None], f) for f in finals)
        return x, jax.tree.map(lambda *s: jnp.stack(s), *finals)

    def _hgrn2_bounds(self):
        """HGRN2's forget-gate lower bounds of the blocks, `[L, N K]`, from the model's
        `lower_bounds` (`layer.hgrn2_lower_bounds`); None without an hgrn2 block."""
        if self.lower_bounds is None:
            return None
        return hgrn2_lower_bounds(self.lower_bounds)

    @nn.nowrap
    def block_mixers(self) -> tuple[str, ...]:
        """Each block's mixer (`blocks.block_mixers`)."""
        return block_mixers(self.cell, self.mixers, self.num_layers)

    @nn.nowrap
    def is_mixed(self) -> bool:
        """Whether the blocks are of several kinds (their states then a tuple, one each)."""
        return self.block != "stack" and len(set(self.block_mixers())) > 1

    @classmethod
    def from_spec(cls, spec: ModelSpec, vocab_size: int) -> RNNModel:
        """The model `spec` describes, for a vocab of `vocab_size` tokens."""
        return cls(vocab_size=vocab_size, **spec.model_kwargs())

    def begin_state(self, batch_size: int) -> State:
        """The zero state for `batch_size` sequences; see `RNNLayer.begin_state` (residual
        blocks: `blocks.block_state`)."""
        heads = {"num_heads": self.num_heads, "key_dim": self.key_dim,
                 "value_dim": self.value_dim, "num_householder": self.num_householder}  # fmt: skip
        if self.block != "stack":
            args = (batch_size, self.num_hiddens, self.block, self.conv_width,
                    self.attention_window)  # fmt: skip
            mixers = self.block_mixers()
            if self.is_mixed():
                return tuple(block_state(m, 1, *args, **heads) for m in mixers)
            return block_state(mixers[0], self.num_layers, *args, **heads)
        return zero_state(self.cell, self.num_layers, batch_size, self.num_hiddens, **heads)


def check_model_fields(model) -> None:
    """ValueError (one line) for fields of an `RNNModel` (or a config) that do not fit
    together: the blocks, their mixers, positions and convolution."""
    cell, block = model.cell, model.block
    if block not in BLOCKS:
        raise ValueError(f"unknown block {block!r}; expected one of {BLOCKS}")
    if model.positions not in POSITIONS:
        raise ValueError(f"positions={model.positions!r}; expected one of {POSITIONS}")
    if block == "stack" and model.mixers:
        raise ValueError(f"mixers={model.mixers!r} picks the mixer of each residual block: it "
                         "needs block 'residual' or 'xlstm', not 'stack'")  # fmt: skip
    if block == "stack" and cell == "attention":
        raise ValueError("cell 'attention' mixes tokens in residual blocks: it needs block "
                         "'residual' or 'gpt', not 'stack'")  # fmt: skip
    if block == "stack" and cell == "rwkv7":
        raise ValueError("cell 'rwkv7' shifts the residual stream's tokens: it needs block "
                         "'residual', not 'stack'")  # fmt: skip
    mixers = block_mixers(cell, model.mixers, model.num_layers)
    allowed = {"xlstm": ("mlstm", "slstm"), "gpt": ("attention",)}.get(block)
    for mixer in dict.fromkeys(mixers):
        if allowed and mixer not in allowed:
            what = "xLSTM's mLSTM and sLSTM blocks" if block == "xlstm" else "nanoGPT's blocks"
            raise ValueError(f"block={block!r} builds {what}: its mixers are {allowed}, not "
                             f"{mixer!r}")  # fmt: skip
        check_conv_width(model.conv_width, mixer, block)
    if model.positions == "learned" and block != "stack" and mixers[0] != "attention":
        raise ValueError("positions='learned' adds nanoGPT's position table to the first "
                         f"block, which must be attention, not {mixers[0]!r}")  # fmt: skip
    if model.attention_window < 1 and "attention" in mixers:
        raise ValueError(f"attention_window={model.attention_window}: attention needs a "
                         "window of at least 1 step")  # fmt: skip
