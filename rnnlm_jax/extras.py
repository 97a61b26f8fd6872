"""The optional dependencies and the extra that installs each: imported where used, never by
`import rnnlm_jax`; a missing one is named with its `pip install` line."""

from __future__ import annotations

import importlib.util

EXTRAS = {  # module -> the extra of pyproject.toml that installs it
    "matplotlib": "plot",
    "submitit": "cluster",
    "tensorboardX": "tensorboard",
}


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message says how to install it."""


def available(module: str) -> bool:
    """Whether the optional `module` can be imported."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules, as tests do
        return False


def install_hint(module: str) -> str:
    extra = EXTRAS[module]
    return f"pip install 'rnnlm_jax[{extra}]' (or pip install {module})"


def require(module: str, extra: str, what: str) -> None:
    """`MissingExtra` unless `module` is installed: `what` needs it."""
    assert EXTRAS[module] == extra
    if not available(module):
        raise MissingExtra(f"{what} needs {module}: {install_hint(module)}")
