"""Greedy text generation (the book's `predict_ch8`), compiled as one call.

Unknown characters in the prefix map to `<unk>` (id 0), as the book's
`vocab[...]` does; an empty prefix is an error (there is nothing to start
the state from).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rnnlm_jax.data import Vocab
from rnnlm_jax.models import RNNModel


@functools.partial(jax.jit, static_argnames=("model", "num_preds"))
def greedy_ids(model: RNNModel, params, prefix_ids: jax.Array, num_preds: int) -> jax.Array:
    """Continues `prefix_ids` greedily.

    The state is warmed up on the whole prefix in one scan; then a second
    scan feeds each argmax back in as the next input.

    Args:
      model: the `RNNModel` (static: it defines the program).
      params: its parameters (the `params` collection).
      prefix_ids: int `[n]`, n >= 1.
      num_preds: number of tokens to generate.

    Returns:
      int32 `[num_preds]`: the generated token ids.
    """
    variables = {"params": params}
    logits, state = model.apply(variables, prefix_ids[None, :], model.begin_state(1))
    first = jnp.argmax(logits[-1]).astype(jnp.int32)

    def step(carry, _):
        token, state = carry
        logits, state = model.apply(variables, token.reshape(1, 1), state)
        return (jnp.argmax(logits[-1]).astype(jnp.int32), state), token

    _, tokens = jax.lax.scan(step, (first, state), None, length=num_preds)
    return tokens


def predict(params, prefix: str, num_preds: int, vocab: Vocab, model: RNNModel) -> str:
    """The book's `predict_ch8`: returns `prefix` followed by `num_preds` greedy characters.

    Raises:
      ValueError: if `prefix` is empty or `num_preds` is negative.
    """
    if not prefix:
        raise ValueError("the prefix must not be empty")
    if num_preds < 0:
        raise ValueError(f"num_preds must be >= 0, got {num_preds}")
    prefix_ids = jnp.asarray(vocab[list(prefix)], jnp.int32)
    ids = np.asarray(greedy_ids(model, params, prefix_ids, num_preds))
    return prefix + "".join(vocab.to_tokens(ids))
