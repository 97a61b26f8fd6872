"""Token files: a corpus tokenized once into a memory-mapped array of ids, cached.

    tf = open_or_build(parts, settings, cache_dir)   # tf.split("train"): a read-only memmap

A token file is `<name>.ids` (the ids of every split, one after another, in the smallest
unsigned dtype that holds the vocab) and `<name>.json`, its manifest: the format version,
every source file's name, size and SHA-1 and the byte range read, the tokenizer's settings
and the tokenizer itself, the split boundaries, the dtype, the token count and the SHA-1 of
the ids. A cache is used only when its manifest matches what is asked and the ids are whole
(their size and SHA-1); otherwise it is rebuilt, which is said on one line. A build writes
temporary files and renames them (the ids, then the manifest), under a lock, so a reader
never sees half a file and two runs tokenizing the same corpus at once build it once.

Tokenizing streams the text in blocks (`rnnlm_jax.data.textstream`): characters and bytes
through vectorised NumPy (a character's id is a table lookup of its code point), words
through one `str.split` per line; a vocab (char, word) is counted on the training split
first, sentencepiece learns its pieces from a bounded sample of it.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rnnlm_jax import files
from rnnlm_jax.data import textstream
from rnnlm_jax.data.sources import DataError, digest_of
from rnnlm_jax.data.tokenizers import (
    ByteTokenizer,
    SentencePieceTokenizer,
    TokenizerError,
    from_json,
)
from rnnlm_jax.data.vocab import EOS, Vocab

log = logging.getLogger("rnnlm_jax")

FORMAT_VERSION = 1
MAX_CODE_POINT = 0x110000
WORD_BLOCK = 4 << 20  # words: a block's list of strings costs ~20x its bytes


@dataclasses.dataclass(frozen=True)
class Part:
    """A split's text: bytes `start:end` of `path` (`end` None: to the end of the file)."""

    split: str
    path: Path
    start: int = 0
    end: int | None = None


@dataclasses.dataclass(frozen=True)
class Settings:
    """How text becomes ids. `token`: char | word | byte | sentencepiece; `cleaning` none |
    book (char and word); `min_freq` (char and word: rarer training tokens become
    `<unk>`); `vocab_size`, `model_type` and `sample_bytes` (sentencepiece: pieces, bpe or
    unigram, and the most training text it learns from); `fractions` (valid, test): one
    part `all` cut into train / valid / test by these shares of its tokens."""

    token: str = "char"
    cleaning: str = "none"
    min_freq: int = 0
    vocab_size: int = 0
    model_type: str = "unigram"
    sample_bytes: int = 20 << 20
    fractions: tuple[float, float] | None = None

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        if self.token not in ("char", "word"):
            d.pop("cleaning"), d.pop("min_freq")
        if self.token != "sentencepiece":
            d.pop("vocab_size"), d.pop("model_type"), d.pop("sample_bytes")
        d["fractions"] = list(self.fractions) if self.fractions else None
        return d


class TokenFile:
    """An opened token file: `split(name)` is that split's ids (a read-only memmap),
    `tokenizer` what made them, `words[name]` the split's word count (whitespace words and
    line ends: what per-word perplexity divides by), `manifest` all of it."""

    def __init__(self, ids_path: Path, manifest: dict):
        self.path = ids_path
        self.manifest = manifest
        n = manifest["num_tokens"]
        self.ids = (
            np.memmap(ids_path, np.dtype(manifest["dtype"]), mode="r", shape=(n,))
            if n
            else np.zeros(0, np.dtype(manifest["dtype"]))
        )
        self.tokenizer = from_json(manifest["tokenizer"])
        self.splits = {k: tuple(v) for k, v in manifest["splits"].items()}
        self.words = manifest.get("words", {})

    def split(self, name: str) -> np.ndarray | None:
        if name not in self.splits:
            return None
        a, b = self.splits[name]
        return self.ids[a:b]


def dtype_for(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer dtype that holds ids `0 .. vocab_size - 1`."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dt).max + 1:
            return np.dtype(dt)
    raise DataError(f"a vocab of {vocab_size:,} tokens is too large")


# ----------------------------------------------------------------------------
# Streaming tokens.


def _blocks(part: Part, settings: Settings) -> Iterator[str | bytes]:
    if settings.token == "byte":
        yield from textstream.byte_blocks(part.path, part.start, part.end)
        return
    book = settings.cleaning == "book" and settings.token in ("char", "word")
    cut_at = "line" if book or settings.token == "sentencepiece" else settings.token
    size = textstream.BLOCK_BYTES if settings.token == "char" else WORD_BLOCK
    for text in textstream.text_blocks(part.path, part.start, part.end, size, cut_at):
        if book:  # the book's cleaning of every line (`vocab.clean_lines`)
            text = "\n".join(_BOOK.sub(" ", line).strip().lower() for line in text.split("\n"))
        yield text


_BOOK = re.compile("[^A-Za-z]+")


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), np.uint32)


def _words(text: str) -> list[str]:
    """`text`'s words and a `<eos>` for every line end (the block ends at whitespace)."""
    lines = text.split("\n")
    words: list[str] = []
    for line in lines[:-1]:
        words += line.split()
        words.append(EOS)
    words += lines[-1].split()
    return words


class _CharCounter:
    """Code-point counts and first positions, for a vocab in the book's order."""

    def __init__(self):
        self.counts = np.zeros(MAX_CODE_POINT, np.int64)
        self.first = np.full(MAX_CODE_POINT, np.iinfo(np.int64).max, np.int64)
        self.n = 0

    def add(self, cps: np.ndarray) -> None:
        block = np.bincount(cps, minlength=MAX_CODE_POINT)
        new = (block > 0) & (self.counts == 0)
        if new.any():
            at = np.flatnonzero(new[cps])
            np.minimum.at(self.first, cps[at], at + self.n)
        self.counts += block
        self.n += len(cps)

    def vocab(self, min_freq: int, settings: Settings) -> Vocab:
        seen = np.flatnonzero(self.counts)
        order = np.lexsort((self.first[seen], -self.counts[seen]))
        kept = [int(c) for c in seen[order] if self.counts[c] >= max(min_freq, 1)]
        return Vocab.from_tokens_list(
            ["<unk>", *(chr(c) for c in kept)], "char", settings.cleaning, eos=True
        )


def _count_tokens(parts: list[Part], settings: Settings, limit: int | None = None):
    """Counts the tokens of `parts` (the training text; the first `limit` only); returns
    the counter (char: `_CharCounter`, word: `collections.Counter`)."""
    counter = _CharCounter() if settings.token == "char" else collections.Counter()
    n = 0
    for part in parts:
        for text in _blocks(part, settings):
            toks = _code_points(text) if settings.token == "char" else _words(text)
            if limit is not None and n + len(toks) > limit:
                toks = toks[: limit - n]
            n += len(toks)
            if settings.token == "char":
                counter.add(toks)
            else:
                counter.update(toks)
            if limit is not None and n >= limit:
                return counter
    return counter


def _word_vocab(counter: collections.Counter, min_freq: int, settings: Settings) -> Vocab:
    """`Vocab`'s order: by count, ties by first appearance (the counter's order)."""
    tokens = ["<unk>"]
    for tok, freq in sorted(counter.items(), key=lambda kv: kv[1], reverse=True):
        if freq < min_freq:
            break
        if tok != "<unk>":
            tokens.append(tok)
    return Vocab.from_tokens_list(tokens, "word", settings.cleaning, eos=True)


def _sample_lines(parts: list[Part], settings: Settings) -> list[str]:
    """A bounded sample of the training text for sentencepiece: the whole lines of evenly
    spaced 1 MB windows of the training parts, `sample_bytes` in all (all of it when it is
    smaller); lines longer than 64 KB are cut at spaces (sentencepiece skips longer ones)."""
    ends = [p.end if p.end is not None else p.path.stat().st_size for p in parts]
    total = sum(e - p.start for p, e in zip(parts, ends))
    window = 1 << 20
    lines: list[str] = []
    for part, end in zip(parts, ends):
        size = end - part.start
        share = size if total <= settings.sample_bytes else settings.sample_bytes * size // total
        if share >= size:
            windows = [(part.start, size)]
        else:
            k = max(1, share // window)
            windows = [(part.start + i * (size // k), min(window, share)) for i in range(k)]
        with open(part.path, "rb") as f:
            for start, n in windows:
                f.seek(start)
                data = f.read(n)
                if start > part.start and b"\n" in data:
                    data = data[data.index(b"\n") + 1 :]  # from a line's start
                if start + n < end and b"\n" in data:
                    data = data[: data.rindex(b"\n") + 1]  # to a line's end
                text = data.decode("utf-8", "replace").replace("\r\n", "\n")
                for line in text.split("\n"):
                    while len(line) > 65536:
                        cut = line.rfind(" ", 0, 65536)
                        cut = cut if cut > 0 else 65536
                        lines.append(line[:cut])
                        line = line[cut:]
                    lines.append(line)
    return lines


def train_tokenizer(train_parts: list[Part], settings: Settings, limit: int | None = None):
    """The tokenizer of `settings`, from the training text (`limit`: its first tokens)."""
    token = settings.token
    if token == "byte":
        return ByteTokenizer()
    if token == "sentencepiece":
        if settings.vocab_size < 1:
            raise DataError("token=sentencepiece needs vocab_size > 0")
        try:
            return SentencePieceTokenizer.train(
                _sample_lines(train_parts, settings), settings.vocab_size, settings.model_type
            )
        except TokenizerError as e:
            raise DataError(str(e)) from None
    counter = _count_tokens(train_parts, settings, limit)
    if token == "char":
        return counter.vocab(settings.min_freq, settings)
    return _word_vocab(counter, settings.min_freq, settings)


class _Encoder:
    """Ids of text blocks under a tokenizer, as `dtype`."""

    def __init__(self, tokenizer, settings: Settings, dtype: np.dtype):
        self.tokenizer, self.settings, self.dtype = tokenizer, settings, dtype
        if settings.token == "char":
            table = np.zeros(MAX_CODE_POINT, dtype)  # unknown -> <unk> (id 0)
            for i, t in enumerate(tokenizer.idx_to_token):
                if i and len(t) == 1:
                    table[ord(t)] = i
            self.table = table
        elif settings.token == "word":
            self.ids = _Ids(tokenizer.token_to_idx)
            self.ids.unk = tokenizer.unk

    def __call__(self, block) -> np.ndarray:
        token = self.settings.token
        if token == "byte":
            return np.frombuffer(block, np.uint8).astype(self.dtype, copy=False)
        if token == "char":
            return self.table[_code_points(block)]
        if token == "word":
            words = _words(block)
            return np.fromiter(map(self.ids.__getitem__, words), self.dtype, len(words))
        lines = block.split("\n")
        ends_line = lines[-1] == ""
        if ends_line:
            lines.pop()
        ids = self.tokenizer.encode_lines(lines)  # every line with its </s>
        if not ends_line and len(ids):
            ids = ids[:-1]  # the block ends mid-line (the text's end, or a very long line)
        return ids.astype(self.dtype, copy=False)


class _Ids(dict):
    """Word -> id, `unk` for a word it lacks (looked up at C speed: `__missing__` runs only
    for unknown words)."""

    unk = 0

    def __missing__(self, key):
        return self.unk


def _word_count(text: str) -> int:
    return len(text.split()) + text.count("\n")


# ----------------------------------------------------------------------------
# The cache.


def _source_entry(part: Part) -> dict:
    size = part.path.stat().st_size
    return {
        "split": part.split,
        "file": part.path.name,
        "size": size,
        "sha1": _cached_sha1(part.path),
        "range": [part.start, size if part.end is None else part.end],
    }


_SHA1S: dict[tuple, str] = {}


def _cached_sha1(path: Path) -> str:
    """A file's SHA-1, once per process for an unchanged file (size and mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA1S:
        _SHA1S[key] = digest_of(path)
    return _SHA1S[key]


def _wanted(parts: list[Part], settings: Settings) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "sources": [_source_entry(p) for p in parts],
        "settings": settings.to_json(),
    }


def _mismatch(manifest: dict, wanted: dict) -> str | None:
    """What differs between a cache's manifest and what is asked (None: nothing)."""
    if manifest.get("format_version") != wanted["format_version"]:
        return f"format {manifest.get('format_version')} (this version writes {FORMAT_VERSION})"
    if manifest.get("settings") != wanted["settings"]:
        return f"another tokenizer ({manifest.get('settings')})"
    if manifest.get("sources") != wanted["sources"]:
        return "another or a changed source file"
    return None


def _read_manifest(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _check_ids(ids_path: Path, manifest: dict) -> str | None:
    """Why the ids file does not hold what its manifest says (None: it does)."""
    try:
        n, dt = int(manifest["num_tokens"]), np.dtype(manifest["dtype"])
        want = manifest["ids_sha1"]
    except (KeyError, TypeError, ValueError):
        return "a damaged manifest"
    if not ids_path.is_file():
        return "its ids file is missing"
    if ids_path.stat().st_size != n * dt.itemsize:
        return (
            f"its ids file is truncated ({ids_path.stat().st_size:,} of {n * dt.itemsize:,} bytes)"
        )
    if digest_of(ids_path) != want:
        return "its ids file is damaged (SHA-1 differs)"
    return None


def _usable(folder: Path) -> bool:
    """Whether token files can be written in `folder` (made if missing)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive lock on `path` (made, and removed after: a run leaves no lock file
    beside the data; a run that waited on a removed one at worst builds the same file
    again, each build renaming its own temporary file into place)."""
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
            fcntl.flock(f, fcntl.LOCK_UN)


def open_or_build(
    parts: list[Part], settings: Settings, name: str, folders: list[Path]
) -> TokenFile:
    """The token file of `parts` under `settings`, named `<name>.ids` / `<name>.json` in the
    first of `folders` that holds a valid one, else built in the first writable one (beside
    the data, then e.g. the workdir). Raises `DataError` (one line)."""
    for p in parts:
        textstream.check_file(p.path)
    wanted = _wanted(parts, settings)
    stale = None
    for folder in folders:
        manifest = _read_manifest(folder / f"{name}.json")
        if manifest is None:
            continue
        why = _mismatch(manifest, wanted) or _check_ids(folder / f"{name}.ids", manifest)
        if why is None:
            return TokenFile(folder / f"{name}.ids", manifest)
        stale = stale or (folder, why)
    folder = next((f for f in folders if _usable(f)), None)
    if folder is None:
        raise DataError(
            f"no folder to write the token file {name}.ids in: "
            + ", ".join(str(f) for f in folders) + " cannot be written"
        )  # fmt: skip
    with _lock(folder / f".{name}.lock"):
        manifest = _read_manifest(folder / f"{name}.json")  # another run may have built it
        if manifest is not None and not (
            _mismatch(manifest, wanted) or _check_ids(folder / f"{name}.ids", manifest)
        ):
            return TokenFile(folder / f"{name}.ids", manifest)
        if stale:
            made = "it was made with " if stale[1].startswith(("another", "format")) else ""
            log.info(f"rebuilding the token file {name}.ids in {stale[0]}: {made}{stale[1]}",
                     extra={"stderr": True})  # fmt: skip
        else:
            log.info(f"tokenizing into {folder / name}.ids (once; later runs read it)",
                     extra={"stderr": True})  # fmt: skip
        began = time.perf_counter()
        manifest = _build(parts, settings, wanted, folder, name)
        seconds = time.perf_counter() - began
        size = sum(s["range"][1] - s["range"][0] for s in manifest["sources"])
        log.info(f"tokenized {size / 1e6:,.1f} MB into {manifest['num_tokens']:,} "
                 f"{settings.token} tokens in {seconds:.1f} s ({size / 1e6 / seconds:,.1f} "
                 "MB/s)", extra={"stderr": True})  # fmt: skip
        return TokenFile(folder / f"{name}.ids", manifest)


def _build(parts: list[Part], settings: Settings, wanted: dict, folder: Path, name: str) -> dict:
    train = [p for p in parts if p.split in ("train", "all")]
    if settings.fractions and any(settings.fractions) and settings.token in ("char", "word"):
        # The vocab is the training share's: count every token once to find its end.
        total = _count_total(parts, settings)
        limit = total - int(total * settings.fractions[0]) - int(total * settings.fractions[1])
    else:
        limit = None
    tokenizer = train_tokenizer(train, settings, limit)
    dtype = dtype_for(len(tokenizer))
    encode = _Encoder(tokenizer, settings, dtype)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".ids.part")
    splits, words, digest, n = {}, {}, hashlib.sha1(), 0
    count_words = settings.token == "sentencepiece"
    try:
        os.fchmod(fd, 0o666 & ~files.umask())
        with os.fdopen(fd, "wb") as f:
            for part in parts:
                begin, w = n, 0
                blocks = _blocks(part, settings)
                nonblank = False
                for text in blocks:
                    ids = encode(text)
                    if len(ids):
                        nonblank = nonblank or bool(text.strip())
                    if count_words:
                        w += _word_count(text)
                    data = ids.tobytes()
                    f.write(data)
                    digest.update(data)
                    n += len(ids)
                if not nonblank:
                    raise DataError(
                        f"{part.path} is empty (it holds only whitespace)"
                        + (f" in bytes {part.start:,}-{part.end:,}" if part.end else "")
                    )
                splits[part.split] = [begin, n]
                if count_words:
                    words[part.split] = w
        if "all" in splits:
            splits = _cut(splits["all"], settings.fractions or (0.0, 0.0))
            if count_words:
                words = {}
        manifest = {
            **wanted,
            "tokenizer": tokenizer.to_json(),
            "vocab_size": len(tokenizer),
            "dtype": dtype.name,
            "num_tokens": n,
            "ids_sha1": digest.hexdigest(),
            "splits": splits,
            "words": words,
        }
        os.replace(tmp, folder / f"{name}.ids")
        files.write_json_atomic(folder / f"{name}.json", manifest)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            free = textstream.free_bytes(folder)
            raise DataError(
                f"the disk filled while writing the token file {folder / name}.ids "
                f"({n * dtype.itemsize / 2**20:,.0f} MB written"
                + (f", {free / 2**20:,.0f} MB free" if free is not None else "")
                + "): nothing was kept; free some space or point data_dir elsewhere"
            ) from None
        raise DataError(f"cannot write the token file {folder / name}.ids: {e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return manifest


def _count_total(parts: list[Part], settings: Settings) -> int:
    n = 0
    for part in parts:
        for text in _blocks(part, settings):
            n += len(text) if settings.token == "char" else len(_words(text))
    return n


def _cut(span, fractions) -> dict:
    """train / valid / test boundaries of one tokenized text by shares of its tokens
    (training first, then validation, then test; an empty share is left out)."""
    a, b = span
    total = b - a
    n_valid, n_test = int(total * fractions[0]), int(total * fractions[1])
    train_end = a + total - n_valid - n_test
    out = {"train": [a, train_end]}
    if n_valid:
        out["valid"] = [train_end, train_end + n_valid]
    if n_test:
        out["test"] = [b - n_test, b]
    return out
