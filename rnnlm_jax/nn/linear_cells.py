"""Recurrences whose gates read only the input, so training runs in parallel over time:
minGRU, minLSTM (Feng et al. 2024), RG-LRU (De et al. 2024, Griffin) and LRU (Orvieto et
al. 2023).

Each layer projects all T*B inputs at once (a row gather for token ids, one matmul for
floats), turns the projections into the coefficients of `h_t = a_t * h_{t-1} + b_t`, and
runs that recurrence with `linear_scan` (associative or sequential). Call as
`(carry, inputs) -> (carry, outputs, carries)`: `inputs` int ids `[T, B]` (needs
`vocab_size`) or floats `[T, B, D]`, time-major; `outputs` float32 `[T, B, H]`; `carries`
the carry after every step. The carry is `h [B, H]`; the LRU's complex state is the real
pair `(Re h, Im h)`.

  minGRU:  z = sigmoid(W_z x + b_z), h~ = W_h x + b_h, h = (1 - z) h_prev + z h~
  minLSTM: f, i = sigmoid(W_f x + b_f), sigmoid(W_i x + b_i), h~ = W_h x + b_h,
           h = f / (f + i) h_prev + i / (f + i) h~
           (the plain form: the scan composes (a, b) pairs and never divides by a product
           of gates, so the paper's log-space form, needed where its scan does, is not)
  RG-LRU:  x' = W x + b (to width H), r = sigmoid(W_a x' + b_a), i = sigmoid(W_x x' + b_x)
           (block-diagonal, `num_heads` blocks), log a = -8 r softplus(Lambda),
           h = a h_prev + sqrt(1 - a^2) (i x'), recurrentgemma's `RGLRU` (`RGLRU` here)
  LRU:     lambda = exp(-exp(nu) + i exp(theta)), gamma = exp(gamma_log) (a parameter,
           initialised to sqrt(1 - |lambda|^2)),
           h = lambda h_prev + gamma (B x) in complex numbers, y = Re(C h) + D x
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rnnlm_jax.nn.fast_layers import project_inputs
from rnnlm_jax.nn.linear_scan import linear_scan
from rnnlm_jax.nn.recurrences import matmul

Initializer = Any
_lecun = nn.initializers.lecun_normal()
_zeros = nn.initializers.zeros_init()


def _width(x: jax.Array, vocab_size: int | None) -> int:
    if jnp.issubdtype(x.dtype, jnp.integer):
        if vocab_size is None:
            raise ValueError("token-id inputs need the layer's vocab_size")
        return vocab_size
    return x.shape[-1]


class _Linear(nn.Module):
    """The shared shape of these layers: an input projection to `k * features`, then a scan."""

    features: int
    vocab_size: int | None = None
    kernel_init: Initializer = _lecun
    bias_init: Initializer = _zeros
    scan: str = "auto"
    unroll: int = 1
    dtype: Any = jnp.float32
    negative_eigenvalues: bool = False  # minGRU, minLSTM: the decay a in (0, 1) as 2a - 1

    def project(self, x: jax.Array, k: int, name: str = "") -> jax.Array:
        """`x W + b`, float32 `[T, B, k * features]` (parameters `kernel`, `bias`)."""
        shape = (_width(x, self.vocab_size), k * self.features)
        W = self.param(name + "kernel", self.kernel_init, shape, jnp.float32)
        b = self.param(name + "bias", self.bias_init, shape[-1:], jnp.float32)
        return project_inputs(x, W, b, self.dtype)

    def run(self, a, b, h0):
        if self.negative_eigenvalues:  # Grazzi et al.: eigenvalues in (-1, 1)
            a = 2.0 * a - 1.0
        return linear_scan(a, b, h0, self.scan, self.unroll)


class MinGRU(_Linear):
    """minGRU; parameters `kernel [D, 2H]`, `bias [2H]` (z, then h~)."""

    @nn.compact
    def __call__(self, h0, x):
        H = self.features
        xp = self.project(x, 2)
        z = jax.nn.sigmoid(xp[..., :H])
        hs = self.run(1.0 - z, z * xp[..., H:], h0)
        return hs[-1], hs, hs


class MinLSTM(_Linear):
    """minLSTM; parameters `kernel [D, 3H]`, `bias [3H]` (f, i, then h~)."""

    @nn.compact
    def __call__(self, h0, x):
        H = self.features
        xp = self.project(x, 3)
        f = jax.nn.sigmoid(xp[..., :H])
        i = jax.nn.sigmoid(xp[..., H : 2 * H])
        s = f + i
        hs = self.run(f / s, (i / s) * xp[..., 2 * H :], h0)
        return hs[-1], hs, hs


# The cells whose `negative_eigenvalues` widens their decay (the RG-LRU and LRU do not take
# it: the LRU's complex eigenvalues already reach -1).
NEGATIVE_EIGENVALUE_CELLS = ("mingru", "minlstm")


# --- RG-LRU ------------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def sqrt_bounded_grad(x: jax.Array, max_gradient: float) -> jax.Array:
    """`sqrt(x)`, its derivative capped at `max_gradient` (that of `sqrt(max(x, 1 / (4
    max_gradient^2)))`), as recurrentgemma bounds it."""
    return jnp.sqrt(x)


def _sqrt_fwd(x, max_gradient):
    return jnp.sqrt(x), x


def _sqrt_bwd(max_gradient, x, g):
    return (g * 0.5 * jax.lax.rsqrt(jnp.maximum(x, 1.0 / (4.0 * max_gradient**2))),)


sqrt_bounded_grad.defvjp(_sqrt_fwd, _sqrt_bwd)


def ring_init(min_rad: float = 0.9, max_rad: float = 0.999, eps: float = 1e-8):
    """recurrentgemma's `rnn_real_param_init`: `Lambda` such that `a = exp(-softplus(Lambda))`
    (the RG-LRU's `a` at gate 1/8) lies uniformly (by area) on the ring [min_rad, max_rad]."""

    def init(key, shape, dtype=jnp.float32):
        u = jax.random.uniform(key, shape)
        log_a = 0.5 * jnp.log(u * (max_rad**2 - min_rad**2) + min_rad**2 + eps)
        return jnp.log(jnp.exp(-log_a) - 1.0).astype(dtype)  # softplus^-1(-log a)

    return init


class BlockDiagonal(nn.Module):
    """`x W + b` with `W` block-diagonal: `w [n, H/n, H/n]`, `b [n, H/n]` (recurrentgemma's
    `BlockDiagonalLinear`, its initialisation too)."""

    width: int
    num_blocks: int

    @nn.compact
    def __call__(self, x):
        n = self.num_blocks
        if self.width % n:
            raise ValueError(f"num_heads={n} must divide the width {self.width}")
        w_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
        w = self.param("w", w_init, (n, self.width // n, self.width // n), jnp.float32)
        b = self.param("b", _zeros, (n, self.width // n), jnp.float32)
        xb = x.reshape(x.shape[:-1] + (n, self.width // n))
        y = jnp.einsum("...hi,hij->...hj", xb, w) + b
        return y.reshape(x.shape)


class RGLRU(nn.Module):
    """The RG-LRU of width H on inputs of width H: `(h0 [B, H], x [T, B, H]) -> hs [T, B, H]`.

    recurrentgemma's `RGLRU` (real, `only_real=True`) with every step a continuation (its
    `segment_pos > 0`: no document reset inside a sequence; the state carried between
    minibatches is the document's). Parameters `a_param [H]`, `input_gate`, `a_gate`.
    """

    width: int
    num_heads: int = 1
    min_rad: float = 0.9
    max_rad: float = 0.999
    scan: str = "auto"
    unroll: int = 1

    @nn.compact
    def __call__(self, h0, x):
        a_param = self.param("a_param", ring_init(self.min_rad, self.max_rad), (self.width,))
        gate_x = jax.nn.sigmoid(BlockDiagonal(self.width, self.num_heads, name="input_gate")(x))
        gate_a = jax.nn.sigmoid(BlockDiagonal(self.width, self.num_heads, name="a_gate")(x))
        log_a = -8.0 * gate_a * jax.nn.softplus(a_param)
        a = jnp.exp(log_a)
        multiplier = sqrt_bounded_grad(1.0 - jnp.exp(2.0 * log_a), 1000.0)
        return linear_scan(a, x * gate_x * multiplier, h0, self.scan, self.unroll)


class RGLRULayer(_Linear):
    """An input projection to width H (`kernel`, `bias`), then the RG-LRU (`rg_lru`)."""

    num_heads: int = 1

    @nn.compact
    def __call__(self, h0, x):
        xp = self.project(x, 1)
        hs = RGLRU(self.features, self.num_heads, scan=self.scan, unroll=self.unroll,
                   name="rg_lru")(h0, xp)  # fmt: skip
        return hs[-1], hs, hs


# --- LRU ---------------------------------------------------------------------------------


class LRU(_Linear):
    """The LRU with a complex diagonal state of size N = H.

    Parameters: `nu_log`, `theta_log` `[N]` (lambda's modulus and phase, initialised
    uniformly on the ring `r_min <= |lambda| <= r_max` with phases in [0, max_phase], the
    paper's), `gamma_log` `[N]` (the input normalisation, trained, initialised to
    `log sqrt(1 - |lambda|^2)` as in the paper's reference), `B_re`, `B_im` `[D, N]`
    (N(0, 1/(2D))), `C_re`, `C_im` `[N, H]` (N(0, 1/N)), and `D`: the paper's diagonal `[H]`
    (N(0, 1)) where the inputs have width H, else a
    matrix `[D, H]` (LeCun normal; a row lookup for token ids).
    """

    r_min: float = 0.9
    r_max: float = 0.999
    max_phase: float = float(np.pi / 10)

    @nn.compact
    def __call__(self, carry, x):
        N = H = self.features
        D = _width(x, self.vocab_size)
        r_min, r_max, max_phase = self.r_min, self.r_max, self.max_phase

        def nu_init(key, shape, dtype=jnp.float32):
            u = jax.random.uniform(key, shape, dtype)
            return jnp.log(-0.5 * jnp.log(u * (r_max**2 - r_min**2) + r_min**2))

        def theta_init(key, shape, dtype=jnp.float32):
            return jnp.log(max_phase * jax.random.uniform(key, shape, dtype))

        nu_log = self.param("nu_log", nu_init, (N,))
        theta_log = self.param("theta_log", theta_init, (N,))
        b_init = nn.initializers.normal(stddev=(2 * D) ** -0.5)
        c_init = nn.initializers.normal(stddev=N**-0.5)
        B_re = self.param("B_re", b_init, (D, N))
        B_im = self.param("B_im", b_init, (D, N))
        C_re = self.param("C_re", c_init, (N, H))
        C_im = self.param("C_im", c_init, (N, H))
        zero = jnp.zeros((), jnp.float32)
        modulus = jnp.exp(-jnp.exp(nu_log))
        lam = modulus * jnp.exp(1j * jnp.exp(theta_log))  # exp(-exp(nu) + i exp(theta))
        # The paper's reference trains gamma as a parameter of its own, initialised from
        # lambda at initialisation: sqrt(1 - |lambda|^2).
        gamma_log = self.param(
            "gamma_log", lambda key, shape: 0.5 * jnp.log(1.0 - modulus**2), (N,)
        )
        gamma = jnp.exp(gamma_log)
        bx = (project_inputs(x, B_re, zero, self.dtype)
              + 1j * project_inputs(x, B_im, zero, self.dtype)) * gamma  # fmt: skip
        h0 = carry[0] + 1j * carry[1]
        hs = self.run(jnp.broadcast_to(lam, bx.shape), bx, h0)
        re, im = hs.real, hs.imag
        y = matmul(re, C_re, self.dtype) - matmul(im, C_im, self.dtype)
        if D == H and not jnp.issubdtype(x.dtype, jnp.integer):
            y = y + x * self.param("D", nn.initializers.normal(stddev=1.0), (H,))
        else:
            y = y + project_inputs(x, self.param("D", _lecun, (D, H)), zero, self.dtype)
        return (re[-1], im[-1]), y, (re, im)


LINEAR_CELLS = {"mingru": MinGRU, "minlstm": MinLSTM, "rglru": RGLRULayer, "lru": LRU}
