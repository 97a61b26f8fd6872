"""The optional dependencies and the extra that installs each: imported where used, never by
`import rnnlm_jax`; a missing one is named with its `pip install` line."""

from __future__ import annotations

import importlib.util
import logging

log = logging.getLogger(__name__)

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
    return f"pip install 'rnnlm_jax[{EXTRAS[module]}]' (or pip install {module})"


def usable(module: str, what: str) -> bool:
    """Whether the optional `module` is installed; if not, warns that `what` is skipped and
    which extra installs it (a run goes on without its optional output)."""
    if available(module):
        return True
    log.warning(f"{what} skipped: {install_hint(module)}")
    return False


def require(module: str, what: str) -> None:
    """`MissingExtra` unless `module` is installed: `what` needs it."""
    if not available(module):
        raise MissingExtra(f"{what} needs {module}: {install_hint(module)}")
