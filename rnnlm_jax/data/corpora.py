"""The corpora a run can train on, as train / valid / test ids and a tokenizer.

Small corpora are read into memory: the Time Machine (the book's), the Penn Treebank
(Mikolov's word-level files) and tiny Shakespeare. Large ones are tokenized once into a
memory-mapped token file (`rnnlm_jax.data.tokenfiles`) and read from disk: your own text
(`text`), enwik8 and text8 (bytes or characters, the 90M / 5M / 5M split) and WikiText-2 /
WikiText-103 (the word-level `.tokens` files, or `_raw` for characters, bytes or
subwords), found or downloaded by `rnnlm_jax.data.archives`.

`load(spec)` takes a `CorpusSpec` of plain values (the job makes it from its config).
Only the Time Machine gets the book's letters-only cleaning (unless `cleaning` asks for it
elsewhere); word-level corpora mark every line end with the word `<eos>`, character-level
text keeps its newlines as characters.
"""

from __future__ import annotations

import collections
import dataclasses
import warnings
from pathlib import Path

import numpy as np

from rnnlm_jax.data import archives, sources, tokenfiles
from rnnlm_jax.data import batching as data
from rnnlm_jax.data.sources import PTB_SHA1, PTB_URL, DataError, find_ptb  # noqa: F401
from rnnlm_jax.data.vocab import Vocab

IN_MEMORY = ("timemachine", "ptb", "shakespeare")
NAMED = tuple(archives.ARCHIVES)  # enwik8, text8, wikitext2, wikitext103, ..._raw
CORPORA = (*IN_MEMORY, "text", *NAMED)
SPLITS = sources.PTB_SPLITS
SHAKESPEARE_TRAIN = 0.9  # nanoGPT's shakespeare_char: the first 90% trains, the rest validates
# What each named corpus's tokens may be.
NAMED_TOKENS = {"enwik8": ("byte",), "text8": ("char", "byte", "word")}


@dataclasses.dataclass(frozen=True)
class CorpusSpec:
    """Which corpus, and how its text becomes tokens: plain values (the config's fields of
    the same names; `cache_dir` is where token files go when the data's folder cannot be
    written, e.g. the workdir's `tokens/`)."""

    corpus: str = "timemachine"
    token: str = "char"
    cleaning: str = "auto"
    min_freq: int = 0
    max_tokens: int = -1
    num_val: int = 0
    data_file: str = ""
    data_dir: str = ""
    data_url: str = ""
    text_files: str = ""
    valid_fraction: float = 0.1
    test_fraction: float = 0.0
    vocab_size: int = 0
    model_type: str = "unigram"
    sample_mb: float = 20.0
    cache_dir: str = ""

    @classmethod
    def from_config(cls, config, cache_dir: str = "") -> CorpusSpec:
        """The spec of a run's config (its fields of these names that it has)."""
        names = [f.name for f in dataclasses.fields(cls) if f.name != "cache_dir"]
        return cls(**{n: config[n] for n in names if n in config}, cache_dir=cache_dir)


@dataclasses.dataclass(frozen=True)
class Corpus:
    """The ids of the training text and, where the corpus has them, of held-out text (int32
    arrays, or read-only memmaps of a token file); `vocab`: the tokenizer; `about`: a line
    saying where the text came from and how it was split ("" for the book's, whose job
    prints nothing of it); `words`: each split's word count (whitespace words and line
    ends), where the token file counted them (subword corpora), for per-word perplexity."""

    train: np.ndarray
    valid: np.ndarray | None
    test: np.ndarray | None
    vocab: Vocab
    about: str = ""
    words: dict = dataclasses.field(default_factory=dict)


def load(spec) -> Corpus:
    """The corpus `spec` names (a `CorpusSpec`; a config is still read, deprecated)."""
    if not isinstance(spec, CorpusSpec):
        warnings.warn(
            "corpora.load(config) is deprecated: pass corpora.CorpusSpec.from_config(config)",
            DeprecationWarning,
            stacklevel=2,
        )
        spec = CorpusSpec.from_config(spec)
    if spec.corpus == "ptb":
        if spec.token != "word":
            raise DataError(
                "config.corpus='ptb' is a word-level corpus: set --config.token=word "
                "(configs/ptb.py does)"
            )
        return load_ptb(spec.data_dir, spec.max_tokens, spec.data_url)
    if spec.corpus == "text":
        return load_text(spec)
    if spec.corpus in NAMED:
        return load_named(spec)
    if spec.corpus == "shakespeare":
        return load_shakespeare(spec)
    return load_timemachine(spec)


def _cleaning(spec: CorpusSpec, default: str) -> str:
    return default if spec.cleaning == "auto" else spec.cleaning


def load_timemachine(spec: CorpusSpec) -> Corpus:
    """The book's corpus: the vocab from the whole text; training on its first `max_tokens`
    tokens, validation (if `num_val`) on the `num_val` tokens after them; no test split."""
    path = sources.find_time_machine(spec.data_file, spec.data_dir, spec.data_url)
    text = path.read_text(encoding="utf-8")
    cleaning = _cleaning(spec, "book")
    full, vocab = data.load_corpus(text, spec.token, -1, spec.min_freq, cleaning)
    end = spec.max_tokens if spec.max_tokens > 0 else len(full)
    valid = full[end : end + spec.num_val] if spec.num_val else None
    return Corpus(full[:end], valid, None, vocab)


def ptb_vocab(train_words: list[str]) -> Vocab:
    """The recipe's vocab: every training word, sorted by (-count, word) (10,000 for PTB,
    whose files already hold `<unk>`); words, line ends as `<eos>`, no cleaning."""
    counts = collections.Counter(train_words)
    words = sorted(counts, key=lambda w: (-counts[w], w))
    return Vocab.from_tokens_list(words, token="word", cleaning="none", eos=True)


def load_ptb(
    data_dir: str = "", max_tokens: int = -1, url: str = "", sha1s: dict | None = None
) -> Corpus:
    """The Penn Treebank as Zaremba et al.'s reader makes it; `max_tokens > 0` keeps only the
    first training words (the vocab still comes from all of them). `sha1s={}` reads files
    of PTB's format without checking they are PTB's (`sources.find_ptb`)."""
    paths = find_ptb(data_dir, url, sha1s=sha1s)
    reader = Vocab(token="word", cleaning="none", eos=True)
    words = {
        split: reader.tokens_of(sources.read_text(paths[split], f"ptb.{split}.txt"))
        for split in SPLITS
    }
    vocab = ptb_vocab(words["train"])
    ids = {split: np.asarray(vocab[w], np.int32) for split, w in words.items()}
    train = ids["train"][:max_tokens] if max_tokens > 0 else ids["train"]
    return Corpus(train, ids["valid"], ids["test"], vocab)


def split_shakespeare(text: str, token: str = "char", cleaning: str = "none"):
    """nanoGPT's `shakespeare_char` split of `text`: `(train tokens, valid tokens, vocab)`,
    the first 90% of the tokens training, the last 10% validating; the vocab of every token
    in the text (as nanoGPT's, which holds all 65 characters)."""
    reader = Vocab(token=token, cleaning=cleaning, eos=True)
    tokens = reader.tokens_of(text)
    n = int(len(tokens) * SHAKESPEARE_TRAIN)
    vocab = Vocab(tokens, token=token, cleaning=cleaning, eos=True)
    return tokens[:n], tokens[n:], vocab


def load_shakespeare(spec: CorpusSpec) -> Corpus:
    """Tiny Shakespeare (karpathy/char-rnn's `input.txt`), split as nanoGPT splits it."""
    path = sources.find_shakespeare(spec.data_file, spec.data_dir, spec.data_url)
    train, valid, vocab = split_shakespeare(
        path.read_text(encoding="utf-8"), spec.token, _cleaning(spec, "none")
    )
    ids_train = np.asarray(vocab[train], np.int32)
    kept = ids_train[: spec.max_tokens] if spec.max_tokens > 0 else ids_train
    about = (
        f"tiny Shakespeare: {_kept(len(kept), len(ids_train))} training {spec.token}s, "
        f"{len(valid):,} validation (nanoGPT's 90/10 split), vocab {len(vocab)}"
    )
    return Corpus(kept, np.asarray(vocab[valid], np.int32), None, vocab, about)


def _kept(kept: int, total: int) -> str:
    if kept == total:
        return f"{total:,}"
    return f"{kept:,} of {total:,} (config.max_tokens; -1 keeps all)"


def _settings(spec: CorpusSpec, fractions=None) -> tokenfiles.Settings:
    subword = spec.token == "sentencepiece"
    return tokenfiles.Settings(
        token=spec.token,
        cleaning=_cleaning(spec, "none") if spec.token in ("char", "word") else "none",
        min_freq=spec.min_freq if spec.token in ("char", "word") else 0,
        vocab_size=spec.vocab_size if subword else 0,
        model_type=spec.model_type,
        sample_bytes=int(spec.sample_mb * 2**20),
        fractions=fractions,
    )


def _token_file(spec: CorpusSpec, parts, settings) -> tokenfiles.TokenFile:
    """The token file of `parts` beside the first one's file (or in `spec.cache_dir`)."""
    first = parts[0].path
    folders = [first.parent] + ([Path(spec.cache_dir)] if spec.cache_dir else [])
    return tokenfiles.open_or_build(parts, settings, f"{first.name}.{spec.token}", folders)


def _corpus(spec: CorpusSpec, tf: tokenfiles.TokenFile, what: str, split: str) -> Corpus:
    full = tf.split("train")
    train = full[: spec.max_tokens] if spec.max_tokens > 0 else full
    valid, test = tf.split("valid"), tf.split("test")
    held = [f"{len(i):,} {name}" for i, name in ((valid, "validation"), (test, "test"))
            if i is not None]  # fmt: skip
    about = (
        f"{what} ({split}): {_kept(len(train), len(full))} training {spec.token}s"
        + "".join(f", {h}" for h in held)
        + f", vocab {len(tf.tokenizer)} (token file {tf.path})"
    )
    return Corpus(train, valid, test, tf.tokenizer, about, dict(tf.words))


def load_text(spec: CorpusSpec) -> Corpus:
    """Any local UTF-8 text (any file under `token="byte"`): `spec.text_files` is one file
    (split by `valid_fraction` and `test_fraction` of its tokens: train first, then valid,
    then test) or three comma-separated files (train, valid, test; valid and test may be
    empty). Tokens are `spec.token`; cleaning `spec.cleaning` (`none` unless `book`); line
    ends are tokens (the word `<eos>`, or the character `\\n`). A char or word vocab is the
    training tokens' (those seen fewer than `min_freq` times, and held-out tokens it lacks,
    become `<unk>`). Read through a token file: tokenized once, then from disk."""
    names = [n.strip() for n in str(spec.text_files).split(",")]
    if len(names) not in (1, 3) or not names[0]:
        raise DataError(
            f"config.text_files={spec.text_files!r} names {len(names)} files: give one "
            "file (split by config.valid_fraction and config.test_fraction) or three, "
            "train,valid,test (valid and test may be left empty)"
        )
    paths = [Path(n).expanduser() if n else None for n in names]
    if len(paths) == 1:
        parts = [tokenfiles.Part("all", paths[0])]
        fractions = (float(spec.valid_fraction), float(spec.test_fraction))
        split = f"split {1 - spec.valid_fraction - spec.test_fraction:g} / "
        split += f"{spec.valid_fraction:g} / {spec.test_fraction:g}"
    else:
        parts = [tokenfiles.Part(s, p) for s, p in zip(SPLITS, paths) if p is not None]
        fractions, split = None, "train, valid, test files"
    tf = _token_file(spec, parts, _settings(spec, fractions))
    for name, ids in (("train", tf.split("train")), ("valid", tf.split("valid")),
                      ("test", tf.split("test"))):  # fmt: skip
        if ids is not None and len(ids) < 2:
            raise DataError(
                f"the {name} text of {spec.text_files} has {len(ids)} {spec.token} token(s): "
                "too short to train or score on"
            )
    what = f"text corpus {', '.join(p.name for p in paths if p)}"
    return _corpus(spec, tf, what, split)


def load_named(spec: CorpusSpec) -> Corpus:
    """enwik8, text8 (one file of 100,000,000 bytes: the first 90M train, the next 5M
    validate, the last 5M test) or WikiText (its three files), found in the data folder or
    downloaded there (`rnnlm_jax.data.archives`), through a token file."""
    allowed = NAMED_TOKENS.get(spec.corpus)
    if allowed and spec.token not in allowed:
        raise DataError(
            f"config.corpus={spec.corpus!r} is read as {' or '.join(allowed)} tokens, not "
            f"{spec.token!r} (its published split is in bytes)"
        )
    paths = archives.find(spec.corpus, spec.data_dir, spec.data_url)
    if "all" in paths:
        parts = [tokenfiles.Part(s, paths["all"], a, b)
                 for s, (a, b) in archives.BYTE_SPLITS.items()]  # fmt: skip
        split = "90M / 5M / 5M bytes"
    else:
        parts = [tokenfiles.Part(s, paths[s]) for s in SPLITS]
        split = "its train, valid, test files"
    tf = _token_file(spec, parts, _settings(spec))
    return _corpus(spec, tf, spec.corpus, split)
