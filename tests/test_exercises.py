"""The section's exercises and their neighbours, smoke-sized: every variant, validation,
dropout between layers, sampling beyond greedy, word level, the autoregressive sine model."""

import json
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT

from configs import sine as sine_config
from configs import timemachine
from rnnlm_jax import data
from rnnlm_jax.infer.generation import predict, sample
from rnnlm_jax.jobs import lm as experiment
from rnnlm_jax.jobs import sine
from rnnlm_jax.nn.models import RNNLayer


@pytest.mark.parametrize(
    "variant", ["val", "overfit", "deep", "word", "random", "gru", "lstm", "deep_lstm"]
)
def test_every_variant_trains(variant, tmp_path):
    config = timemachine.get_config(f"{variant},smoke")
    result = experiment.train_and_evaluate(config, str(tmp_path))
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == config.num_epochs
    assert records[-1]["perplexity"] < records[0]["perplexity"]
    assert ("val_perplexity" in records[-1]) == (config.num_val > 0)
    if config.num_val:
        assert np.isfinite(result["val_perplexity"])
    assert (tmp_path / "perplexity.png").is_file()


def test_variants_set_what_they_promise():
    assert timemachine.get_config("deep").num_layers == 2
    overfit = timemachine.get_config("overfit")
    assert overfit.num_val > 0 and overfit.num_hiddens > 256 and overfit.max_tokens < 10000
    word = timemachine.get_config("word")
    assert word.token == "word" and word.min_freq > 1
    assert timemachine.get_config("random").partition == "random"
    seed = timemachine.get_config()
    assert seed.num_val == 0 and seed.dropout == 0.0 and seed.partition == "sequential"
    with pytest.raises(ValueError, match="unknown variant"):
        timemachine.get_config("nope")


def test_chapter9_variants_use_their_recipes():
    """Section 9.1-9.3 as the README's chapter 9 table runs them (book: lr 1, lr 2 for the
    2-layer LSTM, 500 epochs, the seed's data and clipping)."""
    recipes = {
        "gru": ("gru", 1, 1.0, "pytorch"),
        "lstm": ("lstm", 1, 1.0, "flax"),
        "deep_lstm": ("lstm", 2, 2.0, "flax"),
    }
    seed = timemachine.get_config()
    for variant, (cell, layers, lr, init) in recipes.items():
        c = timemachine.get_config(variant)
        assert (c.cell, c.num_layers, c.lr, c.initializer) == (cell, layers, lr, init)
        assert (c.num_epochs, c.clip, c.num_hiddens, c.batch_size, c.num_steps) == (
            seed.num_epochs,
            seed.clip,
            seed.num_hiddens,
            seed.batch_size,
            seed.num_steps,
        )


def test_word_model_speaks_words(tmp_path):
    config = timemachine.get_config("word,smoke")
    result = experiment.train_and_evaluate(config, str(tmp_path))
    vocab = result["vocab"]
    assert 100 < len(vocab) < 4580  # min_freq 3 drops the rare words
    text = result["continuations"][0]
    words = text.split()
    assert words[:3] == ["the", "time", "traveller"] and len(words) == 3 + config.num_preds
    assert all(w in vocab.token_to_idx for w in words)


def test_validation_perplexity_is_held_out(tmp_path, corpus_vocab):
    config = timemachine.get_config("val,smoke")
    loaded = experiment.load_data(config)
    train, val = loaded.train, loaded.valid
    assert len(train) == config.max_tokens and len(val) == config.num_val
    full = data.load_corpus(data.find_time_machine().read_text(), "char", config.max_tokens + 50)[0]
    np.testing.assert_array_equal(val[:50], full[config.max_tokens :])


def test_dropout_masks_differ_per_layer_and_time_step():
    layer = RNNLayer(num_hiddens=64, num_layers=3, vocab_size=10, dropout=0.5)
    ids = jnp.ones((6, 4), jnp.int32)  # [T, B]
    params = layer.init(jax.random.key(0), ids, layer.begin_state(4))
    _, state = layer.apply(
        params,
        ids,
        layer.begin_state(4),
        deterministic=False,
        rngs={"dropout": jax.random.key(1)},
        capture_intermediates=lambda mdl, _: isinstance(mdl, nn.Dropout),
        mutable=["intermediates"],
    )
    inter = state["intermediates"]
    m1 = inter["dropout_1"]["__call__"][0] == 0  # [T, B, H] masks (tanh outputs are non-zero)
    m2 = inter["dropout_2"]["__call__"][0] == 0
    assert 0.3 < float(m1.mean()) < 0.7
    assert not jnp.array_equal(m1[0], m1[1])  # another mask at every time step
    assert not jnp.array_equal(m1, m2)  # and in every layer
    # Deterministic (evaluation, generation) ignores dropout.
    out_a, _ = layer.apply(params, ids, layer.begin_state(4))
    out_b, _ = layer.apply(params, ids, layer.begin_state(4), deterministic=True)
    np.testing.assert_array_equal(out_a, out_b)


def test_sampling_is_seeded_batched_and_greedy_by_default(small_lm):
    model, params, vocab = small_lm
    greedy = predict(model, params, vocab, "time", 20)
    assert sample(model, params, vocab, "time", 20, temperature=0.0) == [greedy]
    assert sample(model, params, vocab, "time", 20, top_k=1, seed=5) == [greedy]
    a = sample(model, params, vocab, "time", 20, temperature=1.0, seed=1, num_samples=4)
    b = sample(model, params, vocab, "time", 20, temperature=1.0, seed=1, num_samples=4)
    c = sample(model, params, vocab, "time", 20, temperature=1.0, seed=2, num_samples=4)
    assert a == b and a != c and len(a) == 4 and len(set(a)) > 1
    # 20 tokens each (an untrained model may pick <unk>, which prints as five characters).
    assert all(s.startswith("time") and len(s.replace("<unk>", "?")) == 24 for s in a)


def test_top_k_only_draws_the_k_likeliest(small_lm):
    model, params, vocab = small_lm
    prefix = "the time"
    logits, _ = model.apply(
        {"params": params}, jnp.asarray([vocab[list(prefix)]]), model.begin_state(1)
    )
    allowed = set(np.argsort(np.asarray(logits[-1]))[-3:].tolist())
    firsts = sample(model, params, vocab, prefix, 1, temperature=5.0, top_k=3, num_samples=64)
    assert {vocab[s[-1]] for s in firsts} <= allowed


def test_sampling_from_a_workdir(tmp_path):
    workdir = tmp_path / "run"
    args = [sys.executable, str(ROOT / "main.py")]
    r = subprocess.run(
        args + ["--config=configs/timemachine.py:smoke", f"--workdir={workdir}"],
        cwd=ROOT,
        capture_output=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        args
        + [f"--workdir={workdir}", "--mode=sample", "--temperature=1", "--num_samples=3"]
        + ["--prefix=the", "--num_preds=15", "--top_k=5"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.rstrip("\n").split("\n")
    assert len(lines) == 3 and all(x.startswith("the") and len(x) == 18 for x in lines)


def test_sine_series_and_embedding_are_the_books():
    t, x = sine.make_series(1000, 0.2, 0)
    assert t[0] == 1 and t[-1] == 1000 and x.shape == (1000,)
    assert 0.03 < float(np.var(x - np.sin(0.01 * t))) < 0.05  # noise of std 0.2
    features, labels = sine.embed(x, 4)
    assert features.shape == (996, 4) and labels.shape == (996,)
    np.testing.assert_array_equal(features[10], x[10:14])
    assert labels[10] == x[14]


def test_k_step_predictions_of_a_perfect_predictor_are_exact():
    x = np.arange(100, dtype=np.float32)

    def predict(windows):  # knows the series: the next value is the last + 1
        return windows[:, -1] + 1

    table = sine.k_step_predictions(predict, x, tau=4, max_steps=16)
    for k in (1, 4, 16):
        col = table[:, 4 + k - 1]
        np.testing.assert_array_equal(col, x[4 + k - 1 : 4 + k - 1 + len(col)])
    free = sine.multistep_predictions(predict, x, tau=4, n_train=50)
    np.testing.assert_array_equal(free, x)


def test_sine_exercise_runs_from_main(tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--config=configs/sine.py:smoke"]
        + [f"--workdir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    results = json.loads((tmp_path / "sine_results.json").read_text())
    config = sine_config.get_config("smoke")
    for name in ("mlp", "rnn"):
        assert set(results[name]["k_step_mse"]) == {str(k) for k in config.k_steps}
        # It learned the curve: within twice the noise's variance (predicting the series'
        # mean scores its variance, about 0.54).
        assert results[name]["onestep_mse"] < 2 * config.noise**2
    assert (tmp_path / "sine_predictions.png").is_file() and (
        tmp_path / "sine_k_step.png"
    ).is_file()
    assert "mlp" in r.stdout and "rnn" in r.stdout
