"""A text file read in blocks, never whole: raw bytes for byte tokens, or UTF-8 text cut
at a character (or word, or line) boundary, with a leading byte-order mark dropped and CRLF
and CR line ends read as `\\n`, as `rnnlm_jax.data.vocab.normalize_text` reads a whole text.

Memory is one block (plus the vocab of the one who counts), whatever the file's size.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from rnnlm_jax.data.sources import DataError

BLOCK_BYTES = 16 << 20


def check_file(path: Path, what: str = "text file") -> int:
    """The size of `path`; `DataError` (one line) if it is missing, a folder or empty."""
    if not path.exists():
        raise DataError(f"{what} {path} does not exist")
    if not path.is_file():
        raise DataError(f"{what} {path} is not a file")
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{what} {path} is empty")
    return size


def byte_blocks(
    path: Path, start: int = 0, end: int | None = None, block: int = BLOCK_BYTES
) -> Iterator[bytes]:
    """The bytes `start:end` of `path`, in blocks."""
    end = path.stat().st_size if end is None else end
    try:
        with open(path, "rb") as f:
            f.seek(start)
            pos = start
            while pos < end:
                data = f.read(min(block, end - pos))
                if not data:
                    raise DataError(
                        f"{path} ended at byte {pos:,}, before the {end:,} it should hold"
                    )
                pos += len(data)
                yield data
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None


def _char_cut(data: bytes) -> int:
    """Where a block may be cut without splitting a UTF-8 character (or a CRLF pair)."""
    cut = len(data)
    # Step back over continuation bytes (10xxxxxx) to the start of the last character,
    # which may be incomplete: it goes to the next block.
    k = cut - 1
    while k >= 0 and cut - k <= 4 and (data[k] & 0xC0) == 0x80:
        k -= 1
    if k >= 0 and data[k] >= 0xC0:
        need = 2 if data[k] < 0xE0 else 3 if data[k] < 0xF0 else 4
        if cut - k < need:
            cut = k
    if cut and data[cut - 1 : cut] == b"\r":
        cut -= 1  # a CR may be half of a CRLF
    return cut


def text_blocks(
    path: Path,
    start: int = 0,
    end: int | None = None,
    block: int = BLOCK_BYTES,
    cut_at: str = "char",
    what: str = "text file",
) -> Iterator[str]:
    """The UTF-8 text of bytes `start:end` of `path` in blocks cut at a character (`cut_at=
    "char"`), at whitespace (`"word"`: no word is split) or after a line end (`"line"`,
    whitespace where a line is longer than a block). `DataError` naming the byte for text
    that is not UTF-8 or holds NUL bytes (a binary file)."""
    carry = b""
    first = True
    pos = start  # the file offset of carry's first byte
    for data in byte_blocks(path, start, end, block):
        data = carry + data
        if first:
            if data.startswith(b"\xef\xbb\xbf"):
                data, pos = data[3:], pos + 3
            first = False
        cut = _char_cut(data)
        if cut_at in ("word", "line"):
            last = data.rfind(b"\n", 0, cut) + 1
            if cut_at == "word" or not last:
                last = max(last, max(data.rfind(s, 0, cut) for s in (b" ", b"\t", b"\n")) + 1)
            if last:
                cut = last
            elif len(data) > 4 * block:
                raise DataError(
                    f"{what} {path} holds {len(data):,} bytes from byte {pos:,} with no space "
                    "or line end: is it text of words?"
                )
            else:
                cut = 0
        carry = data[cut:]
        yield _decode(data[:cut], path, pos, what)
        pos += cut
    if carry:
        yield _decode(carry, path, pos, what)


def _decode(data: bytes, path: Path, pos: int, what: str) -> str:
    if b"\0" in data:
        at = pos + data.index(b"\0")
        raise DataError(f"{what} {path} looks binary (a NUL byte at byte {at:,}), not text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{what} {path} is not UTF-8 text (byte {pos + e.start:,}: "
            f"{data[e.start : e.start + 1]!r}); use token=byte for raw bytes, or convert it, "
            "e.g. iconv -f latin1 -t utf-8"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def free_bytes(folder: Path) -> int | None:
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize
