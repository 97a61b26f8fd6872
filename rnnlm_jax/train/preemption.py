"""SIGTERM / SIGINT as a request to stop: the run loop checks it between chunks of
minibatches, saves a checkpoint and exits cleanly instead of dying mid-save. Before there is
anything to save (loading, compilation and the first chunk of a process) a signal stops the
process at once."""

from __future__ import annotations

import os
import signal
import sys
import threading

# Exit status after a signal stopped the run (with its checkpoint saved, or nothing to save).
EXIT_STATUS = {"SIGTERM": 0, "SIGINT": 130}


class StopRequest:
    """Context manager: while active, SIGTERM and SIGINT set `signal_name` instead of killing.

    Until `arm()` is called (the first chunk has trained: there is something to save), a
    signal exits the process at once, even while the main thread is inside a long XLA
    compilation, where Python would run its handler only once the compiler returns: the
    signal's wake-up byte reaches a watcher thread that exits for it.

    Outside the main thread (where Python cannot install handlers) it does nothing.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signal_name: str | None = None
        self._armed = False
        self._previous = {}
        self._previous_fd = None
        self._write_fd = None

    def arm(self) -> None:
        """From now on a signal is a request to save and stop after the current chunk."""
        self._armed = True

    def _handle(self, signum, frame):
        self.signal_name = signal.Signals(signum).name
        if not self._armed:
            self._exit_now(signum)

    def _exit_now(self, signum: int) -> None:
        name = signal.Signals(signum).name
        print(
            f"stopped by {name} before the first chunk of training ended: nothing to save",
            flush=True,
        )
        sys.stderr.flush()
        os._exit(EXIT_STATUS[name])

    def _watch(self, read_fd: int) -> None:
        while data := os.read(read_fd, 16):
            for signum in data:
                if signum in self.SIGNALS and not self._armed:
                    self._exit_now(signum)
        os.close(read_fd)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
            read_fd, self._write_fd = os.pipe()
            os.set_blocking(self._write_fd, False)
            self._previous_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
            threading.Thread(target=self._watch, args=(read_fd,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        if self._write_fd is not None:
            signal.set_wakeup_fd(self._previous_fd)
            os.close(self._write_fd)  # the watcher reads the end of the pipe and stops
            self._write_fd = None
