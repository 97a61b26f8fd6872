"""Run records in the workdir: per-epoch metrics as JSON lines and TensorBoard events, a
per-chunk progress record for long epochs, the plot of a run's curves, and a progress line."""

from __future__ import annotations

import io
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rnnlm_jax import extras
from rnnlm_jax.files import open_append, write_bytes_atomic, write_text_atomic

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
PROGRESS_FILE = "progress.jsonl"  # one record per chunk of a long epoch
MAX_LOSS = math.log(sys.float_info.max)  # about 709.8 nats: the largest loss with a perplexity


# The keys of the release before flax's naming, still written beside the new ones for one
# release (readers of metrics.jsonl, the summary and the plots take either):
# new key -> old key.
LEGACY = {
    "train_loss": "loss",
    "train_perplexity": "perplexity",
    "eval_perplexity": "val_perplexity",
}
LEGACY_KEYS = tuple(LEGACY.values())


def perplexity(loss: float) -> float:
    """`exp(loss)`, inf where that overflows a float (a diverged loss)."""
    return math.exp(loss) if loss < MAX_LOSS else math.inf


def loss_record(prefix: str, loss: float) -> dict[str, float]:
    """flax's naming for a mean loss in nats per token: `<prefix>_loss`, `_perplexity` and
    `_bits_per_token` (bits per character for a character model)."""
    return {
        f"{prefix}_loss": loss,
        f"{prefix}_perplexity": perplexity(loss),
        f"{prefix}_bits_per_token": loss / math.log(2),
    }


def with_legacy_keys(record: dict[str, Any]) -> dict[str, Any]:
    """`record` with the old names of its new keys too (`perplexity`, `val_perplexity`,
    `loss`), for readers of the previous release's metrics.jsonl; removed next release."""
    return {**record, **{old: record[new] for new, old in LEGACY.items() if new in record}}


def value(record: dict[str, Any], key: str, default=None):
    """`record[key]`, or its old name's value in a record written before flax's naming
    (`eval_perplexity` -> `val_perplexity`, ...), or `default`."""
    if key in record:
        return record[key]
    return record.get(LEGACY.get(key, ""), default)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file ([] if there is no file). A line that is not a JSON
    record (a torn last line after kill -9, or damage) is reported on stderr and skipped; the
    records after it are still read."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
                raise ValueError("not a record with an epoch")
        except ValueError:
            if line.strip():
                log.warning(f"{path} line {number} is not a JSON record; skipped it")
            continue
        records.append(record)
    return records


STEP_KIND = "kind"  # the key that marks a mid-epoch evaluation's record


class MetricsLogger:
    """Appends each epoch's record to `metrics.jsonl` and to TensorBoard event files (every
    number in it but the epoch, as a scalar), and each chunk's record of a long epoch to
    `progress.jsonl`.

    On a resumed run, records written after the checkpoint that is resumed from (epochs
    after `start_epoch`, chunks after `resume_step`) are dropped, so each appears once. With
    `write=False` (processes other than 0 of a multi-process run) it only keeps the history
    in memory.
    """

    def __init__(
        self, workdir: Path, start_epoch: int = 0, write: bool = True, resume_step: int = 0
    ):
        path = Path(workdir) / METRICS_FILE
        kept = [
            r
            for r in read_jsonl(path)
            if (r["step"] <= resume_step if r.get(STEP_KIND) else r["epoch"] <= start_epoch)
        ]
        # The epochs' records; the evaluations every eval_every_steps stay in the file.
        self.history = [r for r in kept if not r.get(STEP_KIND)]
        self._file = self._tb = self._progress = None
        if write:
            # A new file (atomically; never through a link), then appended to.
            write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
            self._file = open_append(path)
            if extras.usable("tensorboardX", "TensorBoard events (metrics.jsonl has them all)"):
                from tensorboardX import SummaryWriter  # event files without TensorFlow

                purge = self.history[-1].get("step", 0) + 1 if self.history else 1
                self._tb = SummaryWriter(logdir=str(workdir), purge_step=purge, flush_secs=10)
            progress = Path(workdir) / PROGRESS_FILE
            if progress.exists():
                kept = [r for r in read_jsonl(progress) if r.get("step", 0) <= resume_step]
                write_text_atomic(progress, "".join(json.dumps(r) + "\n" for r in kept))
            self._progress_path = progress

    def write(self, record: dict[str, Any]) -> None:
        """Appends an epoch's record; TensorBoard gets its numbers at its `step` (the
        minibatches trained so far; the epoch for a record without one), all but the keys
        `LEGACY_KEYS` repeats."""
        self.history.append(record)
        if self._file:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        if self._tb:
            x = record.get("step", record["epoch"])
            for key, value in record.items():
                number = isinstance(value, (int, float)) and not isinstance(value, bool)
                if number and key not in ("epoch", "step", *LEGACY_KEYS):
                    self._tb.add_scalar(key, value, x)

    def write_step(self, record: dict[str, Any]) -> None:
        """Appends a mid-epoch evaluation's record (`epoch`: the epochs completed, `step`)
        to `metrics.jsonl`, marked `"kind": "step"`, and its numbers to TensorBoard."""
        record = {**record, STEP_KIND: "step"}
        if self._file:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        if self._tb:
            for key, value in record.items():
                number = isinstance(value, (int, float)) and not isinstance(value, bool)
                if number and key not in ("epoch", "step", *LEGACY_KEYS):
                    self._tb.add_scalar(key, value, record["step"])

    def write_progress(self, record: dict[str, Any]) -> None:
        """Appends a chunk's record (it holds `epoch`, `step` and `position`)."""
        if self._file:
            if self._progress is None:
                self._progress = open_append(self._progress_path)
            self._progress.write(json.dumps(record) + "\n")
            self._progress.flush()

    def write_text(self, tag: str, text: str, step: int) -> None:
        if self._tb:
            self._tb.add_text(tag, text, step)

    def close(self) -> None:
        if self._file:
            self._file.close()
        if self._tb:
            self._tb.close()
        if self._progress:
            self._progress.close()


class Progress:
    """A progress line (epoch, perplexity, tokens/sec, time left) at most every `seconds`."""

    def __init__(self, num_epochs: int, seconds: float = 2.0):
        self.num_epochs, self.seconds = num_epochs, seconds
        self.start = self.last = time.perf_counter()
        self.epochs_done = 0

    def update(self, record: dict[str, Any]) -> None:
        self.epochs_done += 1
        now = time.perf_counter()
        if now - self.last < self.seconds:
            return
        self.last = now
        left = (now - self.start) / self.epochs_done * (self.num_epochs - record["epoch"])
        shown = (
            f"perplexity {value(record, 'train_perplexity'):.2f}, "
            f"{record['tokens_per_sec']:,.0f} tokens/sec, "
            if value(record, "train_perplexity") is not None and "tokens_per_sec" in record
            else ""
        )
        log.info(f"[{record['epoch']}/{self.num_epochs}] {shown}{_duration(left)} left")

    def update_chunk(self, epoch: int, position: int, steps: int, record: dict):
        """A line within a long epoch (0-based `epoch`, `position` of `steps` minibatches)."""
        now = time.perf_counter()
        if now - self.last < self.seconds:
            return
        self.last = now
        shown = "".join(
            f", {k.replace('_per_', '/').replace('_', ' ')} "
            + (f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}")
            for k, v in record.items()
            if k != "seconds" and isinstance(v, (int, float))
        )
        log.info(f"[{epoch + 1}/{self.num_epochs}] step {position}/{steps}{shown}")


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table: a header of `columns`, then one line per row of cells (as str)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
    seconds = math.ceil(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def plot(
    history: Sequence[dict[str, Any]],
    path: Path,
    keys: Sequence[str] = ("train_perplexity",),
    ylabel: str = "perplexity",
) -> None:
    """Saves the book's Animator plot: x epoch, y `ylabel`, one line per key ("train", ...;
    records of the previous release's names are read too). Without matplotlib (the `plot`
    extra) it warns and draws nothing."""
    if not extras.usable("matplotlib", f"the plot {path.name}"):
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"train_perplexity": "train", "eval_perplexity": "val", "test_perplexity": "test"}
    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=120)
    epochs = [r["epoch"] for r in history]
    for key in keys:  # a key only some records have (the test's, at the end) is a marker
        points = [(r["epoch"], value(r, key)) for r in history if value(r, key) is not None]
        style = "o" if len(points) < len(history) else "-"
        ax.plot(*zip(*points), style, label=labels.get(key, key))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_xlim(1, max(epochs[-1], 2))
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    write_bytes_atomic(path, png.getvalue())
