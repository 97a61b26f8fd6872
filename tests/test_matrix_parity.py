"""Every matrix-state recurrence, in every form, against the field's own code: values
written by `benchmarks/matrix_parity.py` from flash-linear-attention's naive functions
(fla-core 0.6.0: GLA, simple GLA as Mamba-2's SSD, the gated delta rule, the delta rule,
gated DeltaProduct, retention, the generalised delta rule as RWKV-7's), mamba's minimal SSD
(commit e9594ce) and xlstm's stabilised mLSTM (commit 032a6fb), run in float64.
Read with no torch. Compared in float64 (outputs, final states and the gradients with
respect to q, k, v, every gate and the initial state, within 1e-10 of the largest entry)
and in float32 (1e-4 for outputs and states, 1e-3 for gradients), across chunk boundaries
(T 45: chunks of 8 and 16 leave a padded last one) and with the state carried between two
calls."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_files

from rnnlm_jax.nn import chunkwise

REGENERATE = ("pip install torch fla-core; python benchmarks/matrix_parity.py "
              "--xlstm=PATH/TO/xlstm --mamba=PATH/TO/mamba (docs/recurrences.md)")  # fmt: skip
CELLS = ("gla", "mamba2", "gated_deltanet", "deltanet", "deltaproduct", "retnet", "hgrn2", "rwkv7",
         "mlstm")  # fmt: skip
FORMS = [("recurrent", 8), ("chunkwise", 8), ("chunkwise", 16), ("parallel", 8)]
TOLERANCE = {"float64": (1e-10, 1e-10), "float32": (1e-4, 1e-3)}  # (values, gradients)


def _case(cell):
    f = reference_files.load("matrix_parity.npz", REGENERATE)
    if not any(k.startswith(cell + "/") for k in f):
        pytest.fail(f"matrix_parity.npz has no {cell}; write it again: {REGENERATE}")
    return {k[len(cell) + 1 :]: v for k, v in f.items() if k.startswith(cell + "/")}


def _run(cell, a, form, chunk):
    """Our recurrence on the fixture's inputs, as the layer calls it: `(o, state leaves)`."""
    q, k, v, S0 = a["q"], a["k"], a["v"], a["S0"]
    scale = q.shape[-1] ** -0.5
    if cell in ("gla", "retnet", "hgrn2"):
        return chunkwise.linear_attention(q * scale, k, v, a["g"], S0, form, chunk)
    if cell == "mamba2":
        return chunkwise.linear_attention(q, k, v, a["g"], S0, form, chunk)
    if cell == "gated_deltanet":
        return chunkwise.gated_delta(q * scale, k, v, a["beta"], a["g"], S0, form, chunk)
    if cell == "deltanet":
        zero = jnp.zeros_like(a["beta"])
        return chunkwise.gated_delta(q * scale, k, v, a["beta"], zero, S0, form, chunk)
    if cell == "deltaproduct":
        return chunkwise.delta_product(q * scale, k, v, a["beta"], a["g"], S0, form, chunk)
    if cell == "rwkv7":
        return chunkwise.dplr(q * scale, k, v, a["alpha"], a["beta"], a["g"], S0, form, chunk)
    state = (S0, a["n0"], a["m0"])
    log_f = jax.nn.log_sigmoid(a["fgate"])
    return chunkwise.mlstm(q, k * scale, v, a["igate"], log_f, state, form, chunk)


def _coef(x):
    """The script's cotangent: `sin(1 + index)` over the array's entries."""
    return jnp.sin(1.0 + jnp.arange(x.size, dtype=x.dtype)).reshape(x.shape)


def _rel(got, want):
    want = np.asarray(want, np.float64)
    return np.max(np.abs(np.asarray(got, np.float64) - want)) / np.max(np.abs(want))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cell", CELLS)
def test_every_form_equals_the_fields_own_code(cell, dtype):
    f = _case(cell)
    _compare(cell, f, f, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mamba2_equals_mambas_own_minimal_ssd(dtype):
    """mamba's `ssd_minimal_discrete` (the SSD paper's Listing 1), on the same inputs."""
    f = _case("mamba2")
    ref = {k[len("ssd_minimal/") :]: v for k, v in f.items() if k.startswith("ssd_minimal/")}
    if not ref:
        pytest.fail(f"matrix_parity.npz has no mamba2/ssd_minimal; write it again: {REGENERATE}")
    _compare("mamba2", f, ref, dtype)


def _compare(cell, f, ref, dtype):
    """Every form on the fixture's inputs `f` against the reference values `ref`: outputs,
    final state and gradients."""
    names = sorted(k[3:] for k in f if k.startswith("in/"))
    values, grads = TOLERANCE[dtype]
    with jax.enable_x64(dtype == "float64"):
        inputs = {n: jnp.asarray(f["in/" + n], dtype) for n in names}

        def loss(a, form, chunk):
            o, state = _run(cell, a, form, chunk)
            S = jax.tree.leaves(state)[0]
            return jnp.sum(o * _coef(o)) + jnp.sum(S * _coef(S)), (o, state)

        run = jax.jit(jax.grad(loss, has_aux=True), static_argnums=(1, 2))
        for form, chunk in FORMS:
            got, (o, state) = run(inputs, form, chunk)
            assert _rel(o, ref["o"]) < values, (form, chunk)
            for i, leaf in enumerate(jax.tree.leaves(state)):
                assert _rel(leaf, ref[f"S{i}"]) < values, (form, chunk, i)
            for n in names:
                assert _rel(got[n], ref["grad/" + n]) < grads, (form, chunk, n)


@pytest.mark.parametrize("cell", CELLS)
def test_the_state_carried_between_calls_gives_the_whole_sequence(cell):
    """Cut at step 19 (inside a chunk), the second call from the first call's state."""
    f = _case(cell)
    a = {k[3:]: jnp.asarray(v, jnp.float32) for k, v in f.items() if k.startswith("in/")}
    per_step = [k for k in a if k not in ("S0", "n0", "m0")]
    first = {k: (a[k][:, :, :19] if k in per_step else a[k]) for k in a}
    o1, state = _run(cell, first, "chunkwise", 8)
    second = {k: a[k][:, :, 19:] for k in per_step}
    second |= dict(zip(("S0", "n0", "m0"), state)) if cell == "mlstm" else {"S0": state}
    o2, state = _run(cell, second, "chunkwise", 8)
    assert _rel(jnp.concatenate([o1, o2], axis=2), f["o"]) < 1e-4
    for i, leaf in enumerate(jax.tree.leaves(state)):
        assert _rel(leaf, f[f"S{i}"]) < 1e-4


def test_retention_and_the_mlstms_parallel_form_from_zeros():
    """fla's `naive_retention` and xlstm's `parallel_stabilized_simple`, their own
    functions, each from a zero state."""
    f = _case("retnet")
    q, k, v, g = (jnp.asarray(f["in/" + n]) for n in ("q", "k", "v", "g"))
    zero = jnp.zeros(q.shape[:2] + (q.shape[-1], v.shape[-1]))
    o, _ = chunkwise.linear_attention(q * q.shape[-1] ** -0.5, k, v, g, zero, "chunkwise", 8)
    assert _rel(o, f["naive_retention"]) < 1e-4
    f = _case("mlstm")
    a = {n: jnp.asarray(f["in/" + n]) for n in ("q", "k", "v", "igate", "fgate")}
    B, N, T, K = a["q"].shape
    state = (jnp.zeros((B, N, K, K)), jnp.zeros((B, N, K)), jnp.zeros((B, N)))
    h, _ = chunkwise.mlstm(a["q"], a["k"] * K**-0.5, a["v"], a["igate"],
                           jax.nn.log_sigmoid(a["fgate"]), state, "chunkwise", 16)  # fmt: skip
    assert _rel(h, f["parallel_from_zeros"]) < 1e-4


def test_a_missing_or_damaged_file_fails_saying_how_to_write_it(tmp_path, monkeypatch):
    monkeypatch.setattr(reference_files, "DATA", tmp_path)
    with pytest.raises(pytest.fail.Exception, match="benchmarks/matrix_parity.py"):
        _case("gla")  # missing
    (tmp_path / "matrix_parity.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(pytest.fail.Exception, match="benchmarks/matrix_parity.py"):
        _case("gla")  # damaged
