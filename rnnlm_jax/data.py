"""The Time Machine data: find or download the text, make the corpus and its minibatches.

Data flows one way: file -> lines -> tokens -> `Vocab` (`rnnlm_jax.vocab`) -> corpus ids ->
`(batch_size, num_steps)` int32 minibatches, exactly as d2l 0.17 does it
(`read_time_machine`, `tokenize`, `Vocab`, `load_corpus_time_machine`,
`seq_data_iter_sequential` and `seq_data_iter_random`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rnnlm_jax import files
from rnnlm_jax.vocab import TOKEN_TYPES, Vocab, clean_lines, tokenize  # noqa: F401

TIME_MACHINE_URL = "http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt"
TIME_MACHINE_SHA1 = "090b5e7e70c295757f55df93cb0a180b9691891a"
TIME_MACHINE_FILE = "timemachine.txt"
DATA_DIR_ENV = "RNNLM_JAX_DATA_DIR"
PARTITIONS = ("sequential", "random")


class DataError(Exception):
    """The data cannot be found, downloaded, verified or batched; the message says why."""


# ----------------------------------------------------------------------------
# Finding the file.


def default_data_dir() -> Path:
    """`$RNNLM_JAX_DATA_DIR` if set, else `~/.cache/rnnlm_jax`."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rnnlm_jax"


def sha1_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


class _Interrupted(Exception):
    pass


class DownloadStopped(DataError):
    """A signal stopped a download (its temporary file was removed)."""


@contextlib.contextmanager
def _signals_interrupt():
    """SIGTERM (and SIGINT) raise inside the block, so its `finally` clauses run (a
    download's temporary file is removed) instead of the process dying mid-write."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise _Interrupted(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def download(url: str, dest: Path, sha1: str, timeout: float, max_seconds: float = 600.0) -> None:
    """Downloads `url` to `dest` atomically: a temporary file, verified, then renamed.

    `timeout` bounds each network wait, `max_seconds` the whole download. A signal, an error
    or a wrong SHA-1 leaves no file behind (`DataError`); the file gets the user's umask.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + max_seconds
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with _signals_interrupt():
            os.fchmod(fd, 0o666 & ~files.umask())
            with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as resp:
                digest = hashlib.sha1()
                while chunk := resp.read(1 << 16):
                    digest.update(chunk)
                    f.write(chunk)
                    if time.monotonic() > deadline:
                        raise DataError(f"downloading {url} took over {max_seconds:.0f} s")
        if digest.hexdigest() != sha1:
            raise DataError(
                f"downloaded {url} has SHA-1 {digest.hexdigest()}, expected {sha1}; "
                "nothing was saved"
            )
        os.replace(tmp, dest)
    except _Interrupted as e:
        raise DownloadStopped(f"downloading {url} was stopped by {e}; nothing was saved") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def find_time_machine(
    data_file: str = "",
    data_dir: str = "",
    url: str = TIME_MACHINE_URL,
    sha1: str = TIME_MACHINE_SHA1,
    timeout: float = 30.0,
) -> Path:
    """Returns the path of a verified copy of `timemachine.txt`.

    Order: an explicit `data_file` wins (it must exist and match the SHA-1);
    else `<data_dir>/timemachine.txt`, where `data_dir` defaults to
    `$RNNLM_JAX_DATA_DIR` or `~/.cache/rnnlm_jax`; a file there with the right
    SHA-1 is used as is, otherwise the text is downloaded from `url` into
    that directory (atomically, so a failed download never leaves a file
    that passes for the data).

    Raises:
      DataError: with a one-line message saying how to provide the file.
    """
    if data_file:
        path = Path(data_file).expanduser()
        if not path.is_file():
            raise DataError(f"data_file {path} does not exist")
        if sha1_of(path) != sha1:
            raise DataError(f"data_file {path} does not have the SHA-1 {sha1} of The Time Machine")
        return path
    directory = Path(data_dir).expanduser() if data_dir else default_data_dir()
    path = directory / TIME_MACHINE_FILE
    if path.is_file() and sha1_of(path) == sha1:
        return path
    try:
        download(url, path, sha1, timeout)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise DataError(
            f"cannot download {url} ({reason}); copy timemachine.txt (SHA-1 {sha1}) into "
            f"{directory}, or set ${DATA_DIR_ENV} to a folder holding it, "
            f"or pass --config.data_file=PATH"
        ) from None
    return path


# ----------------------------------------------------------------------------
# Text -> corpus ids.


def load_corpus(text: str, token: str = "char", max_tokens: int = -1, min_freq: int = 0):
    """Returns `(corpus, vocab)`: the int32 ids of all lines joined with no separator.

    As in the book the vocab is built from the whole text and the corpus is
    then truncated to the first `max_tokens` tokens (all of it if `<= 0`).
    """
    tokens = tokenize(clean_lines(text), token)
    vocab = Vocab(tokens, min_freq=min_freq, token=token)
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
    pairs = list(_sequential_from(corpus, batch_size, num_steps, 0))
    if not pairs:
        raise DataError(
            f"a held-out corpus of {len(corpus)} tokens is too short for batch_size "
            f"{batch_size} x num_steps {num_steps}"
        )
    return np.stack([x for x, _ in pairs]), np.stack([y for _, y in pairs])


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


def epoch_batches(
    corpus: np.ndarray,
    batch_size: int,
    num_steps: int,
    partition: str,
    seed: int,
    epoch: int,
    random_offset: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """All minibatches of one epoch, stacked: `X, Y` int32 `[num_batches, batch_size, num_steps]`.

    The draw depends only on `(seed, epoch)`, so any epoch can be replayed
    (e.g. after a restart) without carrying generator state. Every epoch has
    the same number of batches (the minimum over offsets), so the stacked
    shape, and with it the compiled program, never changes. `random_offset=False`
    starts sequential partitioning at token 0 every epoch (Zaremba et al.'s reader).
    """
    rng = np.random.default_rng((seed, epoch))
    if partition == "sequential" and not random_offset:
        it = lambda c, b, t, _: _sequential_from(c, b, t, 0)  # noqa: E731
    else:
        it = seq_data_iter_sequential if partition == "sequential" else seq_data_iter_random
    n = num_batches_per_epoch(len(corpus), batch_size, num_steps, partition, random_offset)
    if n < 1:
        raise DataError(
            f"a corpus of {len(corpus)} tokens is too short for batch_size {batch_size} x "
            f"num_steps {num_steps}"
        )
    pairs = list(it(corpus, batch_size, num_steps, rng))[:n]
    return np.stack([x for x, _ in pairs]), np.stack([y for _, y in pairs])
