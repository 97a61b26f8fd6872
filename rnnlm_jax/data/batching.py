"""Text to ids, ids to minibatches: the book's corpus loading and its two partitionings.

Data flows one way: file -> lines -> tokens -> `Vocab` (`rnnlm_jax.data.vocab`) -> corpus ids ->
`(batch_size, num_steps)` int32 minibatches, exactly as d2l 0.17 does it
(`read_time_machine`, `tokenize`, `Vocab`, `load_corpus_time_machine`,
`seq_data_iter_sequential` and `seq_data_iter_random`). The run loop takes an epoch's
minibatches a chunk at a time from `EpochBatches`, which makes the same ones from an array
or a memory-mapped token file (`rnnlm_jax.data.tokenfiles`) without holding the epoch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from rnnlm_jax.data.sources import DataError
from rnnlm_jax.data.vocab import Vocab, clean_lines, tokenize

PARTITIONS = ("sequential", "random")


# ----------------------------------------------------------------------------
# Text -> corpus ids.


def load_corpus(
    text: str, token: str = "char", max_tokens: int = -1, min_freq: int = 0, cleaning="book"
):
    """Returns `(corpus, vocab)`: the int32 ids of all lines joined with no separator.

    As in the book the vocab is built from the whole text and the corpus is
    then truncated to the first `max_tokens` tokens (all of it if `<= 0`).
    """
    tokens = tokenize(clean_lines(text, cleaning), token)
    vocab = Vocab(tokens, min_freq=min_freq, token=token, cleaning=cleaning)
    flat = [t for line in tokens for t in line]
    if max_tokens > 0:
        flat = flat[:max_tokens]
    corpus = np.asarray([vocab[t] for t in flat], dtype=np.int32)
    return corpus, vocab


# ----------------------------------------------------------------------------
# Corpus -> minibatches.


def seq_data_iter_sequential(
    corpus: np.ndarray, batch_size: int, num_steps: int, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The book's sequential partitioning: yields `(X, Y)`, each int32 `[batch_size, num_steps]`.

    A random offset in `[0, num_steps]` starts the epoch; row i of batch k+1
    continues row i of batch k, so the hidden state can be carried over.
    """
    offset = int(rng.integers(0, num_steps + 1))
    yield from _sequential_from(corpus, batch_size, num_steps, offset)


def _sequential_from(corpus, batch_size, num_steps, offset):
    num_tokens = ((len(corpus) - offset - 1) // batch_size) * batch_size
    Xs = np.asarray(corpus[offset : offset + num_tokens], np.int32).reshape(batch_size, -1)
    Ys = np.asarray(corpus[offset + 1 : offset + 1 + num_tokens], np.int32).reshape(batch_size, -1)
    num_batches = Xs.shape[1] // num_steps
    for i in range(0, num_steps * num_batches, num_steps):
        yield Xs[:, i : i + num_steps], Ys[:, i : i + num_steps]


def eval_batches(
    corpus: np.ndarray, batch_size: int, num_steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sequential minibatches from offset 0, stacked `[N, batch_size, num_steps]`: the same
    every time, for held-out perplexity (the state is carried from batch to batch)."""
    if num_batches_per_epoch(len(corpus), batch_size, num_steps, "sequential", False) < 1:
        raise DataError(
            f"a held-out corpus of {len(corpus)} tokens is too short for batch_size "
            f"{batch_size} x num_steps {num_steps}"
        )
    batches = held_out_batches(corpus, batch_size, num_steps)
    return batches.take(0, len(batches))


def held_out_batches(corpus, batch_size: int, num_steps: int) -> EpochBatches:
    """A held-out corpus's sequential minibatches from offset 0 (the same every time), made
    when asked for, as `eval_batches` stacks them."""
    return EpochBatches(corpus, batch_size, num_steps, "sequential", 0, 0, random_offset=False)


def seq_data_iter_random(
    corpus: np.ndarray, batch_size: int, num_steps: int, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The book's random partitioning: yields `(X, Y)`, each int32 `[batch_size, num_steps]`.

    Drops a random prefix of `[0, num_steps - 1]` tokens, cuts the rest into
    non-overlapping `num_steps` subsequences and batches them in shuffled
    order; neighbouring batches are not continuous.
    """
    corpus = np.asarray(corpus[int(rng.integers(0, num_steps)) :], np.int32)
    num_subseqs = (len(corpus) - 1) // num_steps
    starts = np.arange(0, num_subseqs * num_steps, num_steps)
    rng.shuffle(starts)
    num_batches = num_subseqs // batch_size
    for i in range(0, batch_size * num_batches, batch_size):
        batch = starts[i : i + batch_size]
        X = np.stack([corpus[j : j + num_steps] for j in batch])
        Y = np.stack([corpus[j + 1 : j + 1 + num_steps] for j in batch])
        yield X, Y


def num_batches_per_epoch(
    corpus_len: int, batch_size: int, num_steps: int, partition: str, random_offset: bool = True
) -> int:
    """The smallest number of minibatches an epoch yields over all random draws."""
    if partition == "sequential":
        offset = num_steps if random_offset else 0
        return ((corpus_len - offset - 1) // batch_size) // num_steps
    if partition == "random":
        return ((corpus_len - (num_steps - 1) - 1) // num_steps) // batch_size
    raise ValueError(f"unknown partition {partition!r}; expected one of {PARTITIONS}")


class EpochBatches:
    """One epoch's minibatches of `corpus` (an array or a memory-mapped token file), made
    when asked for: `take(start, stop)` is minibatches `start:stop` as int32 `X, Y`
    `[stop - start, batch_size, num_steps]`, read from the corpus then, so an epoch is never
    in memory whole. They are exactly the book's (`seq_data_iter_sequential` /
    `seq_data_iter_random` with the generator of `(seed, epoch)`): the sequential
    partitioning's `batch_size` strided streams, each row continuing the row before (the
    hidden state carried), or the random partitioning's shuffled subsequences.

    Every epoch has the same number of minibatches, `num_batches` (the minimum over random
    offsets), so the shapes, and with them the compiled program, never change.
    `random_offset=False` starts the sequential streams at token 0 every epoch.
    """

    def __init__(
        self,
        corpus,
        batch_size: int,
        num_steps: int,
        partition: str,
        seed: int,
        epoch: int,
        random_offset: bool = True,
    ):
        self.corpus, self.batch_size, self.num_steps = corpus, batch_size, num_steps
        self.partition = partition
        self.num_batches = num_batches_per_epoch(
            len(corpus), batch_size, num_steps, partition, random_offset
        )
        if self.num_batches < 1:
            raise DataError(
                f"a corpus of {len(corpus)} tokens is too short for batch_size {batch_size} x "
                f"num_steps {num_steps}"
            )
        rng = np.random.default_rng((seed, epoch))
        if partition == "sequential":
            offset = int(rng.integers(0, num_steps + 1)) if random_offset else 0
            row_len = (len(corpus) - offset - 1) // batch_size
            self.row_starts = offset + row_len * np.arange(batch_size, dtype=np.int64)
        else:
            drop = int(rng.integers(0, num_steps))
            num_subseqs = (len(corpus) - drop - 1) // num_steps
            starts = np.arange(0, num_subseqs * num_steps, num_steps)
            rng.shuffle(starts)
            self.starts = starts[: self.num_batches * batch_size] + drop

    def __len__(self) -> int:
        return self.num_batches

    def starts_of(self, start: int, stop: int, rows: slice = slice(None)) -> np.ndarray:
        """The corpus index of each minibatch row's first token, `[stop - start, rows]`."""
        if self.partition == "sequential":
            steps = self.num_steps * np.arange(start, stop, dtype=np.int64)
            return steps[:, None] + self.row_starts[None, rows]
        B = self.batch_size
        return self.starts[start * B : stop * B].reshape(stop - start, B)[:, rows]

    def take(self, start: int, stop: int, rows: slice = slice(None)):
        """Minibatches `start:stop` (only the rows `rows`: a process's share)."""
        if not 0 <= start <= stop <= self.num_batches:
            raise IndexError(f"minibatches {start}:{stop} of {self.num_batches}")
        index = self.starts_of(start, stop, rows)[..., None] + np.arange(self.num_steps + 1)
        window = np.asarray(self.corpus[index] if index.size else np.zeros(index.shape, np.int32))
        window = window.astype(np.int32, copy=False)
        return window[..., :-1], window[..., 1:]


def epoch_batches(
    corpus: np.ndarray,
    batch_size: int,
    num_steps: int,
    partition: str,
    seed: int,
    epoch: int,
    random_offset: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """All minibatches of one epoch, stacked: `X, Y` int32 `[num_batches, batch_size, num_steps]`
    (`EpochBatches(...).take(0, num_batches)`; the run loop takes them a chunk at a time).

    The draw depends only on `(seed, epoch)`, so any epoch can be replayed
    (e.g. after a restart) without carrying generator state. Every epoch has
    the same number of batches (the minimum over offsets), so the stacked
    shape, and with it the compiled program, never changes. `random_offset=False`
    starts sequential partitioning at token 0 every epoch (Zaremba et al.'s reader).
    """
    if partition not in PARTITIONS:
        raise ValueError(f"unknown partition {partition!r}; expected one of {PARTITIONS}")
    batches = EpochBatches(corpus, batch_size, num_steps, partition, seed, epoch, random_offset)
    return batches.take(0, len(batches))
