"""Scoring text under a trained model: per-token log-probabilities, perplexity and bits per
character, in one compiled call.

The text is cleaned and split by the vocab exactly as the training text was
(`Vocab.tokens_of`), all lines joined as in the training corpus. The first token is context
only: token i (i >= 1) is scored given tokens 0..i-1, the state starting from zeros, as
`train.evaluate` scores a held-out corpus.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rnnlm_jax.data.vocab import Vocab
from rnnlm_jax.nn.contract import begin_state, check_logits, check_model, logits_by_step

CHUNK = 512  # steps per model call inside the compiled loop (bounds the logits' memory)


@dataclasses.dataclass(frozen=True)
class Score:
    """The result of `score`.

    Attributes:
      tokens: the text's tokens after cleaning; `tokens[0]` is context only.
      log_probs: float64 `[len(tokens) - 1]`, natural-log probability of `tokens[i + 1]`
        given `tokens[: i + 1]`.
      token: the vocab's token type (`char` or `word`).
    """

    tokens: list[str]
    log_probs: np.ndarray
    token: str

    @property
    def num_scored(self) -> int:
        return len(self.log_probs)

    @property
    def loss(self) -> float:
        """Mean negative log-likelihood per scored token (nats)."""
        return -float(np.mean(self.log_probs))

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    @property
    def bits_per_char(self) -> float | None:
        """Mean bits per scored character (char models only; None for word models)."""
        return self.loss / math.log(2) if self.token == "char" else None


@functools.partial(jax.jit, static_argnames=("model", "chunk"))
def token_log_probs(model, params, ids: jax.Array, chunk: int = CHUNK) -> jax.Array:
    """`log p(ids[i + 1] | ids[: i + 1])` for every i, as float32 `[n - 1]`: one compiled
    call, the model run over `chunk` steps at a time with its state carried through.

    `model` follows `training`'s model contract; `ids` is int `[n]`, n >= 2.
    """
    layout = check_model(model)
    n = ids.shape[0]
    num_chunks = -(-(n - 1) // chunk)
    padded = jnp.zeros(num_chunks * chunk + 1, jnp.int32).at[:n].set(ids)
    X = padded[:-1].reshape(num_chunks, 1, chunk)
    Y = padded[1:].reshape(num_chunks, 1, chunk)

    def body(state, xy):
        x, y = xy
        logits, state = model.apply({"params": params}, x, state)
        check_logits(logits, layout, 1, chunk)
        logits = logits_by_step(logits, layout, 1, chunk)[:, 0]
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
        return state, jnp.take_along_axis(log_probs, y.reshape(chunk, 1), axis=1)[:, 0]

    _, per_chunk = jax.lax.scan(body, begin_state(model, 1), (X, Y))
    return per_chunk.reshape(-1)[: n - 1]  # padded steps come after the text: not counted


def score(model, params, vocab: Vocab, text: str) -> Score:
    """Scores `text` under `(model, params)` trained with `vocab`.

    Raises:
      ValueError: if the text has fewer than two tokens after cleaning.
    """
    tokens = vocab.tokens_of(text)
    if len(tokens) < 2:
        raise ValueError(
            f"the text has {len(tokens)} {vocab.token} token(s) after cleaning; scoring "
            "needs at least 2 (the first is context only)"
        )
    ids = jnp.asarray(vocab[tokens], jnp.int32)
    chunk = min(CHUNK, len(tokens) - 1)
    log_probs = token_log_probs(model, params, ids, chunk)
    return Score(tokens, np.asarray(log_probs, np.float64), vocab.token)


def score_file(model, params, vocab: Vocab, path: str | Path) -> Score:
    """`score` of a text file's contents (read as UTF-8)."""
    return score(model, params, vocab, Path(path).read_text(encoding="utf-8"))
