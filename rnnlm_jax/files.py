"""Writing files so that a reader never sees half of one and nothing outside the folder is
touched: a temporary file beside the target (created with the user's umask), then a rename.

A rename replaces whatever was at the target, a symbolic link included, so no write goes
through a link to a file elsewhere.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def umask() -> int:
    """The process's umask (read without changing it where /proc says it; else set back)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Writes `data` to a temporary file beside `path`, then renames it over `path`.

    The file gets the permissions an ordinary `open(path, "w")` would (0666 less the umask),
    not `mkstemp`'s 0600. If the write fails (e.g. a full disk), `path` is as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Writes `obj` as indented JSON, atomically (`write_bytes_atomic`)."""
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def open_append(path: str | Path):
    """`path` opened for appending text, refusing to follow a symbolic link (`OSError`)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    return os.fdopen(fd, "a")
