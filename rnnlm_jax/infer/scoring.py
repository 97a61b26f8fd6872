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
      num_unknown: how many scored tokens are not in the vocab (scored as `<unk>`).
    """

    tokens: list[str]
    log_probs: np.ndarray
    token: str
    num_unknown: int = 0

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
        """Mean bits per scored character or byte (char and byte models; None for word
        and subword models)."""
        return self.loss / math.log(2) if self.token in ("char", "byte") else None


@functools.partial(jax.jit, static_argnames=("model", "chunk"))
def token_log_probs(model, params, ids: jax.Array, chunk: int = CHUNK) -> jax.Array:
    """`log p(ids[i + 1] | ids[: i + 1])` for every i, as float32 `[n - 1]`: one compiled
    call, the model run over `chunk` steps at a time with its state carried through.

    `model` follows the model contract (`rnnlm_jax.nn.contract`); `ids` is int `[n]`, n >= 2.
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


WINDOW_BATCH = 256  # windows per model call in `window_log_probs` (bounds the logits' memory)


@functools.partial(jax.jit, static_argnames=("model", "window"))
def window_log_probs(model, params, ids: jax.Array, window: int) -> jax.Array:
    """nanoGPT's evaluation protocol: `ids` cut into the non-overlapping windows
    `ids[i : i + window]` (i = 0, window, 2 window, ...; a last window without its `window`
    targets is left out), each run from `begin_state`, target j of a window scored given
    the window's tokens 0..j only (1 to `window` of context). Returns float32
    `[num_windows, window]`: `log p(ids[i + j + 1] | ids[i : i + j + 1])`.
    """
    layout = check_model(model)
    n = (ids.shape[0] - 1) // window
    X = ids[: n * window].reshape(n, window)
    Y = ids[1 : n * window + 1].reshape(n, window)
    batches = -(-n // WINDOW_BATCH)
    pad = batches * WINDOW_BATCH - n
    X = jnp.pad(X, ((0, pad), (0, 0))).reshape(batches, WINDOW_BATCH, window)
    Y = jnp.pad(Y, ((0, pad), (0, 0))).reshape(batches, WINDOW_BATCH, window)

    def one(xy):
        x, y = xy
        logits, _ = model.apply({"params": params}, x, begin_state(model, WINDOW_BATCH))
        check_logits(logits, layout, WINDOW_BATCH, window)
        logits = jnp.swapaxes(logits_by_step(logits, layout, WINDOW_BATCH, window), 0, 1)
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))  # [W, T, V]
        return jnp.take_along_axis(log_probs, y[..., None], axis=-1)[..., 0]

    return jax.lax.map(one, (X, Y)).reshape(-1, window)[:n]


def window_loss(model, params, ids, window: int) -> tuple[float, int]:
    """The mean loss (nats per token) over every target of every non-overlapping window of
    `window` tokens of `ids`, each window from a fresh state (`window_log_probs`), and the
    number of targets. With `window=64` on a character corpus it is nanoGPT's
    `estimate_loss` taken over the whole text rather than over random windows."""
    ids = np.asarray(ids, np.int32)
    if len(ids) < window + 1:
        raise ValueError(f"{len(ids)} tokens hold no window of {window} tokens and its targets")
    log_probs = np.asarray(window_log_probs(model, params, jnp.asarray(ids), window))
    return -float(np.mean(log_probs, dtype=np.float64)), int(log_probs.size)


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
    ids = np.asarray(vocab[tokens], np.int32)
    # Tokens the vocab lacks (a literal `<unk>`, as PTB's text has, is a token of its own).
    unknown = sum(i == vocab.unk and t != "<unk>" for i, t in zip(ids[1:], tokens[1:]))
    if unknown == len(tokens) - 1:
        raise ValueError(
            f"none of the text's {len(tokens) - 1} scored {vocab.token} tokens is in the "
            "model's vocab: its perplexity would only measure <unk>"
        )
    ids = jnp.asarray(ids)
    chunk = min(CHUNK, len(tokens) - 1)
    log_probs = token_log_probs(model, params, ids, chunk)
    return Score(tokens, np.asarray(log_probs, np.float64), vocab.token, unknown)


def score_file(model, params, vocab: Vocab, path: str | Path) -> Score:
    """`score` of a text file's contents (read as UTF-8)."""
    return score(model, params, vocab, Path(path).read_text(encoding="utf-8"))
