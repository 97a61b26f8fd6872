"""The model contract: what any flax module needs to train, sample and score here.

Any flax module trains, samples and scores here (`rnnlm_jax.train`'s `create_train_state`,
`train_step`, `evaluate`; `rnnlm_jax.infer`'s generation and scoring) if it has
  * `begin_state(batch_size)`: the state a batch of sequences starts from (any pytree),
    called on the unbound module (no parameters): write it the natural way, e.g.
    `return RNNLayer(cell="lstm", num_hiddens=self.H).begin_state(batch_size)` (the callers
    use `train.begin_state`, which runs it outside flax's module context, so it needs
    no `@nn.nowrap`; it must not use parameters or submodules made in `setup`);
  * `__call__(tokens, state, deterministic=True) -> (logits, state)`, `tokens` int `[B, T]`,
    with `deterministic=False` in training (dropout draws from the `dropout` rng);
  * `logits_layout`, a class attribute stating the logits' layout, never guessed from shapes:
    `"batch_major"`: `[B, T, V]`; `"time_major"`: `[T * B, V]`, row `t * B + b` for step t
    of sequence b (`RNNModel`, the book's).
`create_train_state` checks all three on its first call (one abstract forward pass) and
raises a one-line `ValueError` naming what is missing; the loss checks the logits' shape
against the stated layout when it is traced.
"""

from __future__ import annotations

import inspect

import jax.numpy as jnp

LOGITS_LAYOUTS = ("batch_major", "time_major")


def _contract_error(model, problem: str) -> ValueError:
    return ValueError(
        f"{type(model).__name__} does not follow rnnlm_jax's model contract: {problem} "
        "(see rnnlm_jax.nn.contract)"
    )


def check_model(model) -> str:
    """The model's stated `logits_layout`; a one-line `ValueError` if it states none or its
    `begin_state` or `deterministic` argument is missing."""
    layout = getattr(model, "logits_layout", None)
    if layout not in LOGITS_LAYOUTS:
        raise _contract_error(
            model,
            f"logits_layout is {layout!r}; give the class logits_layout = 'batch_major' "
            "(logits [B, T, V]) or 'time_major' (logits [T * B, V], row t * B + b)",
        )
    if not callable(getattr(model, "begin_state", None)):
        raise _contract_error(model, "it has no begin_state(batch_size) method")
    params = inspect.signature(type(model).__call__).parameters
    if "deterministic" not in params and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        raise _contract_error(
            model, "its __call__(tokens, state, deterministic=True) takes no deterministic"
        )
    return layout


def begin_state(model, batch_size: int):
    """`model.begin_state(batch_size)`, run outside flax's module context: flax wraps a
    module's methods, and a submodule made inside a wrapped method of an unbound module
    (such as `RNNLayer(...).begin_state(B)`) fails in flax with a bare `AssertionError`."""
    method = getattr(type(model), "begin_state", None)
    raw = getattr(method, "__wrapped__", None)  # the function flax's wrapper calls
    if raw is None or getattr(model, "scope", None) is not None:
        return model.begin_state(batch_size)
    return raw(model, batch_size)


def logits_by_step(logits, layout: str, batch_size: int, num_steps: int):
    """Logits in either stated layout as `[T, B, V]` (step t of sequence b at `[t, b]`)."""
    if layout == "batch_major":
        return jnp.swapaxes(logits, 0, 1)
    return logits.reshape(num_steps, batch_size, -1)


def check_logits(logits, layout: str, batch_size: int, num_steps: int) -> None:
    """A one-line `ValueError` if `logits` are not shaped as `layout` says for `[B, T]`
    tokens: `[B, T, V]` (batch_major) or `[T * B, V]` (time_major)."""
    lead = (batch_size, num_steps) if layout == "batch_major" else (num_steps * batch_size,)
    shape = tuple(getattr(logits, "shape", ()))
    if len(shape) != len(lead) + 1 or shape[:-1] != lead:
        want = "[B, T, V]" if layout == "batch_major" else "[T * B, V]"
        raise ValueError(
            f"the model states logits_layout={layout!r}, so for tokens [B, T] = "
            f"[{batch_size}, {num_steps}] its logits must be {want}, but they are {list(shape)}"
        )
