"""The README's research-code examples run as written."""

import re

from conftest import ROOT


def _python_block(containing: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    (block,) = [b for b in blocks if containing in b]
    return block


def test_bidirectional_tagger_example_trains():
    code = _python_block("class Tagger")
    assert len(code.strip().splitlines()) < 20
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    first = float(
        scope["loss"](scope["model"].init(scope["jax"].random.key(1), scope["x"], scope["lengths"]))
    )
    assert float(scope["loss"](scope["params"])) < 0.1 * first
