"""Text generation, compiled as one call: the book's greedy `predict_ch8`, and sampling with
temperature and top-k, several samples at once.

Unknown tokens in the prefix map to `<unk>` (id 0), as the book's `vocab[...]` does; an
empty prefix is an error (there is nothing to start the state from). Prefixes are split
and outputs joined by the vocab's own token type (`Vocab.token`): characters, or words
separated by spaces.
"""

from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from rnnlm_jax.data.vocab import Vocab
from rnnlm_jax.nn.contract import begin_state, check_logits, check_model, logits_by_step
from rnnlm_jax.nn.models import RNNModel


@functools.partial(jax.jit, static_argnames=("model", "num_preds", "num_samples", "top_k"))
def sample_ids(
    model: RNNModel,
    params,
    prefix_ids: jax.Array,
    num_preds: int,
    key: jax.Array | None = None,
    temperature: float = 0.0,
    num_samples: int = 1,
    top_k: int = 0,
) -> jax.Array:
    """Continues `prefix_ids`, `num_samples` times at once (one batched, compiled call).

    The state is warmed up on the whole prefix in one scan; then a second scan feeds each
    chosen token back in as the next input.

    Args:
      model: the `RNNModel`, or any module of the model contract (`nn.contract`; static: it
        defines the program; its stated `logits_layout` is followed).
      params: its parameters (the `params` collection).
      prefix_ids: int `[n]`, n >= 1.
      num_preds: number of tokens to generate.
      key: PRNG key for sampling (unused when greedy).
      temperature: 0 picks the argmax (the book's greedy procedure); > 0 samples from
        softmax(logits / temperature).
      num_samples: S, the number of continuations.
      top_k: if > 0, sample only among the k most likely tokens.

    Returns:
      int32 `[S, num_preds]`: the generated token ids.
    """
    variables = {"params": params}
    layout = check_model(model)
    key = jax.random.key(0) if key is None else key
    n = prefix_ids.shape[0]
    tokens = jnp.broadcast_to(prefix_ids, (num_samples, n))
    logits, state = model.apply(variables, tokens, begin_state(model, num_samples))
    check_logits(logits, layout, num_samples, n)

    def choose(logits, key):  # logits [S, V] -> token ids [S]
        if top_k > 0:
            kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
            logits = jnp.where(logits < kth, -jnp.inf, logits)
        sampled = jax.random.categorical(key, logits / jnp.maximum(temperature, 1e-6))
        return jnp.where(temperature > 0, sampled, jnp.argmax(logits, -1)).astype(jnp.int32)

    def step(carry, key):
        token, state = carry
        logits, state = model.apply(variables, token[:, None], state)
        return (choose(logits_by_step(logits, layout, num_samples, 1)[0], key), state), token

    keys = jax.random.split(key, num_preds + 1)
    last = logits_by_step(logits, layout, num_samples, n)[-1]  # the prefix's last step
    first = choose(last, keys[0])
    _, generated = jax.lax.scan(step, (first, state), keys[1:])
    return generated.T


def greedy_ids(model: RNNModel, params, prefix_ids: jax.Array, num_preds: int) -> jax.Array:
    """The book's greedy continuation: int32 `[num_preds]`."""
    return sample_ids(model, params, prefix_ids, num_preds)[0]


def _check_token(vocab: Vocab, token: str | None) -> None:
    if token is not None and token != vocab.token:
        raise ValueError(f"token={token!r}, but the vocab's tokens are {vocab.token!r}s")


def _old_order(fn: str, model, params, vocab, prefix, num_preds):
    """The arguments in this release's order, `(model, params, vocab, prefix, num_preds)`,
    from a call in the previous release's `(params, prefix, num_preds, vocab, model)`
    (recognised by a `Vocab` in the prefix's place; it warns)."""
    if isinstance(prefix, Vocab):
        warnings.warn(
            f"{fn}(params, prefix, num_preds, vocab, model) is deprecated: call "
            f"{fn}(model, params, vocab, prefix, num_preds), the order of score()",
            DeprecationWarning,
            stacklevel=3,
        )
        return num_preds, model, prefix, params, vocab
    return model, params, vocab, prefix, num_preds


def predict(
    model: RNNModel, params, vocab: Vocab, prefix: str, num_preds: int, token: str | None = None
) -> str:
    """The book's `predict_ch8`: `prefix` followed by `num_preds` greedy tokens.

    The arguments come in `score`'s order: the model, its parameters, the vocab, the text.
    `token` may be left out: the vocab knows its token type (given, it must agree).

    Raises:
      ValueError: if `prefix` is empty, `num_preds` is negative or `token` is not the
        vocab's.
    """
    model, params, vocab, prefix, num_preds = _old_order(
        "predict", model, params, vocab, prefix, num_preds
    )
    return sample(model, params, vocab, prefix, num_preds, temperature=0.0, token=token)[0]


# Tokens one call generates at most (num_preds x num_samples), and continuations at once.
MAX_PREDS = 10_000_000
MAX_SAMPLES = 100_000


def sample(
    model: RNNModel,
    params,
    vocab: Vocab,
    prefix: str,
    num_preds: int,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    num_samples: int = 1,
    token: str | None = None,
) -> list[str]:
    """`num_samples` continuations of `prefix` (temperature 0: greedy, all the same); the
    arguments in `score`'s order.

    Raises:
      ValueError: for an empty prefix, a `num_preds` outside [0, MAX_PREDS], a `temperature`
        that is not a finite number >= 0, a negative `top_k`, `num_samples` outside
        [1, MAX_SAMPLES] or a `seed` outside [0, 2**32).
    """
    model, params, vocab, prefix, num_preds = _old_order(
        "sample", model, params, vocab, prefix, num_preds
    )
    if not 0 <= num_preds <= MAX_PREDS:
        raise ValueError(f"num_preds must be in [0, {MAX_PREDS:,}], got {num_preds}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    if not 1 <= num_samples <= MAX_SAMPLES:
        raise ValueError(f"num_samples must be in [1, {MAX_SAMPLES:,}], got {num_samples}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    if num_preds * num_samples > MAX_PREDS:
        raise ValueError(
            f"num_preds x num_samples = {num_preds * num_samples:,} tokens; at most "
            f"{MAX_PREDS:,} are generated in one call"
        )
    _check_token(vocab, token)
    if not vocab.split(prefix):
        raise ValueError("the prefix must not be empty")
    prefix_ids = jnp.asarray(vocab[vocab.split(prefix)], jnp.int32)
    ids = sample_ids(
        model,
        params,
        prefix_ids,
        num_preds,
        jax.random.key(seed),
        float(temperature),
        num_samples,
        min(top_k, len(vocab)),
    )
    return [vocab.join([prefix, *vocab.to_tokens(row)]) for row in np.asarray(ids)]
