"""Language models of the new cells: residual blocks (the LSTM's and Griffin's), the
optimizers a config picks, and configs/shakespeare.py end to end on a small file."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_main import run_main

from rnnlm_jax import train
from rnnlm_jax.config import checks, fields
from rnnlm_jax.config.checks import ConfigError
from rnnlm_jax.infer.generation import greedy_ids
from rnnlm_jax.jobs.lm import check_compatible
from rnnlm_jax.nn.layer import RNNLayer
from rnnlm_jax.nn.models import RNNModel

V = 11


def _model(cell, **kw):
    kw = {"mlp_expansion": 2, **kw}
    return RNNModel(V, cell=cell, block="residual", num_hiddens=16, num_layers=2,
                    num_heads=2, initializer="flax", **kw)  # fmt: skip


@pytest.mark.parametrize(
    "cell, conv_width", [("lstm", 0), ("rglru", 0), ("minlstm", 0), ("mingru", 4), ("lstm", 2)]
)
def test_residual_model_carries_its_state_and_samples(cell, conv_width):
    """Two halves with the state carried give the whole sequence's logits and state
    (Griffin's and `conv_width`'s: the convolution's window too); sampling one token at a
    time agrees."""
    model = _model(cell, conv_width=conv_width)
    tokens = jax.random.randint(jax.random.key(0), (3, 12), 0, V)
    begin = model.begin_state(3)
    params = model.init(jax.random.key(1), tokens, begin)["params"]
    apply = jax.jit(model.apply)
    logits, state = apply({"params": params}, tokens, begin)
    l1, s1 = apply({"params": params}, tokens[:, :5], begin)
    l2, s2 = apply({"params": params}, tokens[:, 5:], s1)
    whole = logits.reshape(12, 3, V)
    np.testing.assert_allclose(l1.reshape(5, 3, V), whole[:5], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(l2.reshape(7, 3, V), whole[5:], rtol=1e-4, atol=1e-5)
    for a, b in zip(jax.tree.leaves(s2), jax.tree.leaves(state)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # greedy generation (prefix in one scan, then one token at a time) == argmax by hand
    prefix = tokens[0, :4]
    out = np.asarray(greedy_ids(model, params, prefix, 5)).reshape(-1)
    lg, s = apply({"params": params}, prefix[None], model.begin_state(1))
    seq = [int(jnp.argmax(lg[-1]))]
    for _ in range(4):
        lg, s = apply({"params": params}, jnp.asarray([[seq[-1]]]), s)
        seq.append(int(jnp.argmax(lg[-1])))
    assert list(out) == seq


def test_residual_lstm_block_is_prenorm_recurrence_then_gated_mlp():
    """Block 0 of a residual LSTM, recomputed from its parameters by hand."""
    model = _model("lstm", mlp_expansion=3)
    tokens = jax.random.randint(jax.random.key(0), (2, 6), 0, V)
    params = model.init(jax.random.key(1), tokens, model.begin_state(2))["params"]
    p = params["block_0"]
    x = params["embed"]["embedding"][tokens.T]  # [T, B, H]

    def rms(x, scale):
        return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6) * scale

    rnn = RNNLayer(cell="lstm", num_hiddens=16, initializer="flax")
    h, _ = rnn.apply({"params": p["recurrence"]}, rms(x, p["temporal_norm"]["scale"]))
    x = x + h
    m = rms(x, p["mlp_norm"]["scale"])
    up = m @ p["mlp"]["up"]["kernel"] + p["mlp"]["up"]["bias"]
    gate, lin = jnp.split(up, 2, axis=-1)
    assert gate.shape[-1] == 3 * 16
    x = x + (jax.nn.gelu(gate) * lin) @ p["mlp"]["down"]["kernel"] + p["mlp"]["down"]["bias"]
    ours = model.apply({"params": params}, tokens, model.begin_state(2),
                       method=lambda m, t, s: m.blocks[0](m.embed(t.T), jax.tree.map(
                           lambda a: a[0], s))[0])  # fmt: skip
    np.testing.assert_allclose(ours, x, rtol=1e-4, atol=1e-5)
    assert set(params) >= {"embed", "block_0", "block_1", "final_norm", "dense"}


def test_conv_width_adds_a_causal_convolution_to_the_recurrences_input():
    """Block 0 of a residual minGRU with `conv_width` 3, by hand: u = RMSNorm(x), the
    recurrence reads u + (b + sum_j w[j] u_{t-2+j}) with zeros before the start, then the
    MLP as without it; the window carried is the last two u; the weights are drawn as
    PyTorch's Conv1d draws them."""
    model = _model("mingru", conv_width=3)
    tokens = jax.random.randint(jax.random.key(0), (2, 7), 0, V)
    begin = model.begin_state(2)
    assert [a.shape for a in jax.tree.leaves(begin)] == [(2, 2, 16), (2, 2, 2, 16)]
    params = model.init(jax.random.key(1), tokens, begin)["params"]
    w = np.asarray(params["block_0"]["conv_1d"]["w"])
    assert w.shape == (3, 16) and np.abs(w).max() <= 1 / np.sqrt(3)
    assert np.abs(w).max() > 0.8 / np.sqrt(3) and abs(w.mean()) < 0.15  # uniform +-1/sqrt(3)
    params["block_0"]["conv_1d"]["b"] += 0.1  # a bias that is not zero, too
    p = params["block_0"]

    def rms(x, scale):
        return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6) * scale

    x = params["embed"]["embedding"][tokens.T]  # [T, B, H]
    u = rms(x, p["temporal_norm"]["scale"])
    padded = np.concatenate([np.zeros((2,) + u.shape[1:]), np.asarray(u)])
    conv = p["conv_1d"]["b"] + sum(padded[j : j + 7] * w[j] for j in range(3))
    rnn = RNNLayer(cell="mingru", num_hiddens=16, initializer="flax")
    h, _ = rnn.apply({"params": p["recurrence"]}, jnp.asarray(u + conv, jnp.float32))
    x = x + h
    gate, lin = jnp.split(rms(x, p["mlp_norm"]["scale"]) @ p["mlp"]["up"]["kernel"]
                          + p["mlp"]["up"]["bias"], 2, axis=-1)  # fmt: skip
    x = x + (jax.nn.gelu(gate) * lin) @ p["mlp"]["down"]["kernel"] + p["mlp"]["down"]["bias"]
    ours, (_, window) = model.apply(
        {"params": params}, tokens, begin,
        method=lambda m, t, s: m.blocks[0](m.embed(t.T), jax.tree.map(lambda a: a[0], s)),
    )  # fmt: skip
    np.testing.assert_allclose(ours, x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.swapaxes(window, 0, 1), u[-2:], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "changes, words",
    [({"cell": "gla"}, ("conv_width=4", "gla", "already")),
     ({"cell": "rglru"}, ("conv_width=4", "rglru")),
     ({"block": "stack"}, ("conv_width=4", "block='residual'")),
     ({"cell": "mlstm", "block": "xlstm"}, ("conv_width=4", "block='residual'")),
     ({"conv_width": -1}, ("conv_width",))],
)  # fmt: skip
def test_conv_width_where_it_does_not_fit_is_refused_naming_the_field(changes, words):
    config = fields.defaults()
    config.update({"cell": "mingru", "block": "residual", "conv_width": 4, **changes})
    with pytest.raises(ConfigError) as e:
        checks.validate(config)
    assert str(e.value).count("\n") == 0 and all(w in str(e.value) for w in words), e.value
    with pytest.raises(ValueError, match="conv_width"):  # the model says so itself
        RNNModel(V, cell=config.cell, block=config.block, conv_width=config.conv_width,
                 num_hiddens=16).init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32),
                                      None)  # fmt: skip


def test_a_checkpoint_of_another_conv_width_is_not_resumed():
    saved = fields.defaults()
    saved.update({"cell": "mingru", "block": "residual"})
    new = fields.defaults()
    new.update({"cell": "mingru", "block": "residual", "conv_width": 4})
    with pytest.raises(ConfigError, match="conv_width 0 .checkpoint. vs 4"):
        check_compatible(saved, new)


def test_griffin_block_has_recurrentgemmas_branches():
    model = _model("rglru")
    params = model.init(jax.random.key(1), jnp.zeros((2, 4), jnp.int32), model.begin_state(2))
    rec = params["params"]["block_0"]["recurrence"]
    assert set(rec) == {"linear_y", "linear_x", "conv_1d", "rg_lru", "linear_out"}
    assert rec["conv_1d"]["w"].shape == (4, 16)
    state = model.begin_state(2)
    assert [a.shape for a in jax.tree.leaves(state)] == [(2, 2, 16), (2, 2, 3, 16)]


# --- optimizers ---------------------------------------------------------------------------


def _config(**kw):
    config = fields.defaults()
    config.update({"batch_size": 4, "num_steps": 8, "num_epochs": 1, **kw})
    return config


OPTIMIZER_CASES = [
    dict(optimizer="sgd", lr=0.5, weight_decay=1e-2, warmup_steps=2, lr_schedule="linear"),
    dict(optimizer="adam", lr=1e-2, lr_schedule="cosine", warmup_steps=2),
    dict(optimizer="adam", lr=1e-2, weight_decay=0.1),
    dict(optimizer="adamw", lr=1e-2, weight_decay=0.1, lr_schedule="cosine", clip=0.5),
    dict(optimizer="adam", lr=1e-2, lr_decay=0.5, decay_after=1),
]


def _expected_decay(path, leaf) -> bool:
    """Weight decay by role, written out independently of `train.step`: weight matrices
    (kernels, embeddings, the RG-LRU's block-diagonal gate weights, the LRU's B and C and a
    matrix D) decay; biases (`bias`, the gates' `b`), norms' scales, per-unit recurrence
    parameters and Griffin's depthwise Conv1D do not."""
    names = [getattr(k, "key", k) for k in path]
    name, parent = names[-1], names[-2]
    if parent == "conv_1d":
        return False
    if name == "w":
        return parent in ("a_gate", "input_gate")
    if name == "D":
        return leaf.ndim == 2
    return name in ("kernel", "embedding", "B_re", "B_im", "C_re", "C_im")


def _every_model():
    for cell in ("rnn", "gru", "lstm", "mingru", "minlstm", "rglru", "lru"):
        yield RNNModel(V, cell=cell, num_hiddens=16, num_layers=2, embed_dim=8, num_heads=2)
        yield _model(cell)
    yield _model("mingru", conv_width=4)  # its convolution, like Griffin's, does not decay


def test_weight_decay_is_decided_by_role_in_every_cell_and_block():
    seen = set()
    for model in _every_model():
        params = train.create_train_state(model, jax.random.key(0), 1.0, 1.0, 2, 3).params
        mask = train.step._decayed(params)
        for (path, leaf), decays in zip(jax.tree_util.tree_leaves_with_path(params),
                                        jax.tree.leaves(mask)):  # fmt: skip
            where = f"{model.cell}/{model.block}{jax.tree_util.keystr(path)}"
            assert decays == _expected_decay(path, leaf), where
            seen.add((path[-2].key if len(path) > 1 else "", path[-1].key, decays))
    # The cases the rank alone decides wrongly are among those checked.
    assert ("a_gate", "b", False) in seen and ("conv_1d", "w", False) in seen
    assert ("a_gate", "w", True) in seen


@pytest.mark.parametrize("kw", OPTIMIZER_CASES, ids=lambda kw: "-".join(map(str, kw.values())))
def test_each_optimizer_is_optax_own_composition(kw):
    """The first updates of the optimizer a config describes equal optax's composition of
    the same pieces, written here: clipping, the schedule, the optimizer, weight decay with
    the mask by role (on Griffin's block, where the mask matters)."""
    config = _config(cell="rglru", block="residual", num_hiddens=16, initializer="flax", **kw)
    model = _model("rglru")
    steps_per_epoch = 4
    params = train.create_train_state(model, jax.random.key(0), 1.0, 1.0, 2, 3).params
    mask = jax.tree_util.tree_map_with_path(_expected_decay, params)
    c = train.step.lr_schedule(config, steps_per_epoch)  # checked on its own below
    wd, b1, b2 = config.weight_decay, config.beta1, config.beta2
    decay = [optax.add_decayed_weights(wd, mask=mask)] if wd else []
    if config.optimizer == "sgd":
        inner = optax.chain(*decay, optax.sgd(c))
    elif config.optimizer == "adam":
        inner = optax.chain(*decay, optax.adam(c, b1, b2))
    else:
        inner = optax.adamw(c, b1, b2, weight_decay=wd, mask=mask)
    expected = optax.chain(optax.clip_by_global_norm(config.clip), inner)
    ours = train.config_optimizer(config, steps_per_epoch)
    s_ours, s_exp = ours.init(params), expected.init(params)
    for i in range(6):  # across the warmup and the first decays
        grads = jax.tree.map(
            lambda p, i=i: jnp.sin(p * (i + 1) + 0.3) * (1.0 + i), params
        )  # dense, varying gradients of a norm above the clip
        u_ours, s_ours = ours.update(grads, s_ours, params)
        u_exp, s_exp = expected.update(grads, s_exp, params)
        for a, b in zip(jax.tree.leaves(u_ours), jax.tree.leaves(u_exp)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
        params = optax.apply_updates(params, u_ours)


def test_schedules_warm_up_and_decay_to_their_final_fraction():
    for kind in ("cosine", "linear"):
        c = _config(lr=2.0, warmup_steps=10, lr_schedule=kind, final_lr_fraction=0.1,
                    num_epochs=2)  # fmt: skip
        sched = train.step.lr_schedule(c, steps_per_epoch=50)  # 100 steps in all
        assert float(sched(0)) == 0.0 and float(sched(5)) == pytest.approx(1.0)
        assert float(sched(10)) == pytest.approx(2.0)
        assert float(sched(100)) == pytest.approx(0.2, rel=1e-4)
        assert 0.2 < float(sched(55)) < 2.0
    c = _config(lr=1.0, warmup_steps=4, lr_decay=0.5, decay_after=1)
    sched = train.step.lr_schedule(c, steps_per_epoch=10)
    assert [float(sched(t)) for t in (2, 9, 10, 25)] == pytest.approx([0.5, 1.0, 0.5, 0.25])


def test_weight_decay_touches_matrices_only_and_the_book_optimizer_is_unchanged():
    params = {"kernel": jnp.ones((3, 2)), "bias": jnp.ones((2,))}
    zeros = jax.tree.map(jnp.zeros_like, params)
    for name in ("sgd", "adam", "adamw"):
        tx = train.config_optimizer(_config(optimizer=name, lr=0.1, weight_decay=0.5))
        updates, _ = tx.update(zeros, tx.init(params), params)
        assert float(jnp.abs(updates["bias"]).max()) == 0.0
        assert float(updates["kernel"][0, 0]) < 0.0, name
    book = train.config_optimizer(fields.defaults())
    ref = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(1.0))
    grads = jax.tree.map(lambda p: 3.0 * p, params)
    assert jax.tree.structure(book.init(params)) == jax.tree.structure(ref.init(params))
    a, _ = book.update(grads, book.init(params), params)
    b, _ = ref.update(grads, ref.init(params), params)
    assert jax.tree.all(jax.tree.map(lambda x, y: bool(jnp.all(x == y)), a, b))


# --- configs/shakespeare.py ---------------------------------------------------------------


@pytest.fixture(scope="module")
def plays(tmp_path_factory):
    path = tmp_path_factory.mktemp("plays") / "input.txt"
    lines = ["ROMEO:", "But, soft! what light through yonder window breaks?", "",
             "JULIET:", "O Romeo, Romeo! wherefore art thou Romeo?", ""]  # fmt: skip
    path.write_text("\n".join(lines * 60))
    return path


@pytest.mark.parametrize("variant", ["smoke,rglru", "smoke,lstm"])
def test_shakespeare_config_trains_and_samples(plays, tmp_path, variant):
    r = run_main(f"--config=configs/shakespeare.py:{variant}", "--config.corpus=text",
                 f"--config.text_files={plays}",
                 f"--workdir={tmp_path / 'w'}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert "validation perplexity" in [x for x in lines if x.startswith("perplexity")][-1]
    assert any(x.startswith("ROMEO:") for x in lines[-6:])
    assert ("scan" in r.stderr) == ("rglru" in variant)


def test_new_fields_are_checked_in_one_line(tmp_path):
    cases = [
        ("--config.cell=rglru", "--config.num_hiddens=30", "--config.num_heads=4", "num_heads"),
        ("--config.block=residual", "--config.embed_dim=8", "--config.num_hiddens=16", "embed_dim"),
        ("--config.optimizer=adam", "--mode=population", "--config.num_epochs=1", "population"),
        ("--config.optimizer=lion", "--config.num_epochs=1", "--config.num_epochs=1", "optimizer"),
    ]
    for *args, word in cases:
        r = run_main("--config=configs/timemachine.py:smoke", *args, f"--workdir={tmp_path / 'w'}")
        assert r.returncode == 2 and r.stderr.startswith("error: ") and word in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "w").exists()


def test_population_mode_and_sampling_from_a_workdir_take_the_new_cells(tmp_path):
    """The sweep's trials vmapped, with an LRU (its state a pair); then `--mode=sample`
    from the workdir."""
    w = tmp_path / "w"
    r = run_main("--config=configs/timemachine.py:smoke", "--mode=population",
                 "--config.cell=lru", "--config.num_epochs=2", f"--workdir={w}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert len((w / "population.md").read_text().splitlines()) == 2 + 3
    r = run_main("--config=configs/timemachine.py:smoke", "--config.cell=minlstm",
                 "--config.num_epochs=2", f"--workdir={tmp_path / 's'}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = run_main(f"--workdir={tmp_path / 's'}", "--mode=sample", "--prefix=time",
                 "--temperature=0.8", "--num_preds=12")  # fmt: skip
    assert r.returncode == 0 and r.stdout.strip().startswith("time"), r.stderr
