"""The book's data facts on the real text, partitioning, and finding / downloading the file."""

import hashlib
import http.server
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from rnnlm_jax import data
from rnnlm_jax.data import sources

BOOK_CHARS = list(" etainoshrdlmucfwgypbvkxzjq")


def test_char_vocab_is_the_books(text):
    corpus, vocab = data.load_corpus(text, "char")
    assert len(vocab) == 28
    assert vocab.idx_to_token == ["<unk>"] + BOOK_CHARS
    assert len(corpus) == 170580
    assert corpus.dtype == np.int32
    assert (
        "".join(vocab.to_tokens(corpus[:40].tolist())) == "the time machine by h g wellsithe time t"
    )


def test_word_vocab_and_unknowns(text):
    corpus, vocab = data.load_corpus(text, "word")
    assert len(vocab) == 4580
    assert vocab.idx_to_token[:6] == ["<unk>", "the", "i", "and", "of", "a"]
    assert vocab["the"] == 1 and vocab["no-such-word"] == 0
    assert vocab.to_tokens([1, 2]) == ["the", "i"]


def test_vocab_min_freq_reserved_and_stable_ties():
    vocab = data.Vocab([list("abcab"), list("dc")], min_freq=2, reserved_tokens=["<bos>"])
    # a, b and c appear twice (in that first-occurrence order); d once, so it is dropped.
    assert vocab.idx_to_token == ["<unk>", "<bos>", "a", "b", "c"]
    assert vocab["d"] == 0 and vocab[["a", "c"]] == [2, 4] and len(vocab) == 5


def test_max_tokens_truncates_after_the_vocab(text):
    corpus, vocab = data.load_corpus(text, "char", max_tokens=10000)
    assert len(corpus) == 10000 and len(vocab) == 28


@pytest.mark.parametrize("epoch", range(40))
def test_sequential_batches_every_offset(corpus_vocab, epoch):
    corpus, _ = corpus_vocab
    X, Y = data.epoch_batches(corpus, 32, 35, "sequential", seed=0, epoch=epoch)
    assert X.shape == Y.shape == (8, 32, 35) and X.dtype == np.int32
    # Y is X shifted by one, continuing across batch boundaries.
    rows_x = np.concatenate(list(X), axis=1)
    rows_y = np.concatenate(list(Y), axis=1)
    np.testing.assert_array_equal(rows_x[:, 1:], rows_y[:, :-1])
    # Each row is a contiguous stretch of the corpus: batch k+1 continues batch k.
    for row in np.concatenate([rows_x, rows_y[:, -1:]], axis=1):
        start = _find(corpus, row[:50])
        np.testing.assert_array_equal(corpus[start : start + len(row)], row)


def test_sequential_offsets_cover_zero_to_num_steps(corpus_vocab):
    corpus, _ = corpus_vocab
    offsets = set()
    for epoch in range(400):
        rng = np.random.default_rng((0, epoch))
        X, _ = next(data.seq_data_iter_sequential(corpus, 32, 35, rng))
        offsets.add(_find(corpus, X[0, :50]))
    assert offsets == set(range(36))


def test_random_batches_are_distinct_and_non_overlapping(corpus_vocab):
    corpus, _ = corpus_vocab
    X, Y = data.epoch_batches(corpus, 32, 35, "random", seed=0, epoch=3)
    assert X.shape == Y.shape == (8, 32, 35)
    np.testing.assert_array_equal(X[:, :, 1:], Y[:, :, :-1])
    starts = sorted(_find(corpus, x) for x in X.reshape(-1, 35))
    assert len(set(starts)) == 8 * 32
    assert all(b - a >= 35 for a, b in zip(starts, starts[1:]))
    # Another epoch draws another order.
    X2, _ = data.epoch_batches(corpus, 32, 35, "random", seed=0, epoch=4)
    assert not np.array_equal(X, X2)


def test_epoch_batches_replay_from_seed_and_epoch(corpus_vocab):
    corpus, _ = corpus_vocab
    a = data.epoch_batches(corpus, 32, 35, "random", seed=7, epoch=2)
    b = data.epoch_batches(corpus, 32, 35, "random", seed=7, epoch=2)
    np.testing.assert_array_equal(a[0], b[0])


def test_too_short_corpus_is_an_error():
    with pytest.raises(data.DataError, match="too short"):
        data.epoch_batches(np.arange(100, dtype=np.int32), 32, 35, "sequential", 0, 0)


def _find(corpus: np.ndarray, seq: np.ndarray) -> int:
    """The unique start of `seq` in `corpus` (fails if absent or ambiguous)."""
    windows = np.lib.stride_tricks.sliding_window_view(corpus, len(seq))
    hits = np.flatnonzero((windows == seq).all(axis=1))
    assert len(hits) == 1, hits
    return int(hits[0])


# ----------------------------------------------------------------------------
# Finding and downloading the file.


def test_explicit_file_wins(text_path, tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "empty"))
    assert data.find_time_machine(data_file=str(text_path), url="http://127.0.0.1:9/x") == text_path


def test_explicit_file_with_wrong_sha1_is_refused(tmp_path):
    bad = tmp_path / "timemachine.txt"
    bad.write_text("not the book")
    with pytest.raises(data.DataError, match="SHA-1"):
        data.find_time_machine(data_file=str(bad))


def test_the_book_ships_in_the_package_and_is_found_offline(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "empty"))
    path = data.find_time_machine(url="http://127.0.0.1:9/timemachine.txt")
    assert path == sources.packaged_time_machine() and path.stat().st_size == 178979
    assert data.sha1_of(path) == data.TIME_MACHINE_SHA1
    assert not (tmp_path / "empty").exists()  # nothing was made, nothing downloaded


def test_a_verified_copy_in_the_data_folder_wins_over_the_package(text_path, tmp_path, monkeypatch):
    (tmp_path / "timemachine.txt").write_bytes(text_path.read_bytes())
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    assert data.find_time_machine(url="http://127.0.0.1:9/x") == tmp_path / "timemachine.txt"
    (tmp_path / "timemachine.txt").write_text("another text")  # a wrong copy is not used
    assert data.find_time_machine(url="http://127.0.0.1:9/x") == sources.packaged_time_machine()


@pytest.fixture
def no_packaged_copy(tmp_path, monkeypatch):
    """A stripped install: the package's copy of the book is missing."""
    monkeypatch.setattr(sources, "packaged_time_machine", lambda: tmp_path / "absent.txt")


def test_offline_without_any_copy_says_how_to_provide_it(tmp_path, monkeypatch, no_packaged_copy):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "cache"))
    with pytest.raises(data.DataError, match="RNNLM_JAX_DATA_DIR") as e:
        data.find_time_machine(url="http://127.0.0.1:9/timemachine.txt", timeout=5)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "cache").exists()  # the failed download left no folder


@pytest.fixture
def served(tmp_path):
    """A loopback HTTP server for files in a folder; yields (folder, base url)."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_is_verified_and_cached(text_path, served, tmp_path, no_packaged_copy):
    root, url = served
    (root / "timemachine.txt").write_bytes(text_path.read_bytes())
    cache = tmp_path / "cache"
    path = data.find_time_machine(data_dir=str(cache), url=f"{url}/timemachine.txt")
    assert path == cache / "timemachine.txt"
    assert hashlib.sha1(path.read_bytes()).hexdigest() == data.TIME_MACHINE_SHA1
    assert sorted(p.name for p in cache.iterdir()) == ["timemachine.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    # A second call uses the cached copy (the server is not asked: the url is dead).
    assert data.find_time_machine(data_dir=str(cache), url="http://127.0.0.1:9/x") == path


def test_corrupt_download_leaves_nothing(served, tmp_path, no_packaged_copy):
    root, url = served
    (root / "timemachine.txt").write_text("truncated")
    cache = tmp_path / "cache"
    with pytest.raises(data.DataError, match="SHA-1"):
        data.find_time_machine(data_dir=str(cache), url=f"{url}/timemachine.txt")
    assert not Path(cache).exists()


def test_bad_cached_file_is_replaced_by_a_good_download(
    text_path, served, tmp_path, no_packaged_copy
):
    root, url = served
    (root / "timemachine.txt").write_bytes(text_path.read_bytes())
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "timemachine.txt").write_text("half a file")
    path = data.find_time_machine(data_dir=str(cache), url=f"{url}/timemachine.txt")
    assert path.read_bytes() == text_path.read_bytes()
