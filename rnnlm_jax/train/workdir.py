"""A run's workdir: checking that it can be one, and holding it so that one run at a time
writes there.

Two advisory locks (`fcntl.flock`, which the kernel releases when a process dies, kill -9
included, so a dead run never blocks the next one):
  .lock             held by the training run for its whole life; it also names the holder
                    (pid and host) for the one-line refusal a second run gets.
  .checkpoint.lock  held exclusively while a checkpoint is saved and old ones deleted, and
                    shared by a reader (`--mode=sample` / `score`) while it restores one,
                    so a reader never sees a checkpoint being written or deleted. A reader
                    never creates it (reading changes nothing in the workdir).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import time
from pathlib import Path

RUN_LOCK = ".lock"
CHECKPOINT_LOCK = ".checkpoint.lock"
CHECKPOINT_TURN = ".checkpoint.turn"  # a reader waiting for CHECKPOINT_LOCK holds it
# Entries of a workdir that runs write; none may be a symbolic link (writes stay inside).
WRITTEN = (
    "config.json",
    "vocab.json",
    "metrics.jsonl",
    "perplexity.png",
    "checkpoints",
    "best",
    RUN_LOCK,
    CHECKPOINT_LOCK,
    CHECKPOINT_TURN,
)


class WorkdirError(ValueError):
    """`--workdir` names something that cannot be a workdir (a bad value: exit status 2)."""


class WorkdirInUse(Exception):
    """Another process holds the workdir (exit status 1); the message names it."""


def resolve(workdir: str | Path) -> Path:
    """`workdir` with `~` expanded (a flag's value reaches us unexpanded)."""
    return Path(os.path.expanduser(str(workdir)))


def check(workdir: Path) -> None:
    """Raises `WorkdirError` unless `workdir` is a folder, or can become one, that this
    process may write in, and none of the entries runs write there is a symbolic link."""
    if workdir.exists() and not workdir.is_dir():
        raise WorkdirError(f"--workdir={workdir} exists and is not a folder")
    resolved = workdir.resolve()
    if resolved.parts[1:2] in (("proc",), ("sys",)):  # kernel views, not folders for files
        raise WorkdirError(
            f"--workdir={workdir} is inside /{resolved.parts[1]}, not a folder for files"
        )
    existing = next((p for p in (workdir, *workdir.parents) if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise WorkdirError(f"--workdir={workdir}: cannot create or write in {existing}")
    for name in WRITTEN:
        if (workdir / name).is_symlink():
            raise WorkdirError(
                f"{workdir / name} is a symbolic link; runs write only inside their workdir "
                "(remove the link or use another --workdir)"
            )


def make(workdir: Path) -> None:
    """Creates `workdir` (and its parents), one line for what stops it."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WorkdirError(f"cannot create --workdir={workdir}: {e.strerror or e}") from None


def _holder(path: Path) -> str:
    try:
        words = path.read_text().split()
    except OSError:
        words = []
    if len(words) >= 2:
        return f"pid {words[0]} on host {words[1]}"
    return "another process"


def _lock(path: Path, mode: int, timeout: float = 0.0, create: bool = True) -> int | None:
    """An open file descriptor of `path` locked with `mode` (LOCK_EX / LOCK_SH), or None if
    another process holds it past `timeout` seconds. The lock file is made if missing
    (`create`; else `FileNotFoundError`)."""
    deadline = time.monotonic() + timeout
    while True:
        flags = os.O_NOFOLLOW | (os.O_RDWR | os.O_CREAT if create else os.O_RDONLY)
        fd = os.open(path, flags, 0o666)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)
            continue
        # The holder before us may have removed the file after we opened it: then this
        # lock is on a file nobody else will see; take the one now at `path`.
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextlib.contextmanager
def hold(workdir: Path, enabled: bool = True):
    """Holds `workdir` for a training run (process 0 of a multi-process run: `enabled` is
    False on the others); raises `WorkdirInUse` naming the holder if another run has it."""
    if not enabled:
        yield
        return
    path = workdir / RUN_LOCK
    fd = _lock(path, fcntl.LOCK_EX)
    if fd is None:
        raise WorkdirInUse(
            f"{workdir} is in use by another run ({_holder(path)}); wait for it to end or use "
            "another --workdir"
        )
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _lock_unless_absent(path: Path, mode: int, timeout: float, shared: bool) -> int | None:
    """`_lock(path, ...)`, a writer making the file; a reader finding no file gets -1
    (nothing to wait for)."""
    try:
        return _lock(path, mode, timeout, create=not shared)
    except (FileNotFoundError, PermissionError):
        if not shared:
            raise
        return -1


@contextlib.contextmanager
def checkpoint_lock(workdir: Path, shared: bool, timeout: float = 30.0):
    """Held while a checkpoint is saved (exclusive) or read (`shared`); a reader waits up to
    `timeout` seconds for a save in flight, then raises `WorkdirInUse`.

    Readers and writers first pass a turnstile (`CHECKPOINT_TURN`, held only until the lock
    is taken), so a reader waiting for a save in flight comes before the next save: a run
    that saves back to back does not keep a sampler out."""
    deadline = time.monotonic() + timeout
    # A reader makes no file: none there means no run has ever saved here (or, for the
    # turnstile, a workdir of an earlier version: the lock alone).
    turn = _lock_unless_absent(workdir / CHECKPOINT_TURN, fcntl.LOCK_EX, timeout, shared)
    try:
        fd = None
        if turn is not None:
            left = max(deadline - time.monotonic(), 0.0)
            mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
            fd = _lock_unless_absent(workdir / CHECKPOINT_LOCK, mode, left, shared)
    finally:
        if turn is not None and turn >= 0:
            os.close(turn)
    if fd is None:
        raise WorkdirInUse(
            f"a checkpoint is being saved in {workdir} by {_holder(workdir / RUN_LOCK)} for "
            f"over {timeout:.0f} s; try again"
        )
    try:
        yield
    finally:
        if fd >= 0:
            os.close(fd)
