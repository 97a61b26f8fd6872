"""One fast recurrent layer per cell, in flax's parameter trees: `FastRNN`, `FastGRU`, `FastLSTM`.

Each layer is flax's cell run over a whole sequence (`nn.SimpleCell`, `nn.GRUCell`,
`nn.LSTMCell` / `nn.OptimizedLSTMCell`), with the same parameter names and shapes, so a
parameter tree moves between them and `nn.scan` over flax's cell unchanged. The work is laid
out differently:
  * the input projection `x W_x + b` of all T*B tokens happens before the time loop, as a
    row gather of the fused `[V, kH]` input kernel for token ids (a one-hot times a matrix
    is a row lookup) or one `[T*B, D] @ [D, kH]` matmul for float inputs;
  * the per-gate kernels are concatenated once per call into one `[H, kH]` recurrent
    kernel, so a step is one fused matmul;
  * the time loop and its hand-written backward pass are `recurrences.tanh_rnn / gru / lstm`.

Call as `(carry, inputs) -> (carry, hs)`: `inputs` are int ids `[T, B]` (needs
`vocab_size`) or floats `[T, B, D]`, time-major; `hs` is float32 `[T, B, H]`; the carry is
`h [B, H]` (LSTM: flax's pair `(c, h)`; with `return_cell_states` its outputs are `(cs, hs)`).
Forward-mode autodiff (`jax.jvp`, `jax.jacfwd`) cannot go through a hand-written backward pass:
it fails with a message pointing to flax's cells (`RNNLayer(impl="flax")`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnnlm_jax.nn import recurrences

Initializer = Any


class _Dense(nn.Module):
    """The parameters of one flax `Dense` (`kernel [in, features]`, optional `bias`), unapplied."""

    in_features: int
    features: int
    use_bias: bool
    kernel_init: Initializer
    bias_init: Initializer

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array | None]:
        # float32 parameters whatever JAX's default dtype (jax_enable_x64 makes it float64)
        shape = (self.in_features, self.features)
        kernel = self.param("kernel", self.kernel_init, shape, jnp.float32)
        bias = None
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
        return kernel, bias


FORWARD_MODE_HINT = (
    "rnnlm_jax's fast recurrent layers have a hand-written backward pass (jax.custom_vjp), "
    "which forward-mode autodiff (jax.jvp, jax.jacfwd, jax.hessian) cannot go through; "
    "build the layer or model with impl='flax' (flax's cells under nn.scan, the same "
    "parameters) for forward mode"
)


def _time_loop(fn, *args):
    """`fn(*args)`, with forward-mode autodiff's error explained in one line."""
    try:
        return fn(*args)
    except TypeError as e:
        if "forward-mode" not in str(e):
            raise
        raise TypeError(FORWARD_MODE_HINT) from None


def project_inputs(inputs: jax.Array, W_x: jax.Array, b: jax.Array, dtype: Any) -> jax.Array:
    """`x W_x + b` for every token: int ids `[T, B]` gather rows of `W_x`; floats
    `[T, B, D]` take one matmul. Returns float32 `[T, B, kH]`."""
    if jnp.issubdtype(inputs.dtype, jnp.integer):
        return jnp.take(W_x, inputs, axis=0) + b
    return recurrences.matmul(inputs, W_x, dtype) + b


class _FastLayer(nn.Module):
    """Shared fields and the input-side parameters of the three fast layers."""

    features: int
    vocab_size: int | None = None
    kernel_init: Initializer = nn.linear.default_kernel_init
    recurrent_kernel_init: Initializer = nn.initializers.orthogonal()
    bias_init: Initializer = nn.initializers.zeros_init()
    # The GRU's `in` and `hn` biases (None: bias_init); PyTorch draws them once each, where
    # flax's single r and z biases stand for PyTorch's two (`initializers`).
    candidate_bias_init: Initializer | None = None
    unroll: int = 1
    dtype: Any = jnp.float32

    def _in_features(self, inputs: jax.Array) -> int:
        if jnp.issubdtype(inputs.dtype, jnp.integer):
            if self.vocab_size is None:
                raise ValueError("token-id inputs need the layer's vocab_size")
            return self.vocab_size
        return inputs.shape[-1]

    def _dense(self, name: str, inputs: jax.Array | None, use_bias: bool):
        """flax's `Dense` parameters `name`: an input kernel if `inputs` is given, else a
        recurrent `[H, H]` kernel."""
        if inputs is None:
            n_in, init = self.features, self.recurrent_kernel_init
        else:
            n_in, init = self._in_features(inputs), self.kernel_init
        bias_init = self.bias_init
        if name in ("in", "hn") and self.candidate_bias_init is not None:
            bias_init = self.candidate_bias_init
        return _Dense(n_in, self.features, use_bias, init, bias_init, name=name)()

    def _gates(self, names, inputs: jax.Array | None, use_bias) -> tuple[jax.Array, list]:
        """The named gates' kernels concatenated along the output axis, and their biases
        (`use_bias`: True, False, or the names that have one)."""
        pairs = [
            self._dense(
                prefix, inputs, use_bias if isinstance(use_bias, bool) else prefix in use_bias
            )
            for prefix in names
        ]
        return jnp.concatenate([k for k, _ in pairs], axis=-1), [b for _, b in pairs]


class FastRNN(_FastLayer):
    """flax's `nn.SimpleCell` over a sequence (`i/kernel`, `i/bias`, `h/kernel`)."""

    @nn.compact
    def __call__(self, h0: jax.Array, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        W_x, (b,) = self._gates(("i",), inputs, True)
        W_h, _ = self._gates(("h",), None, False)
        xp = project_inputs(inputs, W_x, b, self.dtype)
        h0 = h0.astype(jnp.float32)
        return _time_loop(recurrences.tanh_rnn, xp, h0, W_h, self.dtype, self.unroll)


class FastGRU(_FastLayer):
    """flax's `nn.GRUCell` over a sequence (`ir, iz, in` with biases; `hr, hz`; `hn` with bias)."""

    @nn.compact
    def __call__(self, h0: jax.Array, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        W_x, b_x = self._gates(("ir", "iz", "in"), inputs, True)
        W_h, (_, _, b_hn) = self._gates(("hr", "hz", "hn"), None, ("hn",))
        xp = project_inputs(inputs, W_x, jnp.concatenate(b_x), self.dtype)
        h0 = h0.astype(jnp.float32)
        return _time_loop(recurrences.gru, xp, h0, W_h, b_hn, self.dtype, self.unroll)


class FastLSTM(_FastLayer):
    """flax's `nn.LSTMCell` over a sequence (`ii, if, ig, io`; `hi, hf, hg, ho` with biases).

    `return_cell_states`: the outputs are `(cs, hs)`, the carry at every step, not only `hs`.
    """

    return_cell_states: bool = False

    @nn.compact
    def __call__(self, carry, inputs: jax.Array):
        W_x, _ = self._gates(("ii", "if", "ig", "io"), inputs, False)
        W_h, b_h = self._gates(("hi", "hf", "hg", "ho"), None, True)
        xp = project_inputs(inputs, W_x, jnp.concatenate(b_h), self.dtype)
        carry = jax.tree.map(lambda s: s.astype(jnp.float32), tuple(carry))
        carry, (cs, hs) = _time_loop(recurrences.lstm, xp, carry, W_h, self.dtype, self.unroll)
        return carry, ((cs, hs) if self.return_cell_states else hs)


FAST_LAYERS = {"rnn": FastRNN, "gru": FastGRU, "lstm": FastLSTM}


IMPLS = ("auto", "fast", "flax", "cudnn")


def cuda_available() -> bool:
    """Whether JAX's default backend is a CUDA GPU."""
    platform = getattr(getattr(jax.devices()[0], "client", None), "platform_version", "")
    return jax.default_backend() == "gpu" and "cuda" in str(platform).lower()


def resolve_impl(impl: str, cell: Any = "lstm", dtype: Any = jnp.float32) -> str:
    """What runs a layer of `cell`: `fast` (the layers here), `flax` (flax's cells under
    `nn.scan` and `jax.grad`) or `cudnn` (the LSTM as cuDNN calls). `auto` is `cudnn` for
    the LSTM on a CUDA GPU with float32 matmuls, `fast` for the other named cells, and
    `flax` for a cell class of your own (the only way to run one); `cudnn` runs a cell
    other than the LSTM `fast`."""
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; expected one of {IMPLS}")
    if not isinstance(cell, str) or impl == "flax":
        return "flax"
    if cell != "lstm":
        return "fast"
    if impl == "auto":
        return "cudnn" if cuda_available() and jnp.dtype(dtype) == jnp.float32 else "fast"
    return impl


def pack_cudnn_lstm_weights(params) -> jax.Array:
    """flax's `LSTMCell` parameter tree (`ii..io`, `hi..ho`) -> cuDNN's flat weight vector
    for one unidirectional layer: `W_ih [4H, D]`, `W_hh [4H, H]`, `b_ih [4H]`, `b_hh [4H]`
    flattened in that order, gates `i, f, g, o` (PyTorch's layout; flax's single bias per
    gate becomes `b_ih`, and `b_hh` is zero). `jax.experimental.rnn.unpack_lstm_weights`
    inverts it."""
    W_ih = jnp.concatenate([params[f"i{k}"]["kernel"] for k in "ifgo"], axis=1).T
    W_hh = jnp.concatenate([params[f"h{k}"]["kernel"] for k in "ifgo"], axis=1).T
    b_ih = jnp.concatenate([params[f"h{k}"]["bias"] for k in "ifgo"])
    return jnp.concatenate([W_ih.ravel(), W_hh.ravel(), b_ih, jnp.zeros_like(b_ih)])


class CudnnLSTM(_FastLayer):
    """flax's `nn.LSTMCell` over a sequence as one cuDNN call (`jax.experimental.rnn.lstm`),
    same parameter tree as `FastLSTM`; CUDA GPUs only, float32."""

    @nn.compact
    def __call__(self, carry, inputs: jax.Array):
        from jax.experimental import rnn  # imported here: only a CUDA run needs it

        if jnp.issubdtype(inputs.dtype, jnp.integer):
            inputs = jax.nn.one_hot(inputs, self._in_features(inputs), dtype=jnp.float32)
        params = {}
        for k in "ifgo":
            params[f"i{k}"] = dict(zip(("kernel", "bias"), self._dense(f"i{k}", inputs, False)))
            params[f"h{k}"] = dict(zip(("kernel", "bias"), self._dense(f"h{k}", None, True)))
        c0, h0 = (s.astype(jnp.float32) for s in carry)
        x = jnp.swapaxes(inputs, 0, 1).astype(jnp.float32)  # cuDNN is batch-major
        B, T, D = x.shape
        y, h_n, c_n = rnn.lstm(
            x,
            h0[None],
            c0[None],
            pack_cudnn_lstm_weights(params),
            jnp.full((B,), T, jnp.int32),
            input_size=D,
            hidden_size=self.features,
            num_layers=1,
            dropout=0.0,
            bidirectional=False,
        )
        return (c_n[0], h_n[0]), jnp.swapaxes(y, 0, 1)
