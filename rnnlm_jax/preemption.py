"""SIGTERM / SIGINT as a request to stop: the training loop checks it between epochs, saves a
checkpoint and exits cleanly instead of dying mid-save."""

from __future__ import annotations

import signal
import threading


class StopRequest:
    """Context manager: while active, SIGTERM and SIGINT set `signal_name` instead of killing.

    Outside the main thread (where Python cannot install handlers) it does nothing.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signal_name: str | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
