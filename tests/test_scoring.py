"""Scoring text (`rnnlm_jax.score`, `--mode=score`), the vocab that knows its tokens, and
imports that stay light."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT
from test_main import run_main

import rnnlm_jax
from rnnlm_jax import data, train
from rnnlm_jax.data.vocab import Vocab
from rnnlm_jax.infer import scoring
from rnnlm_jax.infer.generation import predict
from rnnlm_jax.nn.models import RNNModel


def _excerpt(vocab, text, num_batches=7, num_steps=35):
    """A piece of the book whose tokens are exactly `num_batches * num_steps + 1`."""
    tokens = vocab.tokens_of(text[:20000])
    m = num_batches * num_steps + 1
    start = next(s for s in range(len(tokens)) if tokens[s] != " " and tokens[s + m - 1] != " ")
    return "".join(tokens[start : start + m])


def test_score_matches_training_evaluate(small_lm, text):
    model, params, vocab = small_lm
    piece = _excerpt(vocab, text)
    ids = vocab.encode(piece)
    assert len(ids) == 7 * 35 + 1
    state = train.create_train_state(model, jax.random.key(0), 1.0, 1.0, 1, 35)
    state = state.replace(params=params)
    X, Y = data.eval_batches(ids, 1, 35)
    ev = jax.device_get(train.evaluate(state, X, Y, model.begin_state(1)))
    result = rnnlm_jax.score(model, params, vocab, piece)
    assert result.num_scored == ev["num_tokens"] == 7 * 35
    np.testing.assert_allclose(-result.log_probs.sum(), ev["loss_sum"], rtol=1e-5)
    np.testing.assert_allclose(
        result.perplexity, np.exp(ev["loss_sum"] / ev["num_tokens"]), rtol=1e-5
    )
    np.testing.assert_allclose(result.bits_per_char, np.log2(result.perplexity), rtol=1e-9)


def test_log_probs_are_each_tokens_and_chunks_carry_the_state(small_lm, text):
    model, params, vocab = small_lm
    piece = _excerpt(vocab, text, 1, 40)
    ids = jnp.asarray(vocab.encode(piece))
    whole = scoring.token_log_probs(model, params, ids, chunk=40)
    chunked = scoring.token_log_probs(model, params, ids, chunk=7)  # 6 chunks, padded
    np.testing.assert_allclose(whole, chunked, rtol=1e-5, atol=1e-6)
    logits, _ = model.apply({"params": params}, ids[None, :-1], model.begin_state(1))
    direct = jax.nn.log_softmax(logits)[jnp.arange(40), ids[1:]]
    np.testing.assert_allclose(whole, direct, rtol=1e-5, atol=1e-6)


def test_text_is_cleaned_and_split_as_in_training(small_lm):
    model, params, vocab = small_lm
    a = rnnlm_jax.score(model, params, vocab, "The Time-Traveller, for so it\nwill be")
    # lines are joined with nothing between them, as the book's corpus joins them
    b = rnnlm_jax.score(model, params, vocab, "the time traveller for so itwill be")
    assert a.tokens == b.tokens and a.tokens[:4] == list("the ")
    np.testing.assert_allclose(a.log_probs, b.log_probs)
    with pytest.raises(ValueError, match="at least 2"):
        rnnlm_jax.score(model, params, vocab, "?! a")


def test_word_vocab_scores_and_predicts_words(text):
    _, vocab = data.load_corpus(text, "word", min_freq=3)
    assert vocab.token == "word"
    model = RNNModel(vocab_size=len(vocab), num_hiddens=8)
    params = model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32), model.begin_state(1))
    params = params["params"]
    result = rnnlm_jax.score(model, params, vocab, "The time traveller!")
    assert result.tokens == ["the", "time", "traveller"] and result.num_scored == 2
    assert result.bits_per_char is None
    out = predict(model, params, vocab, "the time", 3)  # no token= needed: the vocab knows
    assert out.startswith("the time ") and len(out.split()) == 5
    with pytest.raises(ValueError, match="word"):
        predict(model, params, vocab, "the time", 3, token="char")


def test_vocab_saves_and_loads_itself(tmp_path, text):
    _, vocab = data.load_corpus(text, "word")
    vocab.save(tmp_path / "vocab.json")
    back = Vocab.load(tmp_path / "vocab.json")
    assert (back.token, back.cleaning, back.idx_to_token) == ("word", "book", vocab.idx_to_token)
    (tmp_path / "old.json").write_text(json.dumps(vocab.idx_to_token))  # the older format
    assert Vocab.load(tmp_path / "old.json", token="word").token == "word"
    (tmp_path / "bad.json").write_text('{"tokens": 3}')
    with pytest.raises(ValueError, match="not a vocab file"):
        Vocab.load(tmp_path / "bad.json")
    raw = Vocab(list("Ab b"), token="char", cleaning="none")
    np.testing.assert_array_equal(raw.encode("Ab"), [raw["A"], raw["b"]])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("score") / "run"
    r = run_main(
        "--config=configs/timemachine.py:smoke", "--config.num_epochs=2", f"--workdir={workdir}"
    )
    assert r.returncode == 0, r.stderr
    return workdir


def test_score_mode_matches_the_library(workdir, tmp_path):
    sentence = "the time traveller for so it will be convenient to speak of him"
    r = run_main(f"--workdir={workdir}", "--mode=score", f"--text={sentence}")
    assert r.returncode == 0, r.stderr
    model, params, vocab, _ = rnnlm_jax.load_trained(workdir)
    expected = rnnlm_jax.score(model, params, vocab, sentence)
    line = r.stdout.strip().splitlines()[-1]
    assert line.startswith(f"perplexity {expected.perplexity:.4f} over {expected.num_scored}")
    assert "bits per character" in line
    path = tmp_path / "text.txt"
    path.write_text(sentence.upper() + "\n")
    r = run_main(f"--workdir={workdir}", "--mode=score", f"--text_file={path}", "--per_token")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[-1] == line and len(lines) == expected.num_scored + 1
    assert lines[0] == f"'h'\t{expected.log_probs[0]:.4f}"


@pytest.mark.parametrize(
    "args, status, message",
    [
        ([], 2, "needs --text=... or --text_file=PATH"),
        (["--text=a", "--text_file=x"], 2, "takes --text or --text_file, not both"),
        (["--text=?"], 2, "at least 2"),
        (["--text_file=/nonexistent/t.txt"], 1, "--text_file /nonexistent/t.txt does not exist"),
    ],
)
def test_score_mode_errors_are_one_line(workdir, args, status, message):
    r = run_main(f"--workdir={workdir}", "--mode=score", *args)
    assert r.returncode == status and r.stdout == ""
    assert r.stderr.startswith("error: ") and message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_score_mode_needs_a_workdir():
    r = run_main("--mode=score", "--text=abc")
    assert r.returncode == 2 and "needs --workdir" in r.stderr


LIGHT = """
import logging, sys
import rnnlm_jax, rnnlm_jax.data, rnnlm_jax.nn.models, rnnlm_jax.train, rnnlm_jax.infer.scoring
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"orbax", "tensorstore", "matplotlib"})
assert not heavy, heavy
rnnlm_jax.RNNModel, rnnlm_jax.score
import rnnlm_jax.train.checkpoints  # orbax now, and with it absl's logging
logging.basicConfig(level=logging.INFO, format="mine: %(message)s")
logging.getLogger("user").info("configured")
"""


def test_imports_are_light_and_leave_logging_alone():
    r = subprocess.run(
        [sys.executable, "-c", LIGHT], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert "mine: configured" in r.stderr


@pytest.mark.parametrize("block", ["stack", "residual"])
def test_window_scoring_is_each_window_scored_alone(block):
    """nanoGPT's protocol: every non-overlapping window from a fresh state, target j seeing
    the window's tokens 0..j only; equal to scoring each window as a text of its own."""
    model = RNNModel(12, cell="mingru" if block == "residual" else "gru", block=block,
                     num_hiddens=8, num_layers=2, initializer="flax")  # fmt: skip
    params = train.create_train_state(model, jax.random.key(0), 1.0, 1.0).params
    ids = jax.random.randint(jax.random.key(1), (3 * 7 + 4,), 0, 12)
    per_window = scoring.window_log_probs(model, params, ids, 7)
    assert per_window.shape == (3, 7)  # the last 3 tokens make no whole window
    for w in range(3):
        alone = scoring.token_log_probs(model, params, ids[7 * w : 7 * w + 8], chunk=7)
        np.testing.assert_allclose(per_window[w], alone, rtol=1e-5, atol=1e-6)
    loss, count = scoring.window_loss(model, params, ids, 7)
    assert count == 21 and loss == pytest.approx(-float(np.mean(per_window)), rel=1e-6)
    # Not the state carried: the same targets scored in one stream differ.
    carried = scoring.token_log_probs(model, params, ids[:22])
    assert float(jnp.abs(carried[7:] - per_window[1:].reshape(-1)).max()) > 1e-4
