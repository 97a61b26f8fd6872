"""Text -> tokens -> ids and back: the book's cleaning and tokenizer, and a `Vocab` that knows
how its text was cleaned and split (and whether line ends are `<eos>` words), and saves and
loads itself as JSON."""

from __future__ import annotations

import collections
import itertools
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from rnnlm_jax.files import write_json_atomic

TOKEN_TYPES = ("char", "word")
# `book`: d2l's `read_time_machine` (runs of non-letters -> one space, strip, lowercase);
# `none`: the lines as they are.
CLEANINGS = ("book", "none")
EOS = "<eos>"  # the word that marks a line end in word-level corpora (PTB's convention)
NEWLINE = "\n"  # and the character that does in character-level ones


def clean_lines(text: str, cleaning: str = "book") -> list[str]:
    """The text's lines, cleaned: `book`: every run of non-letters becomes one space; strip;
    lowercase (the book's). `none`: unchanged."""
    if cleaning == "none":
        return text.splitlines()
    if cleaning != "book":
        raise ValueError(f"unknown cleaning {cleaning!r}; expected one of {CLEANINGS}")
    return [re.sub("[^A-Za-z]+", " ", line).strip().lower() for line in text.splitlines()]


def normalize_text(text: str) -> str:
    """`text` without a leading UTF-8 byte-order mark, its line ends `\\n` (CRLF's and old
    Macs' `\\r` are not tokens)."""
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def tokenize(lines: Iterable[str], token: str = "char") -> list[list[str]]:
    """Splits each line into characters (`char`) or whitespace-separated words (`word`)."""
    if token == "char":
        return [list(line) for line in lines]
    if token == "word":
        return [line.split() for line in lines]
    raise ValueError(f"unknown token type {token!r}; expected one of {TOKEN_TYPES}")


class Vocab:
    """Token <-> id mapping of d2l: `<unk>` is 0, then reserved tokens, then by frequency.

    Tokens are sorted by descending count with ties in first-occurrence order;
    tokens seen fewer than `min_freq` times are left out and map to `<unk>`. The vocab also
    remembers how text becomes its tokens (`cleaning`, `token`, and `eos`: line ends are
    tokens, the word `<eos>` as in PTB or the character `\\n`), so `encode` turns new text into ids
    exactly as the training text was, and `save` / `load` keep all of it. `unk` is the id of
    `<unk>` (0 unless a vocab built elsewhere, such as PTB's, puts it elsewhere).

    `cleaning` defaults to `none`: your tokens as they are (the book's letters-only,
    lower-case cleaning is `cleaning="book"`, which `load_corpus` applies by default).
    """

    def __init__(
        self,
        tokens: Iterable = (),
        min_freq: int = 0,
        reserved_tokens: Sequence[str] = (),
        token: str = "char",
        cleaning: str = "none",
        eos: bool = False,
    ):
        if token not in TOKEN_TYPES:
            raise ValueError(f"unknown token type {token!r}; expected one of {TOKEN_TYPES}")
        if cleaning not in CLEANINGS:
            raise ValueError(f"unknown cleaning {cleaning!r}; expected one of {CLEANINGS}")
        self.token, self.cleaning, self.eos = token, cleaning, eos
        flat = [t for line in tokens for t in line] if _is_nested(tokens) else list(tokens)
        counter = collections.Counter(flat)
        self.token_freqs = sorted(counter.items(), key=lambda kv: kv[1], reverse=True)
        self.idx_to_token = ["<unk>"] + list(reserved_tokens)
        seen = set(self.idx_to_token)
        for tok, freq in self.token_freqs:
            if freq < min_freq:
                break
            if tok not in seen:
                self.idx_to_token.append(tok)
                seen.add(tok)
        self.token_to_idx = {t: i for i, t in enumerate(self.idx_to_token)}

    @classmethod
    def from_tokens_list(
        cls,
        idx_to_token: Sequence[str],
        token: str = "char",
        cleaning: str = "none",
        eos: bool = False,
    ) -> Vocab:
        """A vocab with exactly this `idx_to_token` list (e.g. read back from JSON)."""
        vocab = cls(token=token, cleaning=cleaning, eos=eos)
        vocab.idx_to_token = list(idx_to_token)
        vocab.token_to_idx = {t: i for i, t in enumerate(vocab.idx_to_token)}
        return vocab

    def __len__(self) -> int:
        return len(self.idx_to_token)

    def __getitem__(self, tokens):
        """Token -> id (unknown -> 0); a list or tuple of tokens -> list of ids."""
        if isinstance(tokens, (list, tuple)):
            if tokens and isinstance(tokens[0], (list, tuple)):
                return [self[t] for t in tokens]
            # map() with the dict's own get: a million characters in ~30 ms, not ~300
            return list(map(self.token_to_idx.get, tokens, itertools.repeat(self.unk)))
        return self.token_to_idx.get(tokens, self.unk)

    def to_tokens(self, indices):
        """Id -> token; a sequence of ids -> list of tokens."""
        if isinstance(indices, (list, tuple, np.ndarray)):
            return [self.idx_to_token[int(i)] for i in indices]
        return self.idx_to_token[int(indices)]

    @property
    def unk(self) -> int:
        return self.token_to_idx.get("<unk>", 0)

    def tokens_of(self, text: str) -> list[str]:
        """`text` cleaned and split as the training text was, all lines joined (with `eos`,
        every newline is a token: the word `<eos>`, as PTB's `text.replace("\\n", " <eos> ")
        .split()`, or the character `\\n`)."""
        text = normalize_text(text)
        if not self.eos:
            lines = tokenize(clean_lines(text, self.cleaning), self.token)
            return [t for line in lines for t in line]
        pieces = text.split("\n")  # the last piece is what follows the last newline
        tokens = []
        for i, piece in enumerate(pieces):
            line = piece if self.cleaning == "none" or not piece else clean_lines(piece)[0]
            tokens += tokenize([line], self.token)[0]
            if i < len(pieces) - 1:
                tokens.append(EOS if self.token == "word" else NEWLINE)
        return tokens

    def encode(self, text: str) -> np.ndarray:
        """`text` as int32 ids, cleaned and split as the training text was (unknown -> 0)."""
        return np.asarray(self[self.tokens_of(text)], np.int32)

    def decode(self, ids) -> str:
        """Ids as text: their tokens joined (`<unk>` where a token was unknown)."""
        return self.join(self.to_tokens(list(np.asarray(ids).reshape(-1))))

    @property
    def vocab_size(self) -> int:
        return len(self)

    def settings(self) -> dict:
        """How text becomes this vocab's tokens (what a token file's manifest records)."""
        return {"token": self.token, "cleaning": self.cleaning, "eos": self.eos}

    def split(self, prefix: str) -> list[str]:
        """A prompt's tokens without cleaning (the book's `predict_ch8`): its characters, or
        its whitespace-separated words."""
        return prefix.split() if self.token == "word" else list(prefix)

    def join(self, tokens: Sequence[str]) -> str:
        """Tokens as text: characters concatenated, words separated by spaces."""
        return (" " if self.token == "word" else "").join(tokens)

    def to_json(self) -> dict:
        return {
            "token": self.token,
            "cleaning": self.cleaning,
            "eos": self.eos,
            "idx_to_token": self.idx_to_token,
        }

    @classmethod
    def from_json(cls, obj, token: str = "char") -> Vocab:
        """The inverse of `to_json`; a bare `idx_to_token` list (the format before the vocab
        knew its token type) is read with `token` and the book's cleaning."""
        if isinstance(obj, list):
            return cls.from_tokens_list(obj, token, cleaning="book")
        return cls.from_tokens_list(
            obj["idx_to_token"], obj["token"], obj["cleaning"], obj.get("eos", False)
        )

    def save(self, path: str | Path) -> None:
        """Writes the vocab as JSON (atomically: a reader never sees half a file)."""
        write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path, token: str = "char") -> Vocab:
        """Reads a vocab written by `save` (or a bare `idx_to_token` list, read with
        `token`). Raises `OSError` or `ValueError` for a missing or malformed file."""
        try:
            return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")), token)
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise ValueError(f"{path} is not a vocab file ({type(e).__name__}: {e})") from None


def _is_nested(tokens) -> bool:
    tokens = tokens if isinstance(tokens, (list, tuple)) else list(tokens)
    return len(tokens) > 0 and isinstance(tokens[0], (list, tuple))
