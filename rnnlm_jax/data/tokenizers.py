"""How text becomes tokens, one interface for every kind: `encode(text) -> ids`,
`decode(ids) -> text`, `save(path)`, `load(path)` and `vocab_size`.

  char, word      `rnnlm_jax.data.vocab.Vocab` (the book's, built from counted tokens)
  byte            `ByteTokenizer`: UTF-8 bytes, ids 0-255 (enwik8's bits-per-character
                  convention; any byte sequence, valid UTF-8 or not)
  sentencepiece   `SentencePieceTokenizer`: subwords (BPE or unigram) learned by the
                  `sentencepiece` package from the training text; line ends are its `</s>`

Besides the interface, each offers what sampling and scoring use (`tokens_of`, `split`,
`to_tokens`, `join`, `unk`, `token`, indexing by a list of tokens), so every tokenizer
samples and scores from a workdir alone: `save` writes one JSON file (the sentencepiece
model inside it, base64) and `load` reads any of them back.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from rnnlm_jax.data.vocab import NEWLINE, Vocab, normalize_text
from rnnlm_jax.files import write_json_atomic

TOKENIZERS = ("char", "word", "byte", "sentencepiece")
MODEL_TYPES = ("bpe", "unigram")


class TokenizerError(ValueError):
    """A tokenizer cannot be trained or read (the message says why)."""


class ByteTokenizer:
    """UTF-8 bytes as tokens: 256 ids, id = the byte's value; no unknown token."""

    token = "byte"
    unk = -1  # every byte has an id
    idx_to_token = [bytes([i]) for i in range(256)]

    def __len__(self) -> int:
        return 256

    @property
    def vocab_size(self) -> int:
        return 256

    def settings(self) -> dict:
        return {"token": "byte"}

    def encode(self, text: str | bytes) -> np.ndarray:
        raw = text if isinstance(text, bytes) else text.encode("utf-8")
        return np.frombuffer(raw, np.uint8).astype(np.int32)

    def decode(self, ids) -> str:
        """The bytes as text (a sequence that is not UTF-8, as a cut through a character
        is, shows U+FFFD)."""
        return bytes(np.asarray(ids, np.uint8).tolist()).decode("utf-8", "replace")

    # What sampling and scoring use.
    def tokens_of(self, text: str) -> list[int]:
        return self.encode(text).tolist()

    def split(self, prefix: str) -> list[int]:
        return list(prefix.encode("utf-8"))

    def __getitem__(self, tokens):
        return list(tokens) if isinstance(tokens, (list, tuple)) else int(tokens)

    def to_tokens(self, ids):
        return [int(i) for i in np.asarray(ids).reshape(-1)]

    def join(self, tokens: Sequence) -> str:
        raw = b"".join(t.encode("utf-8") if isinstance(t, str) else bytes([t]) for t in tokens)
        return raw.decode("utf-8", "replace")

    def to_json(self) -> dict:
        return {"token": "byte"}

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_json())


class SentencePieceTokenizer:
    """Subwords learned by `sentencepiece` (Kudo & Richardson, 2018): `model_type` bpe or
    unigram, `vocab_size` pieces with `<unk>` (id 0) and `</s>` (id 1), the token every line
    end becomes. Train with `train(lines, vocab_size, model_type)`."""

    token = "sentencepiece"

    def __init__(self, model_proto: bytes):
        import sentencepiece as spm

        self.model_proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.eos = self.sp.eos_id()
        self.unk = self.sp.unk_id()

    @classmethod
    def train(
        cls, lines: Iterable[str], vocab_size: int, model_type: str = "unigram"
    ) -> SentencePieceTokenizer:
        """Learns `vocab_size` pieces from `lines` (a bounded sample of the training text:
        sentencepiece holds what it learns from in memory). `TokenizerError` with
        sentencepiece's reason when the text cannot give that many pieces."""
        import sentencepiece as spm

        if model_type not in MODEL_TYPES:
            raise TokenizerError(f"model type {model_type!r} is not one of {MODEL_TYPES}")
        sample = [line for line in lines if line.strip()]
        if not sample:
            raise TokenizerError("the text has no words to learn subwords from")
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(sample),
                model_writer=model,
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=1.0,
                unk_id=0,
                eos_id=1,
                bos_id=-1,
                pad_id=-1,
                max_sentence_length=1 << 20,
                num_threads=2,
                minloglevel=2,
                hard_vocab_limit=True,
            )
        except RuntimeError as e:
            reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            reason = reason.rsplit("] ", 1)[-1]  # sentencepiece's source line and check
            raise TokenizerError(
                f"sentencepiece cannot learn {vocab_size} {model_type} pieces from this "
                f"text ({len(sample):,} lines): {reason}"
            ) from None
        return cls(model.getvalue())

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    @property
    def vocab_size(self) -> int:
        return len(self)

    @property
    def idx_to_token(self) -> list[str]:
        return [self.sp.id_to_piece(i) for i in range(len(self))]

    def settings(self) -> dict:
        model_sha1 = hashlib.sha1(self.model_proto).hexdigest()
        return {"token": "sentencepiece", "vocab_size": len(self), "model_sha1": model_sha1}

    def encode_lines(self, lines: list[str]) -> np.ndarray:
        """Every line's pieces followed by `</s>`, one array."""
        pieces = self.sp.encode(lines, add_eos=True, num_threads=2)
        if not pieces:
            return np.zeros(0, np.int32)
        return np.fromiter(
            (i for row in pieces for i in row), np.int32, sum(len(r) for r in pieces)
        )

    def encode(self, text: str) -> np.ndarray:
        """`text`'s pieces, every line end as `</s>` (the last line only if it ends in
        one)."""
        lines = normalize_text(text).split("\n")
        ends_line = lines[-1] == ""
        if ends_line:
            lines.pop()
        ids = self.encode_lines(lines)
        return ids if ends_line or not len(ids) else ids[:-1]

    def decode(self, ids) -> str:
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        lines, line = [], []
        for i in ids:
            if i == self.eos:
                lines.append(self.sp.decode(line))
                line = []
            else:
                line.append(i)
        return NEWLINE.join([*lines, self.sp.decode(line)])

    # What sampling and scoring use.
    def tokens_of(self, text: str) -> list[str]:
        return self.to_tokens(self.encode(text))

    def split(self, prefix: str) -> list[str]:
        return self.sp.encode(prefix, out_type=str)

    def __getitem__(self, tokens):
        if isinstance(tokens, (list, tuple)):
            return [self[t] for t in tokens]
        return self.sp.piece_to_id(tokens)

    def to_tokens(self, ids):
        return [self.sp.id_to_piece(int(i)) for i in np.asarray(ids).reshape(-1)]

    def join(self, tokens: Sequence[str]) -> str:
        """A prompt (plain text) and pieces as text: `▁` is a space, `</s>` a line end."""
        eos = self.sp.id_to_piece(self.eos)
        return "".join(
            NEWLINE if t == eos else t.replace("\u2581", " ") if i else t
            for i, t in enumerate(tokens)
        )

    def to_json(self) -> dict:
        return {
            "token": "sentencepiece",
            "model": base64.b64encode(self.model_proto).decode("ascii"),
        }

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_json())


def from_json(obj, token: str = "char"):
    """The tokenizer a `save` wrote (`token`: the type of a bare list from the oldest
    vocab files)."""
    if isinstance(obj, dict) and obj.get("token") == "byte":
        return ByteTokenizer()
    if isinstance(obj, dict) and obj.get("token") == "sentencepiece":
        try:
            return SentencePieceTokenizer(base64.b64decode(obj["model"]))
        except (KeyError, ValueError, RuntimeError, TypeError) as e:
            raise ValueError(f"not a sentencepiece model ({type(e).__name__}: {e})") from None
    return Vocab.from_json(obj, token)


def load(path: str | Path, token: str = "char"):
    """Reads any tokenizer `save` wrote. `ValueError` for a malformed file, `OSError` for
    one that cannot be read."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
        return from_json(obj, token)
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ValueError(f"{path} is not a vocab file ({type(e).__name__}: {e})") from None
