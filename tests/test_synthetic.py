"""State tracking and recall: each task's generator against its definition, the job through
`main.py`, xLSTM's sLSTM against its equations, and the negative-eigenvalue option in every
form against a step-by-step recurrence."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_files
from test_robustness import assert_one_error
from test_sweeps import run_main

from rnnlm_jax.config import checks
from rnnlm_jax.config.checks import ConfigError
from rnnlm_jax.data import synthetic
from rnnlm_jax.jobs.synthetic import length_bins
from rnnlm_jax.nn import chunkwise, matrix_cells
from rnnlm_jax.nn.layer import RNNLayer

CONFIG = "--config=configs/synthetic.py"


def _batch(name, lengths, width, **kw):
    return synthetic.Task(name, **kw).sample(np.random.default_rng(0), np.array(lengths), width)


# --- the generators ----------------------------------------------------------------------


def test_parity_and_cycle_answers_are_the_sums_of_their_valid_tokens():
    lengths = [3, 7, 20, 40]
    b = _batch("parity", lengths, 40)
    c = _batch("cycle_navigation", lengths, 40)
    for i, n in enumerate(lengths):
        assert b.weights[i].sum() == 1 and b.weights[i, n - 1] == 1
        assert b.targets[i, n - 1] == b.inputs[i, :n].sum() % 2
        assert set(b.inputs[i, n:]) <= {2}  # the pad token
        moves = {0: 0, 1: 1, 2: -1}
        assert c.targets[i, n - 1] == sum(moves[int(m)] for m in c.inputs[i, :n]) % 5
    np.testing.assert_array_equal(b.seq_lengths, lengths)


@pytest.mark.parametrize("expression, value", [
    ("1+2*3", 2), ("1-1-1", 4), ("0*1+4*3-2", 0), ("4*4*4", 4), ("3", 3), ("2-3*4", 0),
])  # fmt: skip
def test_modular_arithmetic_multiplies_first(expression, value):
    ops = {"+": 5 + synthetic.PLUS, "-": 5 + synthetic.MINUS, "*": 5 + synthetic.TIMES}
    encoded = np.array([ops[ch] if ch in ops else int(ch) for ch in expression])
    assert synthetic.evaluate_modular(encoded, 5) == value


def test_modular_arithmetic_sequences_are_odd_and_evaluated():
    b = _batch("modular_arithmetic", [3, 4, 9, 40], 40)
    np.testing.assert_array_equal(b.seq_lengths, [3, 3, 9, 39])
    for i, n in enumerate(b.seq_lengths):
        seq = b.inputs[i, :n]
        assert (seq[0::2] < 5).all() and (seq[1::2] >= 5).all()
        assert b.targets[i, n - 1] == synthetic.evaluate_modular(seq, 5)


def test_s5_composition_by_hand():
    perms = synthetic.permutations(5)
    index = {tuple(p): i for i, p in enumerate(perms)}
    swap, cycle = index[(1, 0, 2, 3, 4)], index[(1, 2, 3, 4, 0)]
    table = synthetic.composition_table(5)
    # (swap o cycle)(i) = swap(cycle(i)): cycle sends 0->1, swap sends 1->0: 0 -> 0; 1->2->2 ...
    assert tuple(perms[table[swap, cycle]]) == (0, 2, 3, 4, 1)
    assert tuple(perms[table[cycle, swap]]) == (2, 1, 3, 4, 0)
    b = _batch("s5", [6, 11], 11)
    for i, n in enumerate(b.seq_lengths):
        state = np.arange(5)
        for t in range(n):
            state = perms[b.inputs[i, t]][state]  # g_t applied after the prefix
            assert tuple(perms[b.targets[i, t]]) == tuple(state)
        assert b.weights[i, :n].all() and not b.weights[i, n:].any()


def test_mqar_answers_are_found_by_lookup():
    V, P, T = 64, 4, 32
    b = _batch("mqar", [T] * 8, T, vocab_size=V, num_kv_pairs=P)
    for i in range(8):
        seq = b.inputs[i]
        keys, values = seq[0 : 2 * P : 2], seq[1 : 2 * P : 2]
        assert len(set(keys)) == P and ((1 <= keys) & (keys < V // 2)).all()
        assert ((V // 2 <= values) & (values < V)).all()
        lookup = dict(zip(keys, values))
        queries = np.flatnonzero(b.weights[i])
        assert len(queries) == P and (queries >= 2 * P).all()
        for t in queries:
            assert b.targets[i, t] == lookup[seq[t]]
        assert sorted(seq[queries]) == sorted(keys)  # each key asked once


def test_lengths_are_drawn_in_range_and_bins_cover_them():
    rng = np.random.default_rng(1)
    lengths = synthetic.sample_lengths(rng, 2000, 3, 40)
    assert lengths.min() == 3 and lengths.max() == 40
    edges = length_bins(40, 256, 6)
    assert edges[0] == 40 and edges[-1] == 257 and len(edges) == 7
    assert synthetic.scaled_accuracy(0.5, 0.5) == 0 and synthetic.scaled_accuracy(1, 0.2) == 1


def test_a_vocabulary_too_small_for_the_pairs_is_refused():
    with pytest.raises(ValueError, match="fewer than num_kv_pairs=16"):
        synthetic.Task("mqar", vocab_size=32, num_kv_pairs=16)


# --- the job ---------------------------------------------------------------------------------


def test_a_smoke_run_trains_reports_and_resumes(tmp_path):
    r = run_main(f"{CONFIG}:s3,mingru,smoke", f"--workdir={tmp_path}")
    assert r.returncode == 0, r.stderr
    results = json.loads((tmp_path / "synthetic_results.json").read_text())
    assert results["task"] == "s3" and results["cell"] == "mingru"
    assert 0 <= results["test"]["accuracy"] <= 1 and abs(results["chance"] - 1 / 6) < 1e-9
    bins = results["test"]["bins"]
    assert bins[0]["lengths"][0] == 12 and bins[-1]["lengths"][1] == 24
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [rec["epoch"] for rec in records] == [1, 2]
    again = run_main(f"{CONFIG}:s3,mingru,smoke", f"--workdir={tmp_path}")
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "synthetic_results.json").read_text())["test"] == results["test"]
    other = run_main(f"{CONFIG}:parity,mingru,smoke", f"--workdir={tmp_path}")
    assert_one_error(other, 2, "task 's3' (checkpoint) vs 'parity'")


@pytest.mark.parametrize("args, words", [
    (("--config.task=sorting",), ("config.task",)),
    (("--config.test_min_len=20", "--config.test_max_len=30"),
     ("test_max_len=30", "train_max_len=40")),
    ((":mqar", "--config.mqar_vocab_size=20"), ("mqar_vocab_size=20", "num_kv_pairs=16")),
    ((":mqar", "--config.mqar_seq_len=40"), ("mqar_seq_len=40",)),
    (("--config.negative_eigenvalues=True",), ("negative_eigenvalues", "'lstm'")),
])  # fmt: skip
def test_bad_task_configs_are_one_line_errors_and_write_nothing(tmp_path, args, words):
    variant = args[0] if args[0].startswith(":") else ""
    flags = [a for a in args if not a.startswith(":")]
    workdir = tmp_path / "w"
    r = run_main(f"{CONFIG}{variant}", f"--workdir={workdir}", *flags)
    assert_one_error(r, 2, *words)
    assert not workdir.exists()


# --- sLSTM -----------------------------------------------------------------------------------


def reference_slstm(x, W, b, R, N):
    """Beck et al.'s sLSTM, step by step in float64 NumPy (each head's recurrent block apart)."""
    T, B, _ = x.shape
    H = b.shape[-1]
    d = H // N
    c = n = m = h = np.zeros((B, H))
    sigmoid = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    out = []
    for t in range(T):
        pre = (x[t] @ W + b.reshape(-1)).reshape(B, 4, H)
        for head in range(N):
            units = slice(head * d, (head + 1) * d)
            for gate in range(4):
                pre[:, gate, units] += h[:, units] @ R[head, :, gate, :]
        i_raw, f_raw, z_raw, o_raw = pre[:, 0], pre[:, 1], pre[:, 2], pre[:, 3]
        log_f = m + np.log(sigmoid(f_raw))
        m_new = np.where(n == 0, i_raw, np.maximum(i_raw, log_f))
        i, f = np.exp(i_raw - m_new), np.exp(log_f - m_new)
        c, n, m = f * c + i * np.tanh(z_raw), f * n + i, m_new
        h = sigmoid(o_raw) * c / n
        out.append(h)
    return np.stack(out), (c, n, m, h)


def test_slstm_equals_its_equations_halves_and_lengths():
    T, B, D, H, N = 9, 3, 5, 8, 2
    x = np.random.default_rng(0).normal(size=(T, B, D))
    layer = RNNLayer(cell="slstm", num_hiddens=H, num_heads=N, initializer="flax")
    params = layer.init(jax.random.key(0), jnp.asarray(x, jnp.float32))
    p = {k: np.asarray(v, np.float64) for k, v in params["params"]["layer_0"].items()}
    p["recurrent_kernel"] *= 4  # a recurrence strong enough to matter
    params = {"params": {"layer_0": {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}}}
    want, state = reference_slstm(x, p["kernel"], p["bias"], p["recurrent_kernel"], N)
    out, final = layer.apply(params, jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(out, want, atol=2e-6)
    for got, ref in zip(final, state):
        np.testing.assert_allclose(got[0], ref, rtol=1e-5, atol=2e-6)
    first, carried = layer.apply(params, jnp.asarray(x[:4], jnp.float32))
    second, _ = layer.apply(params, jnp.asarray(x[4:], jnp.float32), carried)
    np.testing.assert_allclose(np.concatenate([first, second]), out, atol=1e-6)
    lengths = jnp.array([9, 4, 0])
    masked, ends = layer.apply(params, jnp.asarray(x, jnp.float32), seq_lengths=lengths)
    np.testing.assert_allclose(ends[3][0, 1], carried[3][0, 1], atol=1e-6)
    assert not np.asarray(ends[3][0, 2]).any() and not np.asarray(masked[4:, 1]).any()
    assert abs(p["bias"][1, 0] - 5.0) < 1e-6 and abs(p["bias"][1, -1] + 7.0) < 1e-6


@pytest.mark.parametrize("case", ["zeros", "given"])
def test_slstm_equals_xlstms_own_code_in_values_and_gradients(case):
    """Against xlstm's vanilla sLSTM (`benchmarks/xlstm_parity.py` wrote the file)."""
    data = reference_files.load(
        "slstm_parity.npz", "python benchmarks/xlstm_parity.py --xlstm=PATH/TO/xlstm (with torch)"
    )
    f = {k[len(case) + 1 :]: v for k, v in data.items() if k.startswith(case + "/")}
    T, B, D = f["x"].shape
    N, four_d, d = f["R"].shape
    H = N * d
    layer = RNNLayer(cell="slstm", num_hiddens=H, num_heads=N)
    h0, c0, n0, m0 = (jnp.asarray(s[None], jnp.float32) for s in f["state0"])

    def ours(x, W, R, b):  # xlstm's layouts in, ours inside
        R = jnp.swapaxes(R, 1, 2).reshape(N, d, 4, d)
        params = {"params": {"layer_0": {"kernel": W, "bias": b.reshape(4, H),
                                         "recurrent_kernel": R}}}  # fmt: skip
        return layer.apply(params, x, (c0, n0, m0, h0))

    args = [jnp.asarray(f[k], jnp.float32) for k in ("x", "W", "R", "b")]
    hs, (c, n, m, h) = ours(*args)
    np.testing.assert_allclose(hs, f["hs"], rtol=1e-4, atol=1e-5)
    for got, want in zip((h, c, n, m), f["final"]):
        np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-5)
    coef = jnp.asarray(f["coef"], jnp.float32)
    grads = jax.grad(lambda *a: (ours(*a)[0] * coef).sum(), argnums=(0, 1, 2, 3))(*args)
    for got, name in zip(grads, ("x", "W", "R", "b")):
        want = f["grad/" + name]
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


# --- negative eigenvalues ----------------------------------------------------------------------


def _signed_reference(q, k, v, g, S):
    """`S_t = diag(2 exp(g_t) - 1) S_{t-1} + k_t v_t^T`, `o_t = S_t^T q_t`, in float64."""
    q, k, v, g, S = (np.asarray(a, np.float64) for a in (q, k, v, g, S))
    a = 2 * np.exp(g if g.ndim == 4 else g[..., None]) - 1
    out = []
    for t in range(q.shape[2]):
        S = a[:, :, t, :, None] * S + k[:, :, t, :, None] * v[:, :, t, None, :]
        out.append(np.einsum("bnk,bnkv->bnv", q[:, :, t], S))
    return np.stack(out, 2), S


@pytest.mark.parametrize("per_key", [False, True])
@pytest.mark.parametrize("form", ["recurrent", "chunkwise", "parallel"])
def test_signed_decay_is_exact_in_every_form_with_the_state_carried(per_key, form):
    rng = np.random.default_rng(3)
    B, N, T, K, V = 2, 2, 19, 4, 3
    q, k = rng.normal(size=(B, N, T, K)), rng.normal(size=(B, N, T, K))
    v, S0 = rng.normal(size=(B, N, T, V)), rng.normal(size=(B, N, K, V))
    g = -rng.uniform(0, 3, size=(B, N, T, K) if per_key else (B, N, T))
    want, S_want = _signed_reference(q, k, v, g, S0)
    assert (2 * np.exp(g) - 1 < 0).mean() > 0.2  # negative eigenvalues are exercised
    run = functools.partial(chunkwise.linear_attention, form=form, chunk_size=8)
    signed = functools.partial(matrix_cells._signed, run, floor=-30.0)
    f32 = lambda *a: [jnp.asarray(x, jnp.float32) for x in a]  # noqa: E731
    o1, S1 = signed(*f32(q[:, :, :11], k[:, :, :11], v[:, :, :11], g[:, :, :11], S0))
    o2, S2 = signed(*f32(q[:, :, 11:], k[:, :, 11:], v[:, :, 11:], g[:, :, 11:]), S1)
    np.testing.assert_allclose(np.concatenate([o1, o2], 2), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(S2, S_want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cell", matrix_cells.NEGATIVE_EIGENVALUE_CELLS)
def test_negative_eigenvalue_layers_agree_in_every_form_and_differ_from_the_default(cell):
    x = jnp.asarray(np.random.default_rng(4).normal(size=(21, 2, 8)), jnp.float32)
    outs = {}
    for form in ("recurrent", "chunkwise", "parallel"):
        layer = RNNLayer(cell=cell, num_hiddens=8, num_heads=2, form=form, chunk_size=8,
                         negative_eigenvalues=True, initializer="flax")  # fmt: skip
        params = layer.init(jax.random.key(0), x)
        outs[form] = layer.apply(params, x)
    for form in ("chunkwise", "parallel"):
        np.testing.assert_allclose(outs[form][0], outs["recurrent"][0], rtol=1e-4, atol=1e-5)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                     outs[form][1], outs["recurrent"][1])  # fmt: skip
    plain = RNNLayer(cell=cell, num_hiddens=8, num_heads=2, initializer="flax")
    # Mamba-2 starts with decays near 1 (dt 0.001-0.1), so the option changes little yet
    assert np.abs(plain.apply(params, x)[0] - outs["parallel"][0]).max() > 1e-5


def test_negative_eigenvalues_are_refused_where_there_is_no_such_transition():
    with pytest.raises(ValueError, match="negative_eigenvalues"):
        RNNLayer(cell="mlstm", num_hiddens=8, negative_eigenvalues=True).init(
            jax.random.key(0), jnp.zeros((3, 1, 4)))  # fmt: skip
    config = checks.fields.defaults()
    config.cell, config.negative_eigenvalues = "rglru", True
    with pytest.raises(ConfigError, match="cell 'rglru' has none"):
        checks.validate(config)


@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_negative_eigenvalues_of_the_linear_cells_in_every_scan(cell):
    x = jnp.asarray(np.random.default_rng(5).normal(size=(17, 3, 4)), jnp.float32)
    outs = []
    for scan in ("sequential", "associative", "chunked"):
        layer = RNNLayer(cell=cell, num_hiddens=6, scan=scan, negative_eigenvalues=True,
                         initializer="flax")  # fmt: skip
        params = layer.init(jax.random.key(0), x)
        outs.append(layer.apply(params, x)[0])
    p = {k: np.asarray(v, np.float64) for k, v in params["params"]["layer_0"].items()}
    xp = np.asarray(x, np.float64) @ p["kernel"] + p["bias"]
    sigmoid = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    if cell == "mingru":
        z = sigmoid(xp[..., :6])
        a, b = 1 - 2 * z, z * xp[..., 6:]  # 2 (1 - z) - 1
    else:
        f, i = sigmoid(xp[..., :6]), sigmoid(xp[..., 6:12])
        a, b = 2 * f / (f + i) - 1, i / (f + i) * xp[..., 12:]
    assert (a < 0).mean() > 0.1
    h, want = np.zeros((3, 6)), []
    for t in range(17):
        h = a[t] * h + b[t]
        want.append(h)
    for out in outs:
        np.testing.assert_allclose(out, np.stack(want), rtol=1e-4, atol=1e-5)
