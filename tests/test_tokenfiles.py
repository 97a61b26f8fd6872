"""Token files and tokenizers: every tokenizer's ids equal the in-memory pipeline's, the
cache is reused when it matches and rebuilt (said on one line) when it does not, two
builds at once do not corrupt each other, and bad text is one `DataError`."""

import array
import errno
import fcntl
import json
import logging
import multiprocessing
import os
import time

import numpy as np
import pytest

from rnnlm_jax.data import batching, textstream, tokenfiles, tokenizers
from rnnlm_jax.data.sources import DataError
from rnnlm_jax.data.tokenfiles import Part, Settings
from rnnlm_jax.data.vocab import Vocab

TEXT = (
    "\ufeff"
    + (
        "First Citizen:\r\nBefore we proceed any further, hear me speak.\r\n\r\n"
        "All:\nSpeak, speak.  Caf\u00e9 na\u00efve \u20ac5 \U0001f600!\n\tTabs\tand  spaces \n"
    )
    * 150
    + "the end, no line end"
)


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of a few hundred bytes, so every test crosses many block boundaries."""
    monkeypatch.setattr(textstream, "BLOCK_BYTES", 257)
    monkeypatch.setattr(tokenfiles, "WORD_BLOCK", 193)


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(TEXT.encode("utf-8"))
    return path


def build(path, folder, name="c", **settings):
    return tokenfiles.open_or_build([Part("all", path)], Settings(**settings), name, [folder])


@pytest.mark.parametrize("token", ["char", "word"])
@pytest.mark.parametrize("cleaning", ["none", "book"])
def test_char_and_word_ids_equal_the_in_memory_vocab(small_blocks, text_file, tmp_path, token,
                                                     cleaning):  # fmt: skip
    tf = build(text_file, tmp_path / "cache", token=token, cleaning=cleaning, min_freq=2,
               fractions=(0.1, 0.05))  # fmt: skip
    tokens = Vocab(token=token, cleaning=cleaning, eos=True).tokens_of(TEXT)
    n = len(tokens)
    end = n - int(n * 0.1) - int(n * 0.05)
    vocab = Vocab(tokens[:end], 2, token=token, cleaning=cleaning, eos=True)
    assert tf.tokenizer.idx_to_token == vocab.idx_to_token  # the book's order, ties too
    ids = np.asarray(vocab[tokens])
    assert np.array_equal(tf.split("train"), ids[:end])
    assert np.array_equal(tf.split("valid"), ids[end : n - int(n * 0.05)])
    assert np.array_equal(tf.split("test"), ids[n - int(n * 0.05) :])
    assert tf.ids.dtype == (np.uint8 if len(vocab) <= 256 else np.uint16)


def test_bytes_are_the_files_bytes_in_ranges(small_blocks, text_file, tmp_path):
    raw = text_file.read_bytes()
    parts = [Part("train", text_file, 0, 3000), Part("valid", text_file, 3000, 4001),
             Part("test", text_file, 4001, None)]  # fmt: skip
    tf = tokenfiles.open_or_build(parts, Settings(token="byte"), "b", [tmp_path / "c"])
    assert tf.ids.dtype == np.uint8 and len(tf.tokenizer) == 256
    for name, (a, b) in (("train", (0, 3000)), ("valid", (3000, 4001)), ("test", (4001, None))):
        assert np.array_equal(tf.split(name), np.frombuffer(raw[a:b], np.uint8))


def test_every_tokenizer_encodes_decodes_saves_and_loads(text_file, tmp_path):
    text = "Speak, speak.\nCaf\u00e9 \u20ac5\n"
    vocab = Vocab(Vocab(token="char", eos=True).tokens_of(TEXT), token="char", eos=True)
    spm = tokenizers.SentencePieceTokenizer.train(TEXT.splitlines(), 60, "bpe")
    for tok in (vocab, tokenizers.ByteTokenizer(), spm):
        ids = tok.encode(text)
        assert tok.decode(ids) == text, tok.token
        assert ids.max() < tok.vocab_size == len(tok)
        tok.save(tmp_path / f"{tok.token}.json")
        again = tokenizers.load(tmp_path / f"{tok.token}.json")
        assert type(again) is type(tok) and np.array_equal(again.encode(text), ids)
    assert tokenizers.ByteTokenizer().decode([0xC3]) == "\ufffd"  # half a character


def test_sentencepiece_is_learned_from_the_training_split_and_counts_words(small_blocks,
                                                                          tmp_path):  # fmt: skip
    files = {}
    for split, n in (("train", 200), ("valid", 20), ("test", 20)):
        files[split] = tmp_path / f"wiki.{split}.raw"
        files[split].write_text(TEXT[: 40 * n] + "\n")
    parts = [Part(s, p) for s, p in files.items()]
    settings = Settings(token="sentencepiece", vocab_size=40, model_type="unigram")
    tf = tokenfiles.open_or_build(parts, settings, "w", [tmp_path / "c"])
    assert len(tf.tokenizer) == 40
    for split, path in files.items():
        text = path.read_text()
        assert tf.words[split] == len(text.split()) + text.count("\n")
        decoded = tf.tokenizer.decode(tf.split(split))
        assert decoded.split() == text.removeprefix("\ufeff").split()  # no BOM, same words


def test_the_cache_is_read_and_rebuilt_when_it_does_not_match(text_file, tmp_path, caplog):
    cache = tmp_path / "c"
    caplog.set_level(logging.INFO, logger="rnnlm_jax")
    first = build(text_file, cache, token="char")
    manifest = json.loads((cache / "c.json").read_text())
    assert manifest["format_version"] == tokenfiles.FORMAT_VERSION
    assert manifest["sources"][0]["sha1"] and manifest["splits"] == {"train": [0, len(first.ids)]}
    stamp = (cache / "c.ids").stat().st_mtime_ns
    caplog.clear()
    assert np.array_equal(build(text_file, cache, token="char").ids, first.ids)
    assert (cache / "c.ids").stat().st_mtime_ns == stamp and not caplog.records  # read, not built

    def rebuilt(why, **settings):
        caplog.clear()
        tf = build(text_file, cache, **({"token": "char"} | settings))
        lines = [r.getMessage() for r in caplog.records if "rebuilding" in r.getMessage()]
        assert len(lines) == 1 and why in lines[0], lines
        return tf

    rebuilt("another tokenizer", token="char", min_freq=3)
    rebuilt("another tokenizer")  # back: the settings are in the manifest
    with open(cache / "c.ids", "r+b") as f:  # damaged
        f.seek(10)
        f.write(b"\xff")
    rebuilt("damaged")
    with open(cache / "c.ids", "r+b") as f:  # truncated
        f.truncate(100)
    rebuilt("truncated")
    manifest = json.loads((cache / "c.json").read_text())
    (cache / "c.json").write_text(json.dumps({**manifest, "format_version": 0}))
    rebuilt("format 0")
    text_file.write_text(TEXT + "more")
    tf = rebuilt("changed source")
    assert len(tf.ids) == len(first.ids) + 4
    assert sorted(p.name for p in cache.iterdir()) == ["c.ids", "c.json"]  # no lock, no temp


def _build_in_process(path, folder, queue):
    tf = tokenfiles.open_or_build([Part("all", path)], Settings(token="word"), "c", [folder])
    queue.put(np.asarray(tf.ids).tobytes())


def _holds_open(pid: int, path) -> bool:
    """Whether process `pid` has `path` open (Linux's /proc)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    return any(os.path.realpath(f"/proc/{pid}/fd/{fd}") == str(path) for fd in fds)


def test_two_runs_building_at_once_do_not_corrupt_each_other(tmp_path):
    """Both runs are made to meet at the lock: the test holds it until both have opened
    it, then lets them go."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs Linux's /proc to see both runs waiting at the lock")
    path = tmp_path / "big.txt"
    path.write_text(TEXT * 40)
    folder = tmp_path / "c"
    folder.mkdir()
    lock = folder / ".c.lock"
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_build_in_process, args=(path, folder, queue), daemon=True)
             for _ in range(2)]  # fmt: skip
    try:
        with open(lock, "a+b") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            for p in procs:
                p.start()
            deadline = time.monotonic() + 120
            while not all(_holds_open(p.pid, lock) for p in procs):
                assert time.monotonic() < deadline, "the runs never reached the lock"
                assert all(p.is_alive() for p in procs)
                time.sleep(0.05)
            time.sleep(0.5)  # time enough to tokenize this text, were either not waiting
            assert all(p.is_alive() for p in procs)
            assert sorted(os.listdir(folder)) == [".c.lock"]  # neither has built: both wait
            fcntl.flock(held, fcntl.LOCK_UN)
        results = [queue.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
    assert results[0] == results[1]
    tf = build(path, tmp_path / "c", token="word")  # whole and valid
    assert np.asarray(tf.ids).tobytes() == results[0]


FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_IMMUTABLE_FL = 0x80086601, 0x40086602, 0x10


def _immutable(folder, on: bool) -> None:
    """Sets or clears the folder's immutable attribute (chattr +i): unlike its mode bits,
    root cannot write into it either."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags, True)
        flags[0] = flags[0] | FS_IMMUTABLE_FL if on else flags[0] & ~FS_IMMUTABLE_FL
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, flags)
    finally:
        os.close(fd)


def test_a_read_only_data_folder_puts_the_token_file_in_the_next(tmp_path):
    """Read-only by its mode bits for a user; immutable for root (as CI runs), which the
    mode bits do not stop."""
    data = tmp_path / "data"
    data.mkdir()
    text_file = data / "corpus.txt"
    text_file.write_bytes(TEXT.encode("utf-8"))
    if os.geteuid() == 0:
        try:
            _immutable(data, True)
        except OSError as e:
            pytest.skip(f"root, and this file system cannot make a folder immutable ({e})")
    else:
        os.chmod(data, 0o555)
    try:
        tf = tokenfiles.open_or_build([Part("all", text_file)], Settings(), "c",
                                      [data, tmp_path / "w" / "tokens"])  # fmt: skip
    finally:
        if os.geteuid() == 0:
            _immutable(data, False)
        else:
            os.chmod(data, 0o755)
    assert tf.path.parent == tmp_path / "w" / "tokens"
    assert sorted(p.name for p in data.iterdir()) == ["corpus.txt"]


def test_an_unwritable_first_folder_falls_through(text_file, tmp_path):
    blocker = tmp_path / "file_not_folder"
    blocker.write_text("x")
    tf = tokenfiles.open_or_build([Part("all", text_file)], Settings(), "c",
                                  [blocker / "sub", tmp_path / "second"])  # fmt: skip
    assert tf.path.parent == tmp_path / "second"


def test_a_full_disk_is_one_error_and_leaves_nothing(text_file, tmp_path, monkeypatch):
    real = tokenfiles._Encoder.__call__
    calls = []

    def filling(self, block):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, block)

    monkeypatch.setattr(tokenfiles._Encoder, "__call__", filling)
    monkeypatch.setattr(textstream, "BLOCK_BYTES", 257)
    with pytest.raises(DataError, match="the disk filled while writing the token file"):
        build(text_file, tmp_path / "c")
    assert list((tmp_path / "c").iterdir()) == []


@pytest.mark.parametrize(
    "content, token, message",
    [
        (b"caf\xe9 au lait\n" * 50, "char", r"not UTF-8 text \(byte 3"),
        (b"text\0with nuls\n" * 50, "char", "NUL byte"),
        (b"  \n\t\n   \n", "char", "only whitespace"),
        (b"  \n\t\n   \n", "word", "only whitespace"),
        (b"", "byte", "is empty"),
    ],
)
def test_bad_text_is_one_data_error(tmp_path, content, token, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        build(path, tmp_path / "c", token=token)
    assert not (tmp_path / "c").exists() or list((tmp_path / "c").iterdir()) == []


def test_non_utf8_is_fine_as_bytes(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"caf\xe9 au lait\n" * 50)
    tf = build(path, tmp_path / "c", token="byte")
    assert np.array_equal(tf.ids, np.frombuffer(path.read_bytes(), np.uint8))


@pytest.mark.parametrize("token", ["char", "byte", "word"])
def test_a_file_with_no_line_end_streams(small_blocks, tmp_path, token):
    words = np.random.default_rng(0).choice(["alpha", "beta", "\u00e9t\u00e9", "\u20ac"], 3000)
    text = " ".join(words)
    path = tmp_path / "one_line.txt"
    path.write_text(text)
    tf = build(path, tmp_path / "c", token=token)
    if token == "byte":
        expected = np.frombuffer(text.encode(), np.uint8)
    else:
        tokens = Vocab(token=token, eos=True).tokens_of(text)
        expected = np.asarray(Vocab(tokens, token=token, eos=True)[tokens])
    assert np.array_equal(tf.ids, expected)


def test_sentencepiece_errors_are_one_line(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("a few words only\n")
    with pytest.raises(DataError, match="sentencepiece cannot learn 5000 unigram pieces"):
        build(path, tmp_path / "c", token="sentencepiece", vocab_size=5000)
    with pytest.raises(DataError, match="vocab_size > 0"):
        build(path, tmp_path / "c", token="sentencepiece", vocab_size=0)


@pytest.mark.parametrize("partition", ["sequential", "random"])
@pytest.mark.parametrize("random_offset", [True, False])
def test_batches_from_a_token_file_equal_the_in_memory_batches(text_file, tmp_path, partition,
                                                               random_offset):  # fmt: skip
    tf = build(text_file, tmp_path / "c")
    memmapped, in_memory = tf.split("train"), np.asarray(tf.split("train"), np.int32)
    assert isinstance(memmapped, np.memmap)
    for epoch in range(3):
        a = batching.epoch_batches(in_memory, 4, 7, partition, 5, epoch, random_offset)
        lazy = batching.EpochBatches(memmapped, 4, 7, partition, 5, epoch, random_offset)
        b = lazy.take(0, len(lazy))
        assert all(np.array_equal(x, y) and y.dtype == np.int32 for x, y in zip(a, b))
        rng = np.random.default_rng((5, epoch))  # the book's own generators
        book = batching.seq_data_iter_sequential if partition == "sequential" else \
            batching.seq_data_iter_random  # fmt: skip
        if random_offset or partition == "random":
            for k, (X, Y) in enumerate(book(in_memory, 4, 7, rng)):
                if k == len(lazy):
                    break
                assert np.array_equal(X, a[0][k]) and np.array_equal(Y, a[1][k])
        rows = lazy.take(2, 5, slice(1, 3))  # a process's rows of a chunk
        assert np.array_equal(rows[0], b[0][2:5, 1:3])
