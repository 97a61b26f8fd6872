"""Details that parity with PyTorch's `nn.GRU` / `nn.LSTM` rests on: the GRU's biases drawn as
PyTorch draws them under `initializer="pytorch"`, and the fast path under `jax_enable_x64`."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT

from rnnlm_jax.nn.layer import RNNLayer

H = 512


@pytest.mark.parametrize("impl", ["fast", "flax"])
def test_pytorch_initializer_draws_the_grus_biases_as_pytorch(impl):
    layer = RNNLayer(cell="gru", num_hiddens=H, initializer="pytorch", impl=impl)
    params = layer.init(jax.random.key(0), jnp.ones((2, 3, 5)))["params"]["layer_0"]
    k = H**-0.5
    for name in ("in", "hn"):  # PyTorch's b_in and b_hn: one U(-k, k) draw each
        b = np.asarray(params[name]["bias"])
        assert abs(b).max() <= k and abs(b.var() / (k * k / 3) - 1) < 0.15, name
    for name in ("ir", "iz"):  # b_ir + b_hr and b_iz + b_hz: the sum of two draws
        b = np.asarray(params[name]["bias"])
        assert abs(b).max() > 1.2 * k and abs(b.var() / (2 * k * k / 3) - 1) < 0.15, name
    assert set(params["hr"]) == {"kernel"} and set(params["hn"]) == {"kernel", "bias"}


X64 = """
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
from rnnlm_jax.nn.layer import RNNLayer
from rnnlm_jax.nn.models import RNNModel
from rnnlm_jax import train
x = jnp.ones((4, 2, 3), jnp.float32)
for cell in ("rnn", "gru", "lstm"):
    for impl in ("fast", "flax"):
        layer = RNNLayer(cell=cell, num_hiddens=5, impl=impl, initializer="pytorch")
        p = layer.init(jax.random.key(0), x)
        y, _ = layer.apply(p, x)
        g = jax.grad(lambda p: layer.apply(p, x)[0].sum())(p)
        assert y.dtype == jnp.float32 and all(
            a.dtype == jnp.float32 for a in jax.tree.leaves((p, g))), (cell, fast)
model = RNNModel(vocab_size=7, cell="lstm", num_hiddens=6)
state = train.create_train_state(model, jax.random.key(0), 1.0, 1.0, 2, 3)
tokens = jnp.zeros((2, 3), jnp.int32)
state, _, m = train.train_step(state, model.begin_state(2), tokens, tokens)
print("ok", float(m["loss_sum"]) > 0)
"""


def test_the_fast_path_under_jax_enable_x64():
    """x64 is process-wide, so it runs in a process of its own."""
    r = subprocess.run(
        [sys.executable, "-c", X64], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok True", r.stderr[-2000:]
