"""The committed reference files the tests read (`tests/data/*.npz`, written by scripts in
`benchmarks/` from other projects' own code): a missing or damaged file fails the test
that needs it, saying how to write it again, rather than skipping."""

import zipfile
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parent / "data"


def load(name: str, regenerate: str) -> dict[str, np.ndarray]:
    """The arrays of `tests/data/<name>`; `regenerate`: the command that writes it."""
    try:
        with np.load(DATA / name) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        pytest.fail(f"{name} is missing or damaged ({e}); write it again: {regenerate}")
