"""The clipped-SGD step, the epoch loop and a short run on the real text."""

import json
import logging
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import timemachine
from rnnlm_jax import data, train
from rnnlm_jax.jobs import lm as experiment
from rnnlm_jax.nn.models import RNNModel


def _setup(lr=1.0, clip=1.0, hidden=32, batch=4, steps=5, vocab=28):
    model = RNNModel(vocab_size=vocab, num_hiddens=hidden)
    state = train.create_train_state(model, jax.random.key(0), lr, clip, batch, steps)
    rng = np.random.default_rng(0)
    X = rng.integers(0, vocab, (batch, steps), dtype=np.int32)
    Y = rng.integers(0, vocab, (batch, steps), dtype=np.int32)
    return model, state, X, Y


def test_step_changes_every_parameter_and_reports_metrics():
    model, state, X, Y = _setup()
    before = jax.tree.map(np.array, state.params)
    state, carry, m = train.train_step(state, model.begin_state(4), X, Y)
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), before, state.params)
    assert all(jax.tree.leaves(changed))
    assert int(state.step) == 1 and carry.shape == (1, 4, 32)
    assert float(m["num_tokens"]) == 20
    # The summed loss of a near-uniform model is about T*B*log(V).
    assert abs(float(m["loss_sum"]) - 20 * math.log(28)) < 0.5


def test_clipping_bounds_the_update():
    clip = 1e-3
    model, state, X, Y = _setup(lr=1.0, clip=clip)
    before = jax.tree.map(np.array, state.params)
    state, _, m = train.train_step(state, model.begin_state(4), X, Y)
    update = optax.tree.norm(jax.tree.map(lambda a, b: a - b, state.params, before))
    assert float(m["grad_norm"]) > 10 * clip  # the gradient really was clipped ...
    np.testing.assert_allclose(float(update), clip, rtol=1e-3)  # ... to norm `clip`


def test_no_clipping_below_the_threshold():
    model, state, X, Y = _setup(lr=0.1, clip=1e6)
    before = jax.tree.map(np.array, state.params)
    state, _, m = train.train_step(state, model.begin_state(4), X, Y)
    update = optax.tree.norm(jax.tree.map(lambda a, b: a - b, state.params, before))
    np.testing.assert_allclose(float(update), 0.1 * float(m["grad_norm"]), rtol=1e-4)


def test_carry_gradient_is_stopped():
    """The step's gradient does not depend on how the incoming carry was computed."""
    model, state, X, Y = _setup()
    carry = jnp.full((1, 4, 32), 0.3)
    g1 = jax.grad(lambda p: train.loss_fn(p, model.apply, jax.lax.stop_gradient(carry), X, Y)[0])(
        state.params
    )
    _, _, m = train.train_step(state, carry, X, Y)
    np.testing.assert_allclose(float(m["grad_norm"]), float(optax.tree.norm(g1)), rtol=1e-5)


@pytest.mark.parametrize("steps_per_chunk", [0, 3])
def test_the_chunk_program_compiles_once_over_a_run(tmp_path, steps_per_chunk):
    """A whole `train_and_evaluate` run compiles the chunk program once (no recompiles): the
    smoke config's epoch is one chunk, or chunks of 3, 3 and 1 minibatches, the last padded
    to 3 (`train_chunk`'s `steps`). Counted as XLA compilations of the package's own jitted
    `train_chunk` (JAX's compile log), so its own static and donated arguments are tested."""
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    jax_logger = logging.getLogger("jax")  # its own handlers: the records need not propagate
    jax.clear_caches()
    config = timemachine.get_config("smoke")
    config.num_epochs, config.steps_per_chunk = 5, steps_per_chunk
    jax_logger.addHandler(handler)
    jax.config.update("jax_log_compiles", True)  # global: the run loop compiles in a thread
    try:
        result = experiment.train_and_evaluate(config, str(tmp_path))
    finally:
        jax.config.update("jax_log_compiles", False)
        jax_logger.removeHandler(handler)
    assert int(result["state"].step) == 5 * 7
    compiled = [r for r in records
                if "Finished XLA compilation of jit(_train_chunk)" in r.getMessage()]  # fmt: skip
    assert len(compiled) == 1, len(compiled)


def test_a_padded_chunk_trains_only_its_first_steps(corpus_vocab):
    """`train_chunk(..., steps=k)` over N minibatches equals the plain chunk over the first
    k: the same parameters, optimizer state, carry and metrics; the rest is never read."""
    corpus, vocab = corpus_vocab
    model = RNNModel(vocab_size=len(vocab), num_hiddens=16)
    X_all, Y_all = data.epoch_batches(corpus, 4, 10, "sequential", 0, 0)
    X_all, Y_all = jnp.asarray(X_all[:5]), jnp.asarray(Y_all[:5])
    begin = model.begin_state(4)
    noise = X_all.at[3:].set(0)  # padding: it would change the result if it were trained on
    results = []
    for X, steps in ((X_all[:3], None), (noise, np.int32(3))):
        s = train.create_train_state(model, jax.random.key(0), 1.0, 1.0, 4, 10)
        results.append(train.train_chunk(s, begin, X, Y_all[: X.shape[0]], begin, False,
                                         state_reset=0.3, steps=steps))  # fmt: skip
    (s1, c1, m1), (s2, c2, m2) = results
    assert int(s1.step) == int(s2.step) == 3
    for a, b in zip(jax.tree.leaves((s1.params, s1.opt_state, c1, m1)),
                    jax.tree.leaves((s2.params, s2.opt_state, c2, m2))):  # fmt: skip
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_train_step_compiles_once_in_a_loop(corpus_vocab, monkeypatch):
    traces = []

    def counted(*args):
        traces.append(1)
        return train._train_step(*args)

    step = jax.jit(counted, donate_argnums=0)
    corpus, vocab = corpus_vocab
    model = RNNModel(vocab_size=len(vocab), num_hiddens=24)
    state = train.create_train_state(model, jax.random.key(1), 1.0, 1.0, 16, 11)
    for epoch in range(2):
        X_all, Y_all = data.epoch_batches(corpus, 16, 11, "sequential", 0, epoch)
        carry = model.begin_state(16)
        for X, Y in zip(X_all, Y_all):
            state, carry, _ = step(state, carry, X, Y)
    assert len(traces) == 1


@pytest.mark.parametrize("partition", ["sequential", "random"])
def test_epoch_program_equals_the_per_step_loop(corpus_vocab, partition):
    """`train_epoch` (one compiled scan) and a loop of `train_step` give the same parameters."""
    corpus, vocab = corpus_vocab
    model = RNNModel(vocab_size=len(vocab), num_hiddens=32)
    s1 = train.create_train_state(model, jax.random.key(0), 1.0, 1.0, 8, 10)
    s2 = train.create_train_state(model, jax.random.key(0), 1.0, 1.0, 8, 10)
    reset = partition == "random"
    for epoch in range(2):
        X_all, Y_all = data.epoch_batches(corpus, 8, 10, partition, 0, epoch)
        s1, m = train.train_epoch(s1, X_all, Y_all, model.begin_state(8), reset)
        carry, loss_sum = model.begin_state(8), 0.0
        for X, Y in zip(X_all, Y_all):
            if reset:
                carry = model.begin_state(8)
            s2, carry, step_metrics = train.train_step(s2, carry, X, Y)
            loss_sum += float(step_metrics["loss_sum"])
        np.testing.assert_allclose(float(m["loss_sum"]), loss_sum, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), s1.params, s2.params)


def test_state_reset_zeroes_random_rows_and_the_chunk_equals_the_step_loop(corpus_vocab):
    """`state_reset=p`: before each minibatch each row's carried state is the zero state
    with probability p (drawn from the key and step), else the state carried; the compiled
    chunk and a loop of `train_step` after `reset_rows` agree."""
    from rnnlm_jax.train.step import reset_rows

    corpus, vocab = corpus_vocab
    model = RNNModel(vocab_size=len(vocab), num_hiddens=32)
    s1 = train.create_train_state(model, jax.random.key(0), 1.0, 1.0, 8, 10)
    s2 = train.create_train_state(model, jax.random.key(0), 1.0, 1.0, 8, 10)
    X_all, Y_all = data.epoch_batches(corpus, 8, 10, "sequential", 0, 0)
    begin = model.begin_state(8)
    s1, carry1, m = train.train_chunk(s1, begin, X_all, Y_all, begin, False, state_reset=0.5)
    carry, loss_sum, resets = begin, 0.0, []
    for i, (X, Y) in enumerate(zip(X_all, Y_all)):
        new = np.asarray(reset_rows(s2, carry, begin, 0.5))
        zero = np.all(new == 0, axis=(0, 2))
        kept = np.all(new == np.asarray(carry), axis=(0, 2))
        assert np.all(zero | kept)  # a row is either reset or carried whole
        if i:  # (the first minibatch starts from zeros anyway)
            resets.extend(zero)
        s2, carry, step_metrics = train.train_step(s2, jnp.asarray(new), X, Y)
        loss_sum += float(step_metrics["loss_sum"])
    assert 0.3 < np.mean(resets) < 0.7, np.mean(resets)  # about half of the rows
    np.testing.assert_allclose(float(m["loss_sum"]), loss_sum, rtol=1e-5)
    np.testing.assert_allclose(carry1, carry, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), s1.params, s2.params)
    # The same key and step draw the same rows: a resumed run resets the same ones.
    a, b = (np.asarray(reset_rows(s2, carry, begin, 0.5)) for _ in range(2))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["lstm pair", "conv window"])
def test_state_reset_draws_its_rows_from_the_key_and_step_for_every_state(kind):
    """The rows `reset_rows` resets at step t are `bernoulli(fold_in(fold_in(dropout key,
    RESET_STREAM), t), p)`, written here from the spec, not from the code: they change with
    the step, and every leaf of a row (the LSTM's (c, h); a residual block's state and its
    convolution window) is reset together to the begin state, which need not be zeros."""
    from rnnlm_jax.train.step import RESET_STREAM, reset_rows

    if kind == "lstm pair":
        model = RNNModel(vocab_size=11, cell="lstm", num_hiddens=8)
    else:
        model = RNNModel(vocab_size=11, cell="mingru", block="residual", conv_width=4,
                         num_hiddens=8, num_layers=2)  # fmt: skip
    B = 16
    state = train.create_train_state(model, jax.random.key(3), 1.0, 1.0, B, 5)
    begin = jax.tree.map(lambda s: s - 2.0, model.begin_state(B))  # not zeros
    carry = jax.tree.map(lambda s: s + jnp.arange(1.0, B + 1.0).reshape(1, B, *[1] * (s.ndim - 2)),
                         model.begin_state(B))  # fmt: skip
    key = jax.random.fold_in(jax.random.wrap_key_data(state.dropout_key), RESET_STREAM)
    patterns = []
    for t in range(6):
        at = state.replace(step=t)
        want = np.asarray(jax.random.bernoulli(jax.random.fold_in(key, t), 0.5, (B,)))
        got = reset_rows(at, carry, begin, 0.5)
        for new, kept, start in zip(jax.tree.leaves(got), jax.tree.leaves(carry),
                                    jax.tree.leaves(begin)):  # fmt: skip
            rows = np.moveaxis(np.asarray(new), 1, 0).reshape(B, -1)
            np.testing.assert_array_equal(rows[want], np.moveaxis(np.asarray(start), 1, 0)
                                          .reshape(B, -1)[want])  # fmt: skip
            np.testing.assert_array_equal(rows[~want], np.moveaxis(np.asarray(kept), 1, 0)
                                          .reshape(B, -1)[~want])  # fmt: skip
        patterns.append(tuple(want))
    assert len(set(patterns)) > 1  # the step is in the key


def test_state_reset_through_main_changes_training_and_resumes_alike(tmp_path):
    """`--config.state_reset` reaches the run: its loss differs from the run without, and
    a run stopped and resumed ends as the uninterrupted one (the rows come from the key and
    step alone)."""
    from test_sweeps import run_main

    smoke = ("--config=configs/timemachine.py:smoke", "--config.num_epochs=4",
             "--config.checkpoint_every_epochs=1")  # fmt: skip
    runs = {}
    for name, extra in [("plain", ()), ("reset", ("--config.state_reset=0.5",))]:
        r = run_main(*smoke, *extra, f"--workdir={tmp_path / name}")
        assert r.returncode == 0, r.stderr
        runs[name] = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text()
                      .splitlines()]  # fmt: skip
    resumed = tmp_path / "resumed"
    r = run_main(
        *smoke, "--config.state_reset=0.5", "--config.num_epochs=2", f"--workdir={resumed}"
    )
    assert r.returncode == 0, r.stderr
    r = run_main(*smoke, "--config.state_reset=0.5", f"--workdir={resumed}")
    assert r.returncode == 0, r.stderr
    last = [json.loads(x) for x in (resumed / "metrics.jsonl").read_text().splitlines()]
    key = "train_perplexity" if "train_perplexity" in runs["plain"][-1] else "train_loss"
    assert runs["plain"][-1][key] != runs["reset"][-1][key]
    assert abs(last[-1][key] - runs["reset"][-1][key]) < 1e-5 * abs(runs["reset"][-1][key])


def test_state_reset_needs_sequential_partitioning():
    from rnnlm_jax.config import checks, fields

    config = fields.defaults()
    config.state_reset, config.partition = 0.25, "random"
    with pytest.raises(checks.ConfigError, match="state_reset"):
        checks.validate(config)
    config.partition = "sequential"
    checks.validate(config)
    config.state_reset = 1.0  # every row, every minibatch: that is partition=random
    with pytest.raises(checks.ConfigError, match="state_reset"):
        checks.validate(config)


def test_short_run_learns_the_text(corpus_vocab):
    corpus, vocab = corpus_vocab
    model = RNNModel(vocab_size=len(vocab), num_hiddens=256)
    state = train.create_train_state(model, jax.random.key(0), 1.0, 1.0, 32, 35)
    for epoch in range(30):
        X, Y = data.epoch_batches(corpus, 32, 35, "sequential", 0, epoch)
        state, m = train.train_epoch(state, X, Y, model.begin_state(32), False)
    perplexity = math.exp(m["loss_sum"] / m["num_tokens"])
    assert perplexity < 12, perplexity  # chance is 28; the book's curve is near 10 here
