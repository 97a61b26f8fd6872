"""The README's research-code examples run as written."""

import re

from conftest import ROOT


def _python_block(containing: str, page: str = "README.md") -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), re.S)
    (block,) = [b for b in blocks if containing in b]
    return block


def test_the_readme_custom_lm_trains_samples_and_scores(capsys):
    code = _python_block("class CharLM")
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    continuation, perplexity = capsys.readouterr().out.splitlines()[-2:]
    assert continuation.startswith("time traveller") and len(continuation) == 14 + 30
    assert 1 < float(perplexity) < 12  # an untrained model: about 28
    m, vocab = scope["m"], scope["vocab"]
    assert float(m["loss_sum"] / m["num_tokens"]) < 2.5  # perplexity < 12 (untrained: 28)
    from rnnlm_jax.infer import generation

    samples = generation.sample(
        scope["model"], scope["state"].params, vocab, "the ", 20, temperature=1.0, num_samples=3
    )
    assert len(samples) == 3 and all(len(s) == 24 for s in samples)


def test_the_tagger_example_trains():
    code = _python_block("class Tagger", "docs/api.md")
    assert len(code.strip().splitlines()) < 20
    scope = {}
    exec(compile(code, "docs/api.md", "exec"), scope)
    first = float(
        scope["loss"](scope["model"].init(scope["jax"].random.key(1), scope["x"], scope["lengths"]))
    )
    assert float(scope["loss"](scope["params"])) < 0.1 * first
