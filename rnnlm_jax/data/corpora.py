"""The corpora a run can train on, as train / valid / test ids and a vocab: the Time Machine
(the book's), the Penn Treebank (Mikolov's word-level files), or any local UTF-8 text.

`config.corpus` picks one; `load(config)` returns a `Corpus`. Only the Time Machine gets the
book's letters-only cleaning (unless `config.cleaning` asks for it elsewhere); word-level
PTB and text corpora mark every line end with the word `<eos>`, character-level text keeps
its newlines as characters.
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path

import ml_collections
import numpy as np

from rnnlm_jax.data import batching as data
from rnnlm_jax.data import sources
from rnnlm_jax.data.sources import PTB_SHA1, PTB_URL, DataError, find_ptb  # noqa: F401
from rnnlm_jax.data.vocab import Vocab

CORPORA = ("timemachine", "ptb", "shakespeare", "text")
SPLITS = sources.PTB_SPLITS
SHAKESPEARE_TRAIN = 0.9  # nanoGPT's shakespeare_char: the first 90% trains, the rest validates


@dataclasses.dataclass(frozen=True)
class Corpus:
    """int32 ids of the training text and, where the corpus has them, of held-out text;
    `about`: a line saying where the text came from and how it was split ("" for the
    book's, whose job prints nothing of it)."""

    train: np.ndarray
    valid: np.ndarray | None
    test: np.ndarray | None
    vocab: Vocab
    about: str = ""


def load(config: ml_collections.ConfigDict) -> Corpus:
    """The corpus `config.corpus` names, as `config` shapes it (a validated config: every
    field present)."""
    if config.corpus == "ptb":
        if config.token != "word":
            raise DataError(
                "config.corpus='ptb' is a word-level corpus: set --config.token=word "
                "(configs/ptb.py does)"
            )
        return load_ptb(config.data_dir, config.max_tokens, config.data_url)
    if config.corpus == "text":
        return load_text(config)
    if config.corpus == "shakespeare":
        return load_shakespeare(config)
    return load_timemachine(config)


def _cleaning(config, default: str) -> str:
    return default if config.cleaning == "auto" else config.cleaning


def load_timemachine(config: ml_collections.ConfigDict) -> Corpus:
    """The book's corpus: the vocab from the whole text; training on its first `max_tokens`
    tokens, validation (if `num_val`) on the `num_val` tokens after them; no test split."""
    path = sources.find_time_machine(config.data_file, config.data_dir, config.data_url)
    text = path.read_text(encoding="utf-8")
    cleaning = _cleaning(config, "book")
    full, vocab = data.load_corpus(text, config.token, -1, config.min_freq, cleaning)
    end = config.max_tokens if config.max_tokens > 0 else len(full)
    valid = full[end : end + config.num_val] if config.num_val else None
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


def load_shakespeare(config: ml_collections.ConfigDict) -> Corpus:
    """Tiny Shakespeare (karpathy/char-rnn's `input.txt`), split as nanoGPT splits it."""
    path = sources.find_shakespeare(config.data_file, config.data_dir, config.data_url)
    train, valid, vocab = split_shakespeare(
        path.read_text(encoding="utf-8"), config.token, _cleaning(config, "none")
    )
    ids_train = np.asarray(vocab[train], np.int32)
    kept = ids_train[: config.max_tokens] if config.max_tokens > 0 else ids_train
    about = (
        f"tiny Shakespeare: {_kept(len(kept), len(ids_train))} training {config.token}s, "
        f"{len(valid):,} validation (nanoGPT's 90/10 split), vocab {len(vocab)}"
    )
    return Corpus(kept, np.asarray(vocab[valid], np.int32), None, vocab, about)


def _kept(kept: int, total: int) -> str:
    if kept == total:
        return f"{total:,}"
    return f"{kept:,} of {total:,} (config.max_tokens; -1 keeps all)"


def load_text(config: ml_collections.ConfigDict) -> Corpus:
    """Any local UTF-8 text: `config.text_files` is one file (split by `valid_fraction` and
    `test_fraction` of its tokens: train first, then valid, then test) or three
    comma-separated files (train, valid, test; valid and test may be empty). Tokens are
    `config.token`; cleaning `config.cleaning` (`none` unless `book`); line ends are tokens
    (the word `<eos>`, or the character `\\n`). The vocab is the training tokens' (those
    seen fewer than `min_freq` times, and held-out tokens it lacks, become `<unk>`)."""
    names = [n.strip() for n in str(config.text_files).split(",")]
    if len(names) not in (1, 3) or not names[0]:
        raise DataError(
            f"config.text_files={config.text_files!r} names {len(names)} files: give one "
            "file (split by config.valid_fraction and config.test_fraction) or three, "
            "train,valid,test (valid and test may be left empty)"
        )
    cleaning = _cleaning(config, "none")
    reader = Vocab(token=config.token, cleaning=cleaning, eos=True)
    tokens = [reader.tokens_of(sources.read_text(n)) if n else None for n in names]
    for name, toks in zip(names, tokens):
        if toks is not None and len(toks) < 2:
            raise DataError(
                f"text file {name} has {len(toks)} {config.token} token(s) after cleaning "
                f"{cleaning!r}: too short to train or score on"
            )
    if len(tokens) == 1:
        n = len(tokens[0])
        n_valid, n_test = int(n * config.valid_fraction), int(n * config.test_fraction)
        train_end = n - n_valid - n_test
        every = tokens[0]
        tokens = [every[:train_end], every[train_end : n - n_test], every[n - n_test :]]
        tokens = [t if t else None for t in tokens]
        split = f"split {1 - config.valid_fraction - config.test_fraction:g} / "
        split += f"{config.valid_fraction:g} / {config.test_fraction:g}"
    else:
        split = "train, valid, test files"
    vocab = Vocab(tokens[0], config.min_freq, token=reader.token, cleaning=cleaning, eos=True)
    ids = [None if t is None else np.asarray(vocab[t], np.int32) for t in tokens]
    train = ids[0][: config.max_tokens] if config.max_tokens > 0 else ids[0]
    held = [
        f"{len(i):,} {name}" for i, name in zip(ids[1:], ("validation", "test")) if i is not None
    ]
    about = (
        f"text corpus {', '.join(Path(n).name for n in names if n)} ({split}): "
        f"{_kept(len(train), len(ids[0]))} training {config.token}s"
        + "".join(f", {h}" for h in held)
        + f", vocab {len(vocab)}"
    )
    return Corpus(train, ids[1], ids[2], vocab, about)
