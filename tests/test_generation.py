"""Greedy prediction: the book's procedure, deterministic, keeps the prefix."""

import jax.numpy as jnp
import numpy as np
import pytest

from rnnlm_jax import data
from rnnlm_jax.infer.generation import greedy_ids, predict


def test_predict_keeps_prefix_and_is_deterministic(small_lm):
    model, params, vocab = small_lm
    a = predict(model, params, vocab, "time traveller", 30)
    b = predict(model, params, vocab, "time traveller", 30)
    assert a == b and a.startswith("time traveller") and len(a) == 14 + 30


def test_predict_matches_a_per_token_loop(small_lm):
    """The compiled scan equals the book's loop: one token at a time, feeding back the argmax."""
    model, params, vocab = small_lm
    prefix = "the time"
    state = model.begin_state(1)
    outputs = [vocab[prefix[0]]]
    for ch in prefix[1:]:
        _, state = model.apply({"params": params}, jnp.array([[outputs[-1]]]), state)
        outputs.append(vocab[ch])
    for _ in range(20):
        logits, state = model.apply({"params": params}, jnp.array([[outputs[-1]]]), state)
        outputs.append(int(jnp.argmax(logits[-1])))
    expected = "".join(vocab.to_tokens(outputs))
    assert predict(model, params, vocab, prefix, 20) == expected


def test_unknown_characters_map_to_unk(small_lm):
    model, params, vocab = small_lm
    ids = jnp.asarray(vocab[list("time?")], jnp.int32)
    assert int(ids[-1]) == 0
    same = jnp.asarray(vocab[list("time") + ["<unk>"]], jnp.int32)
    np.testing.assert_array_equal(
        greedy_ids(model, params, ids, 5), greedy_ids(model, params, same, 5)
    )
    assert predict(model, params, vocab, "Time!", 3).startswith("Time!")


def test_empty_prefix_is_an_error(small_lm):
    model, params, vocab = small_lm
    with pytest.raises(ValueError, match="prefix"):
        predict(model, params, vocab, "", 5)


def test_zero_predictions_return_the_prefix(small_lm):
    model, params, vocab = small_lm
    assert predict(model, params, vocab, "abc", 0) == "abc"


def test_vocab_roundtrip_for_generation(corpus_vocab):
    _, vocab = corpus_vocab
    rebuilt = data.Vocab.from_tokens_list(vocab.idx_to_token)
    assert rebuilt[list("xyz")] == vocab[list("xyz")]
