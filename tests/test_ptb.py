"""The Penn Treebank job (Zaremba et al. 2014) and other corpora: the reader's facts on the
real files (where `$RNNLM_JAX_DATA_DIR` has them), and on small files in PTB's format that
the tests write: batches, schedule, loss scale, dropout placement, a tiny run, one-line
data errors, word-level sampling, any local text."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import real_data
from test_main import run_main

from configs import ptb as ptb_config
from rnnlm_jax import data, train
from rnnlm_jax.config import fields
from rnnlm_jax.data import corpora
from rnnlm_jax.nn.models import RNNModel

OFFLINE = "http://127.0.0.1:9/ptb.{split}.txt"


def write_ptb_like(folder, words=(20000, 3000, 3000), seed=0):
    """`folder/ptb/ptb.{train,valid,test}.txt` in PTB's format (lower-case words, `<unk>`,
    `N`, each line starting with a space): a Zipf-like vocabulary of 300 words whose next
    word depends on the last one, so a model can learn it. Returns `folder`."""
    rng = np.random.default_rng(seed)
    vocab = ["the", "<unk>", "N", "of", "a"] + [f"w{i}" for i in range(295)]
    p = 1.0 / np.arange(1, len(vocab) + 1)
    p /= p.sum()
    (folder / "ptb").mkdir(parents=True, exist_ok=True)
    for split, n in zip(("train", "valid", "test"), words):
        ids = rng.choice(len(vocab), n, p=p)
        ids[1::2] = (ids[0::2][: len(ids[1::2])] * 7 + 3) % len(vocab)  # a learnable bigram
        lines, i = [], 0
        while i < n:
            k = int(rng.integers(5, 25))
            lines.append(" " + " ".join(vocab[j] for j in ids[i : i + k]) + " ")
            i += k
        (folder / "ptb" / f"ptb.{split}.txt").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def ptb_like(tmp_path_factory):
    return write_ptb_like(tmp_path_factory.mktemp("ptb_like"))


@pytest.fixture(scope="module")
def ptb():
    return corpora.load_ptb(str(real_data("ptb").parent), url=OFFLINE)


def test_reader_on_files_of_ptbs_format(ptb_like):
    words = corpora.load_ptb(str(ptb_like), url=OFFLINE, sha1s={})
    vocab = words.vocab
    assert vocab.token == "word" and vocab.eos and vocab.cleaning == "none"
    first = (ptb_like / "ptb" / "ptb.train.txt").read_text().splitlines()[0].split()
    assert vocab.to_tokens(words.train[: len(first) + 1]) == first + ["<eos>"]
    counts = {w: vocab.to_tokens(words.train.tolist()).count(w) for w in vocab.idx_to_token}
    assert list(counts.values()) == sorted(counts.values(), reverse=True)  # by -count
    lines = len((ptb_like / "ptb" / "ptb.valid.txt").read_text().splitlines())
    assert len(words.valid) == 3000 + lines  # every word and every line end
    # Without sha1s={} they are not PTB's files, and nothing is downloaded in their place.
    with pytest.raises(data.DataError, match="wrong SHA-1"):
        corpora.load_ptb(str(ptb_like), url=OFFLINE)


def test_reader_facts(ptb):
    assert len(ptb.vocab) == 10000
    assert (len(ptb.train), len(ptb.valid), len(ptb.test)) == (929589, 73760, 82430)
    vocab = ptb.vocab
    assert vocab.token == "word" and vocab.eos and vocab.cleaning == "none"
    assert vocab.idx_to_token[:3] == ["the", "<unk>", "<eos>"]  # sorted by (-count, word)
    first = (real_data("ptb") / "ptb.train.txt").read_text().splitlines()[0].split()
    assert vocab.to_tokens(ptb.train[: len(first) + 1]) == first + ["<eos>"]
    assert vocab.unk == vocab["<unk>"] == 1 and vocab["never-seen-word"] == 1


def test_batches_are_the_recipes_and_the_state_carries(ptb_like):
    ids = corpora.load_ptb(str(ptb_like), url=OFFLINE, sha1s={}).valid[:2001]
    B, T = 20, 7
    X, Y = data.epoch_batches(ids, B, T, "sequential", seed=3, epoch=5, random_offset=False)
    batch_len = len(ids) // B
    rows = ids[: B * batch_len].reshape(B, batch_len)
    assert X.shape == ((batch_len - 1) // T, B, T)
    for i in range(X.shape[0]):
        np.testing.assert_array_equal(X[i], rows[:, i * T : (i + 1) * T])
        np.testing.assert_array_equal(Y[i], rows[:, i * T + 1 : (i + 1) * T + 1])
    again = data.epoch_batches(ids, B, T, "sequential", seed=4, epoch=6, random_offset=False)
    np.testing.assert_array_equal(X, again[0])  # from token 0 every epoch
    # Row b of batch i + 1 continues row b of batch i: the carried state stays aligned.
    np.testing.assert_array_equal(X[1][:, 0], Y[0][:, -1])


def test_schedule_values():
    config = ptb_config.get_config("small")
    schedule = train.epoch_decay(config.lr, config.lr_decay, config.decay_after, 10)
    lrs = [float(schedule(epoch * 10 + 3)) for epoch in range(7)]
    np.testing.assert_allclose(lrs, [20, 20, 20, 20, 10, 5, 2.5])
    large = ptb_config.get_config("large")
    schedule = train.epoch_decay(1.0, large.lr_decay, large.decay_after, 1)
    np.testing.assert_allclose(float(schedule(14)), 1 / 1.15, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(12)), 1.0)


def test_mean_loss_with_scaled_lr_and_clip_is_the_summed_loss_step():
    T, B, lr, clip = 5, 4, 1.0, 0.05
    model = RNNModel(50, "lstm", num_hiddens=8, embed_dim=8, initializer="uniform", init_scale=0.1)
    state = train.create_train_state(model, jax.random.key(0), lr * T, clip / T, B, T)
    params = jax.tree.map(jnp.copy, state.params)
    ids = np.random.default_rng(0).integers(0, 50, B * T + 1)
    X = jnp.asarray(ids[: B * T].reshape(B, T), jnp.int32)
    Y = jnp.asarray(ids[1 : B * T + 1].reshape(B, T), jnp.int32)
    state, _, _ = train.train_step(state, model.begin_state(B), X, Y)

    def summed(p):  # the recipe: summed over the T steps, averaged over the batch
        logits, _ = model.apply({"params": p}, X, model.begin_state(B))
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, Y.T.reshape(-1))
        return losses.sum() / B

    tx = train.make_optimizer(lr, clip)
    updates, _ = tx.update(jax.grad(summed)(params), tx.init(params))
    expected = optax.apply_updates(params, updates)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), state.params, expected)


def test_dropout_only_on_embeddings_between_layers_and_outputs():
    model = RNNModel(
        vocab_size=30,
        cell="lstm",
        num_hiddens=6,
        num_layers=2,
        embed_dim=6,
        dropout=0.5,
        embed_dropout=0.5,
        output_dropout=0.5,
    )
    tokens = jnp.ones((3, 4), jnp.int32)
    params = model.init(jax.random.key(0), tokens, model.begin_state(3))
    _, state = model.apply(
        params,
        tokens,
        model.begin_state(3),
        False,
        rngs={"dropout": jax.random.key(1)},
        capture_intermediates=lambda m, _: isinstance(m, nn.Dropout),
    )
    ran = jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]
    places = sorted(jax.tree_util.keystr(path[:-2]) for path, _ in ran)
    assert places == ["['embed_drop']", "['output_drop']", "['rnn']['dropout_1']"]
    # Nothing else is random in training mode (the recurrence has no dropout): with the three
    # rates at zero, a training-mode pass equals the deterministic one.
    deterministic, _ = model.apply(params, tokens, model.begin_state(3))
    with_rates_zero = RNNModel(vocab_size=30, cell="lstm", num_hiddens=6, num_layers=2, embed_dim=6)
    same, _ = with_rates_zero.apply(params, tokens, model.begin_state(3), False)
    np.testing.assert_allclose(deterministic, same, rtol=1e-6)


def smoke_args(folder):
    """The PTB smoke recipe on the PTB-format files in `folder/ptb` (as three text files)."""
    files = ",".join(str(folder / "ptb" / f"ptb.{s}.txt") for s in ("train", "valid", "test"))
    return [
        "--config=configs/ptb.py:smoke",
        "--config.corpus=text",
        f"--config.text_files={files}",
        f"--config.data_url={OFFLINE}",
    ]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, ptb_like):
    """A 3-epoch smoke run: `(workdir, main.py's result)`."""
    workdir = tmp_path_factory.mktemp("ptb") / "run"
    return workdir, run_main(*smoke_args(ptb_like), f"--workdir={workdir}")


def test_tiny_run_validation_falls_and_test_is_reported(tiny_run):
    workdir, r = tiny_run
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3
    assert records[-1]["val_perplexity"] < records[0]["val_perplexity"]
    assert "test_perplexity" in records[-1] and "test_perplexity" not in records[0]
    final = [line for line in r.stdout.splitlines() if line.startswith("perplexity ")]
    assert "validation perplexity" in final[0] and "test perplexity" in final[0]
    best = sorted(p.name for p in (workdir / "best").iterdir())
    assert best == [str(3 * 49)]  # named by minibatch: 49 an epoch
    r = run_main(f"--workdir={workdir}", "--mode=sample", "--prefix=the company", "--num_preds=4")
    assert r.returncode == 0, r.stderr
    words = r.stdout.strip().split(" ")
    assert words[:2] == ["the", "company"] and len(words) == 6


@pytest.mark.parametrize("problem", ["missing", "wrong hash"])
def test_missing_or_wrong_ptb_file_is_one_line_and_status_1(tmp_path, problem):
    write_ptb_like(tmp_path, words=(300, 100, 100))  # PTB's format, not PTB's files
    if problem == "missing":
        (tmp_path / "ptb" / "ptb.valid.txt").unlink()
    else:
        with open(tmp_path / "ptb" / "ptb.valid.txt", "a") as f:
            f.write("x")
    r = run_main(
        "--config=configs/ptb.py:smoke",
        f"--workdir={tmp_path / 'run'}",
        f"--config.data_dir={tmp_path}",
        f"--config.data_url={OFFLINE}",
    )
    assert r.returncode == 1 and r.stderr.startswith("error: ")
    assert len(r.stderr.strip().splitlines()) == 1
    found = "is missing" if problem == "missing" else "has the wrong SHA-1"
    assert f"ptb.valid.txt {found}" in r.stderr and "ptb.train.txt" in r.stderr
    assert not (tmp_path / "run").exists()


def test_a_failed_ptb_lookup_leaves_no_empty_folder(tmp_path):
    with pytest.raises(data.DataError, match="ptb.train.txt is missing"):
        corpora.load_ptb(str(tmp_path / "data"), url=OFFLINE)
    assert not (tmp_path / "data").exists()
    (tmp_path / "mine").mkdir()
    with pytest.raises(data.DataError):
        corpora.load_ptb(str(tmp_path / "mine"), url=OFFLINE)
    assert list((tmp_path / "mine").iterdir()) == []  # the folder was there: it stays


def test_any_text_corpus(tmp_path):
    text = "One fish, two fish.\nRed fish; blue fish.\n" * 200
    path = tmp_path / "fish.txt"
    path.write_text(text)
    config = ptb_config.get_config("smoke")
    config.corpus, config.text_files = "text", str(path)
    config.valid_fraction, config.test_fraction = 0.1, 0.1
    words = corpora.load(fields.fill_defaults(config))
    assert words.vocab.token == "word" and words.vocab.cleaning == "none"
    assert words.vocab.to_tokens(words.train[:5]) == ["One", "fish,", "two", "fish.", "<eos>"]
    n = len(text.replace("\n", " <eos> ").split())
    assert len(words.train) + len(words.valid) + len(words.test) == n
    assert len(words.test) == int(n * 0.1)
    config.token = "char"
    chars = corpora.load(fields.fill_defaults(config))
    assert chars.vocab.to_tokens(chars.train[:20]) == list("One fish, two fish.\n")
    config.cleaning = "book"
    booked = corpora.load(fields.fill_defaults(config))
    assert booked.vocab.to_tokens(booked.train[:16]) == list("one fish two fis")


def test_tied_embeddings_share_the_head_kernel():
    model = RNNModel(30, "lstm", num_hiddens=6, embed_dim=6, tie_embeddings=True)
    tokens = jnp.ones((2, 3), jnp.int32)
    params = model.init(jax.random.key(0), tokens, model.begin_state(2))["params"]
    assert "dense" not in params and params["head_bias"].shape == (30,)
    logits, _ = model.apply({"params": params}, tokens, model.begin_state(2))
    assert logits.shape == (6, 30)
    grads = jax.grad(lambda p: model.apply({"params": p}, tokens, model.begin_state(2))[0].sum())(
        params
    )
    assert float(jnp.abs(grads["embed"]["embedding"]).sum()) > 0
    with pytest.raises(ValueError, match="embed_dim == num_hiddens"):
        RNNModel(30, num_hiddens=6, embed_dim=4, tie_embeddings=True).init(
            jax.random.key(0), tokens, model.begin_state(2)
        )
