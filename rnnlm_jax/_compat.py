"""The module paths of the release before the package was split into layers
(`rnnlm_jax.training`, `rnnlm_jax.generation`, ...), kept importable for one release: each
imports its new module and warns (`DeprecationWarning`) with the name to use instead.

`import rnnlm_jax` installs the finder; nothing here is imported by the package's own code.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings

PACKAGE = "rnnlm_jax"

# The old module -> its replacement (0.1.0's flat layout -> the layered one).
MOVED = {
    "app": "run.app",
    "checkpoints": "train.checkpoints",
    "cli": "run.cli",
    "configuration": "config.checks",
    "corpora": "data.corpora",
    "experiment": "jobs.lm",
    "fast_layers": "nn.fast_layers",
    "fields": "config.fields",
    "generation": "infer.generation",
    "head": "nn.head",
    "initializers": "nn.initializers",
    "layer": "nn.layer",
    "metrics": "train.metrics",
    "models": "nn.models",
    "parallel": "train.parallel",
    "population": "jobs.population",
    "preemption": "train.preemption",
    "recurrences": "nn.recurrences",
    "scoring": "infer.scoring",
    "sine": "jobs.sine",
    "sources": "data.sources",
    "sweeps": "run.sweeps",
    "training": "train",
    "vocab": "data.vocab",
    "workdir": "train.workdir",
}


class _Alias(types.ModuleType):
    """The old module: every attribute read from the new one."""

    def __init__(self, name: str, target: types.ModuleType):
        super().__init__(name, target.__doc__)
        self.__dict__["_target"] = target

    def __getattr__(self, attr):
        return getattr(self._target, attr)

    def __dir__(self):
        return dir(self._target)


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, new: str):
        self.new = new

    def create_module(self, spec):
        warnings.warn(
            f"{spec.name} is deprecated and will be removed in the next release: import "
            f"{self.new} instead",
            DeprecationWarning,
            stacklevel=2,  # warnings skips importlib's own frames: the importing line
        )
        return _Alias(spec.name, importlib.import_module(self.new))

    def exec_module(self, module):
        pass


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Finds `rnnlm_jax.<old>` for every old name in `MOVED`."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.partition(".")
        if package != PACKAGE or name not in MOVED:
            return None
        new = f"{PACKAGE}.{MOVED[name]}"
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new))


def install() -> None:
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
