"""`RNNLayer` equals PyTorch's `nn.RNN` / `nn.GRU` / `nn.LSTM` with the weights mapped by the
table in docs/api.md: outputs, final states and gradients, against reference values that
`benchmarks/torch_parity.py` wrote with PyTorch in float64 (`tests/data/torch_parity.npz`),
so the suite needs no torch. Where torch is importable, the file is also regenerated and must
equal the committed one."""

import functools
import importlib.util
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT

from rnnlm_jax import RNNLayer

FIXTURE = ROOT / "tests" / "data" / "torch_parity.npz"
SCRIPT = ROOT / "benchmarks" / "torch_parity.py"
GATES = {"rnn": "", "gru": "rzn", "lstm": "ifgo"}  # PyTorch's row blocks, in its order


def _script():
    spec = importlib.util.spec_from_file_location("torch_parity", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read(path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return _script().unpack(f)


def _cases() -> dict[str, dict[str, np.ndarray]]:
    cases: dict[str, dict[str, np.ndarray]] = {}
    for key, value in _read(FIXTURE).items():
        case, name = key.split("/", 1)
        cases.setdefault(case, {})[name] = value
    return cases


CASES = _cases()


def to_flax(cell: str, w: dict, layers: int, directions: int, grads: bool = False) -> dict:
    """PyTorch's weights as `RNNLayer`'s parameters, by the documented table: each gate's row
    block transposed, the two biases summed where flax keeps one (for `grads`, PyTorch's
    gradients: a summed bias's gradient is that of either of its two terms)."""
    summed = (lambda b_ih, b_hh: b_ih) if grads else (lambda b_ih, b_hh: b_ih + b_hh)
    params = {}
    for layer in range(layers):
        for k in range(directions):
            sfx = f"_l{layer}" + ("_reverse" if k else "")
            w_ih, w_hh, b_ih, b_hh = (w[f"{n}{sfx}"] for n in
                                      ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))  # fmt: skip
            if cell == "rnn":
                p = {"i": {"kernel": w_ih.T, "bias": summed(b_ih, b_hh)}, "h": {"kernel": w_hh.T}}
            else:
                H = w_hh.shape[1]
                p = {}
                for g, gate in enumerate(GATES[cell]):
                    rows = slice(g * H, (g + 1) * H)
                    p["i" + gate] = {"kernel": w_ih[rows].T}
                    p["h" + gate] = {"kernel": w_hh[rows].T}
                    if cell == "gru" and gate == "n":  # kept apart: r multiplies W_hn h + b_hn
                        p["in"]["bias"], p["hn"]["bias"] = b_ih[rows], b_hh[rows]
                    else:  # the GRU's r, z biases on the input side, the LSTM's on h's
                        side = "i" if cell == "gru" else "h"
                        p[side + gate]["bias"] = summed(b_ih[rows], b_hh[rows])
            params[f"layer_{layer}" + ("_reverse" if k else "")] = p
    return params


FAST_COMPILE = {"xla_backend_optimization_level": 0}  # tiny shapes: compiling is the cost


# jit's cache keeps one program per layer and argument structure (the cases with and without
# an initial state share it), compiled without XLA's backend optimisations.
@functools.partial(jax.jit, static_argnums=0, compiler_options=FAST_COMPILE)
def _outputs_and_grads(layer, params, x, state, lengths, coeffs):
    """The layer's outputs, final state and the gradients of the fixed scalar loss with
    respect to `(params, x, state)`."""
    c_out, c_h, c_c = coeffs

    def loss(params, x, state):
        out, final = layer.apply({"params": params}, x, state, seq_lengths=lengths)
        c, h = final if c_c is not None else (None, final)
        total = jnp.sum(out * c_out) + jnp.sum(h * c_h)
        if c_c is not None:
            total = total + jnp.sum(c * c_c)
        return total, (out, final)

    (_, (out, final)), grads = jax.value_and_grad(loss, (0, 1, 2), has_aux=True)(params, x, state)
    return out, final, grads


def close(actual, expected, tol: float, what: str):
    """|actual - expected| <= tol * max(1, |expected|), elementwise."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    err = np.abs(actual - expected) / np.maximum(1.0, np.abs(expected))
    assert err.max(initial=0.0) <= tol, f"{what}: max relative error {err.max():.3g}"


def test_the_fixtures_cover_every_combination_and_are_small():
    assert len(CASES) == 3 * 2 * 2 * 2 * 2 * 2
    assert FIXTURE.stat().st_size < 1_000_000
    for ref in CASES.values():  # float64 references with gradients for every parameter
        assert ref["out"].dtype == np.float64 and np.abs(ref["out"]).max() > 0
        params = [k for k in ref if k.startswith(("weight_", "bias_"))]
        assert all(f"grad/{k}" in ref for k in params) and "grad/x" in ref


@pytest.mark.parametrize("impl", ["fast", "flax"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_rnn_layer_equals_pytorch(case, impl):
    cell, layers, direction, layout, init, packing = case.split("-")
    layers, directions = int(layers[1:]), 2 if direction == "bi" else 1
    batch_first, packed, has_h0 = layout == "batch_first", packing == "packed", init == "h0"
    ref = CASES[case]
    layer = RNNLayer(cell=cell, num_hiddens=ref["h_n"].shape[-1], num_layers=layers,
                     bidirectional=directions == 2, time_major=not batch_first,
                     impl=impl)  # fmt: skip
    params = jax.tree.map(
        lambda a: jnp.asarray(a, jnp.float32), to_flax(cell, ref, layers, directions)
    )
    x = jnp.asarray(ref["x"], jnp.float32)
    lengths = jnp.asarray(ref["lengths"], jnp.int32) if packed else None
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    if has_h0:
        state = (f32(ref["c0"]), f32(ref["h0"])) if cell == "lstm" else f32(ref["h0"])
    else:
        state = layer.begin_state(x.shape[0 if batch_first else 1])

    coeffs = (ref["c_out"], ref["c_h"], ref.get("c_c"))
    out, final, grads = _outputs_and_grads(layer, params, x, state, lengths, coeffs)
    c, h = final if cell == "lstm" else (None, final)
    close(out, ref["out"], 2e-5, "outputs")
    close(h, ref["h_n"], 2e-5, "h_n")
    if cell == "lstm":
        close(c, ref["c_n"], 2e-5, "c_n")
    g_params, g_x, g_state = grads
    torch_grads = {k.removeprefix("grad/"): v for k, v in ref.items() if k.startswith("grad/")}
    expected = to_flax(cell, torch_grads, layers, directions, grads=True)
    flat_ref = jax.tree_util.tree_flatten_with_path(expected)[0]
    flat_ours = dict(jax.tree_util.tree_flatten_with_path(g_params)[0])
    assert len(flat_ref) == len(flat_ours)
    for path, value in flat_ref:
        close(flat_ours[path], value, 1e-4, f"grad {jax.tree_util.keystr(path)}")
    close(g_x, ref["grad/x"], 1e-4, "grad x")
    if has_h0:
        g_c, g_h = g_state if cell == "lstm" else (None, g_state)
        close(g_h, ref["grad/h0"], 1e-4, "grad h0")
        if cell == "lstm":
            close(g_c, ref["grad/c0"], 1e-4, "grad c0")


def test_the_fixtures_are_what_the_script_writes(tmp_path):
    torch = pytest.importorskip("torch", reason="regenerating the references needs torch")
    out = tmp_path / "parity.npz"
    r = subprocess.run([sys.executable, str(SCRIPT), f"--out={out}"], capture_output=True,
                       text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    new, old = _read(out), _read(FIXTURE)
    assert sorted(new) == sorted(old), torch.__version__
    for key in old:
        np.testing.assert_allclose(new[key], old[key], rtol=0, atol=1e-12, err_msg=key)
