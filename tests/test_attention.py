"""Attention as a token mixer and the hybrids built from it: nanoGPT's own model against
`configs/shakespeare.py:gpt` for the same weights (a committed fixture), the sliding window
against attention over the whole sequence, generation token by token against the forward
pass (attention, hybrids, xLSTM's mixed stacks and the sLSTM), and bad configs."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_files
from test_robustness import assert_one_error
from test_sweeps import run_main

from rnnlm_jax.config import checks
from rnnlm_jax.nn.attention import Attention, attention_state, rotary
from rnnlm_jax.nn.models import RNNModel

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "python benchmarks/nanogpt_parity.py --nanogpt=PATH/TO/nanoGPT (with torch)"
SMOKE = "--config=configs/timemachine.py:smoke"


def _fixture():
    return reference_files.load("nanogpt_parity.npz", REGENERATE)


def test_gpt_computes_what_nanogpts_model_computes_for_the_same_weights():
    sys.path.insert(0, str(ROOT))
    from configs.shakespeare import get_config

    f = _fixture()
    size = {k.split("/")[1]: int(f[k]) for k in f if k.startswith("size/")}
    config = get_config("gpt")
    config.num_hiddens = config.embed_dim = size["n_embd"]
    config.num_layers, config.num_heads = size["n_layer"], size["n_head"]
    config.attention_window = size["block_size"]
    model = checks.model_from_config(checks.validate(config), size["vocab_size"])
    p = {k[len("param/transformer.") :]: v for k, v in f.items() if k.startswith("param/")}
    params = {
        "embed": {"embedding": p["wte.weight"]},
        "final_norm": {"scale": p["ln_f.weight"]},
    }
    for i in range(size["n_layer"]):
        h = f"h.{i}."
        params[f"block_{i}"] = {
            "temporal_norm": {"scale": p[h + "ln_1.weight"]},
            "attention": {"qkv": p[h + "attn.c_attn.weight"].T,
                          "out": p[h + "attn.c_proj.weight"].T},
            "mlp_norm": {"scale": p[h + "ln_2.weight"]},
            "mlp": {"fc": {"kernel": p[h + "mlp.c_fc.weight"].T},
                    "proj": {"kernel": p[h + "mlp.c_proj.weight"].T}},
        }  # fmt: skip
    params["block_0"]["wpe"] = p["wpe.weight"]
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    idx = jnp.asarray(f["idx"])
    B, T = idx.shape
    ours = model.init(jax.random.key(0), idx, model.begin_state(B))["params"]
    assert jax.tree.structure(ours) == jax.tree.structure(params)  # every weight mapped
    logits, _ = model.apply({"params": params}, idx, model.begin_state(B))
    logits = np.asarray(logits).reshape(T, B, -1).transpose(1, 0, 2)
    np.testing.assert_allclose(logits, f["logits"], rtol=1e-4, atol=2e-5)
    targets = np.roll(f["idx"], -1, axis=1)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    loss = -np.take_along_axis(log_p, targets[..., None], -1).mean()
    assert abs(loss - float(f["loss"])) < 1e-5


def _naive_window(x, qkv, out, N, W):
    """Sliding-window attention step by step in float64 NumPy: query t sees steps
    max(0, t - W + 1)..t of the whole sequence, rotary positions from 0."""
    T, B, H = x.shape
    d = H // N
    q, k, v = np.split(np.asarray(x, np.float64) @ qkv, 3, axis=-1)
    steps = jnp.broadcast_to(jnp.arange(T)[None], (B, T))
    heads = lambda a: a.reshape(T, B, N, d).transpose(1, 0, 2, 3)  # noqa: E731
    q = np.asarray(rotary(jnp.asarray(heads(q)), steps), np.float64)
    k = np.asarray(rotary(jnp.asarray(heads(k)), steps), np.float64)
    v = heads(v)
    o = np.zeros((B, T, N, d))
    for t in range(T):
        lo = max(0, t - W + 1)
        scores = np.einsum("bnd,bsnd->bns", q[:, t], k[:, lo : t + 1]) / np.sqrt(d)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        o[:, t] = np.einsum("bns,bsnd->bnd", probs / probs.sum(-1, keepdims=True), v[:, lo : t + 1])
    return o.transpose(1, 0, 2, 3).reshape(T, B, H) @ out


@pytest.mark.parametrize("W", [1, 5, 40])
def test_the_carried_window_is_attention_over_the_whole_sequence_within_it(W):
    T, B, H, N = 13, 2, 8, 2
    x = jnp.asarray(np.random.default_rng(0).normal(size=(T, B, H)), jnp.float32)
    layer = Attention(N, W)
    fresh = jax.tree.map(lambda a: a[0], attention_state((1, B), H, N, W))
    params = layer.init(jax.random.key(0), fresh, x)
    P = {k: np.asarray(v, np.float64) for k, v in params["params"].items()}
    want = _naive_window(x, P["qkv"], P["out"], N, W)
    whole, state = layer.apply(params, fresh, x)
    np.testing.assert_allclose(whole, want, atol=1e-5)
    first, carried = layer.apply(params, fresh, x[:6])  # in two minibatches, state carried
    second, state2 = layer.apply(params, carried, x[6:])
    np.testing.assert_allclose(np.concatenate([first, second]), want, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), state, state2)
    mask = jnp.arange(T)[:, None] < jnp.array([T, 7])[None, :]  # seq_lengths 13 and 7
    _, ends = layer.apply(params, fresh, x, mask)
    one = jax.tree.map(lambda a: a[:1], fresh)
    _, seven = layer.apply(params, one, x[:7, 1:])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[1:], b, atol=1e-6), ends, seven)


@pytest.mark.parametrize("kw", [
    {"block": "residual", "cell": "attention", "attention_window": 4},
    {"block": "residual", "cell": "gla", "mixers": "gated_deltanet*2,attention",
     "attention_window": 5},
    {"block": "residual", "cell": "rglru", "mixers": "rglru,attention"},  # Griffin's
    {"block": "xlstm", "cell": "mlstm", "mixers": "mlstm*2,slstm"},  # xLSTM [2:1]
    {"block": "gpt", "cell": "attention", "positions": "learned", "attention_window": 16,
     "tie_embeddings": True, "embed_dim": 16},
    {"block": "stack", "cell": "slstm"},  # xLSTM's sLSTM, a plain stack
    {"block": "residual", "cell": "slstm"},
])  # fmt: skip
def test_generation_token_by_token_equals_the_forward_pass(kw):
    model = RNNModel(vocab_size=11, num_hiddens=16, num_heads=2, num_layers=3,
                     initializer="flax", **kw)  # fmt: skip
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 11, (2, 9)))
    params = model.init(jax.random.key(0), tokens, model.begin_state(2))
    whole, final = model.apply(params, tokens, model.begin_state(2))
    state, steps = model.begin_state(2), []
    for t in range(9):
        logits, state = model.apply(params, tokens[:, t : t + 1], state)
        steps.append(logits)
    np.testing.assert_allclose(jnp.stack(steps).reshape(whole.shape), whole, atol=2e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5), state, final)
    if model.is_mixed():  # one state per block, the batch on axis 1 of every leaf
        assert isinstance(state, tuple) and len(state) == 3
        assert all(leaf.shape[:2] == (1, 2) for leaf in jax.tree.leaves(state))


def test_a_hybrid_trains_samples_and_resumes_through_main(tmp_path):
    args = (SMOKE, f"--workdir={tmp_path}", "--config.block=residual", "--config.cell=gla",
            "--config.mixers=gla,attention", "--config.num_layers=2", "--config.num_heads=2",
            "--config.attention_window=8", "--config.num_hiddens=16")  # fmt: skip
    r = run_main(*args)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "checkpoints").is_dir()
    again = run_main(*args, "--config.mixers=attention,gla")
    assert_one_error(again, 2, "mixers")


@pytest.mark.parametrize("flags, words", [
    (("--config.block=residual", "--config.mixers=gla,transformer"), ("'transformer'",)),
    (("--config.mixers=gla",), ("mixers", "'stack'")),
    (("--config.cell=attention",), ("attention", "'stack'")),
    (("--config.block=residual", "--config.cell=gla", "--config.positions=learned"),
     ("positions='learned'", "'gla'")),
    (("--config.block=residual", "--config.cell=attention", "--config.attention_window=0"),
     ("attention_window",)),
    (("--config.block=xlstm", "--config.cell=mlstm", "--config.mixers=mlstm,gla",
      "--config.num_layers=2"), ("block='xlstm'", "'gla'")),
    (("--config.block=residual", "--config.mixers=gla,attention"), ("2 blocks", "num_layers=1")),
    (("--config.block=gpt", "--config.cell=gla"), ("block='gpt'", "'gla'")),
])  # fmt: skip
def test_bad_mixer_configs_are_one_line_errors_and_write_nothing(tmp_path, flags, words):
    workdir = tmp_path / "w"
    r = run_main(SMOKE, f"--workdir={workdir}", *flags)
    assert_one_error(r, 2, *words)
    assert not workdir.exists()
