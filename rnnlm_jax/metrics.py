"""Run records in the workdir: per-epoch metrics as JSON lines and the perplexity plot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class JsonlWriter:
    """Writes one JSON object per line to `path`, flushed after each record.

    `append=False` starts a new file; `append=True` continues an existing one.
    """

    def __init__(self, path: Path, append: bool = False):
        self._file = open(path, "a" if append else "w")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_perplexity(
    history: Sequence[dict[str, Any]], path: Path, keys: Sequence[str] = ("perplexity",)
) -> None:
    """Saves the book's Animator plot: x epoch, y perplexity, one line per key ("train", ...)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"perplexity": "train", "val_perplexity": "val"}
    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=120)
    epochs = [r["epoch"] for r in history]
    for key in keys:
        ax.plot(epochs, [r[key] for r in history], label=labels.get(key, key))
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity")
    ax.set_xlim(1, max(epochs[-1], 2))
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
