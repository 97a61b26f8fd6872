"""Exercise 3: the autoregressive model of the book's "sequence models" section, with an RNN.

Data: `x_t = sin(0.01 t) + N(0, noise)` for t = 1..T; features are windows of the last
`tau` values, labels the next value; the first `n_train` examples train. Two regressors are
trained on the same data with the same seed and the book's recipe (squared loss, Adam,
minibatches of 16): the book's MLP (tau -> 10 ReLU -> 1) and an RNN that reads the window as
a sequence of `tau` scalars (`RNNLayer`, float inputs) and predicts from its last state.
Both are then judged as the book does: 1-step-ahead predictions, a free-running multi-step
prediction from the end of the training data, and k-step-ahead predictions (k = 1, 4, 16, 64).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from rnnlm_jax.configuration import ConfigError
from rnnlm_jax.files import write_text_atomic
from rnnlm_jax.models import RNNLayer


def make_series(T: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`(time, x)`: t = 1..T and `x_t = sin(0.01 t) + N(0, noise)`, float32 `[T]`."""
    time = np.arange(1, T + 1, dtype=np.float32)
    rng = np.random.default_rng(seed)
    x = np.sin(0.01 * time) + rng.normal(0, noise, T)
    return time, x.astype(np.float32)


def embed(x: np.ndarray, tau: int) -> tuple[np.ndarray, np.ndarray]:
    """The book's features `[T - tau, tau]` (windows x_{t-tau}..x_{t-1}) and labels `[T - tau]`."""
    T = len(x)
    features = np.stack([x[i : T - tau + i] for i in range(tau)], axis=1)
    return features, x[tau:]


class MLP(nn.Module):
    """The book's net: Linear(tau, 10), ReLU, Linear(10, 1), Xavier-uniform weights."""

    num_hiddens: int = 10

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        """`[N, tau] -> [N]`."""
        init = nn.initializers.xavier_uniform()
        h = nn.relu(nn.Dense(self.num_hiddens, kernel_init=init)(features))
        return nn.Dense(1, kernel_init=init)(h)[:, 0]


class RNNRegressor(nn.Module):
    """Reads a window as a sequence of scalars; a Dense head on the last hidden state."""

    cell: str = "rnn"
    num_hiddens: int = 32
    num_layers: int = 1

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        """`[N, tau] -> [N]`."""
        layer = RNNLayer(
            cell=self.cell,
            num_hiddens=self.num_hiddens,
            num_layers=self.num_layers,
            initializer="flax",
        )
        outputs, _ = layer(features.T[:, :, None], layer.begin_state(features.shape[0]))
        return nn.Dense(1)(outputs[-1])[:, 0]


def fit(model: nn.Module, features, labels, config, seed: int) -> tuple[Any, list[float]]:
    """The book's training: squared loss, Adam, shuffled minibatches. Returns
    `(params, per-epoch mean training loss)`."""
    params = model.init(jax.random.key(seed), features[:1])["params"]
    tx = optax.adam(config.lr)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, X, y):
        def loss_fn(p):
            return jnp.mean((model.apply({"params": p}, X) - y) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(config.num_epochs):
        order = rng.permutation(len(features))
        total = 0.0
        for i in range(0, len(order), config.batch_size):
            idx = order[i : i + config.batch_size]
            params, opt_state, loss = step(params, opt_state, features[idx], labels[idx])
            total += float(loss) * len(idx)
        losses.append(total / len(features))
    return params, losses


def k_step_predictions(predict, x: np.ndarray, tau: int, max_steps: int) -> np.ndarray:
    """The book's k-step table `[T - tau - max_steps + 1, tau + max_steps]`: column
    `tau + k - 1` holds the k-step-ahead prediction of x at row + tau + k - 1."""
    T = len(x)
    rows = T - tau - max_steps + 1
    table = np.zeros((rows, tau + max_steps), np.float32)
    for i in range(tau):
        table[:, i] = x[i : i + rows]
    for i in range(tau, tau + max_steps):
        table[:, i] = predict(table[:, i - tau : i])
    return table


def multistep_predictions(predict, x: np.ndarray, tau: int, n_train: int) -> np.ndarray:
    """Free-running predictions from `n_train + tau` on, fed only their own outputs."""
    out = x.copy()
    for i in range(n_train + tau, len(x)):
        out[i] = predict(out[None, i - tau : i])[0]
    return out


def evaluate(predict, x, features, config) -> dict[str, Any]:
    """Mean squared errors against the observed series, and the predictions to plot."""
    tau, n_train = config.tau, config.n_train
    onestep = predict(features)
    table = k_step_predictions(predict, x, tau, max(config.k_steps))
    multistep = multistep_predictions(predict, x, tau, n_train)
    rows = table.shape[0]
    k_mse = {
        k: float(np.mean((table[:, tau + k - 1] - x[tau + k - 1 : tau + k - 1 + rows]) ** 2))
        for k in config.k_steps
    }
    return {
        "onestep_mse": float(np.mean((onestep - x[tau:]) ** 2)),
        "onestep_test_mse": float(np.mean((onestep[n_train:] - x[tau + n_train :]) ** 2)),
        "multistep_mse": float(np.mean((multistep[n_train + tau :] - x[n_train + tau :]) ** 2)),
        "k_step_mse": k_mse,
        "curves": {"onestep": onestep, "multistep": multistep, "k_table": table},
    }


def validate(config: ml_collections.ConfigDict) -> None:
    checks = [
        (config.T > config.tau + max(config.k_steps), "T must exceed tau + max(k_steps)"),
        (0 < config.n_train <= config.T - config.tau, "n_train must be in [1, T - tau]"),
        (config.tau >= 1 and config.batch_size >= 1, "tau and batch_size must be >= 1"),
        (config.num_epochs >= 1 and config.lr > 0, "num_epochs >= 1 and lr > 0 are needed"),
        (all(k >= 1 for k in config.k_steps), "k_steps must be >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"sine config: {message}")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains the MLP baseline and the RNN on the same data; writes `sine_results.json`,
    `sine_predictions.png` and `sine_k_step.png` into `workdir` and prints the errors."""
    validate(config)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(workdir / "config.json", config.to_json(indent=2) + "\n")
    time_axis, x = make_series(config.T, config.noise, config.seed)
    features, labels = embed(x, config.tau)
    train = (features[: config.n_train], labels[: config.n_train])
    models = {
        "mlp": MLP(config.mlp_hiddens),
        "rnn": RNNRegressor(config.cell, config.num_hiddens, config.num_layers),
    }
    results = {}
    for name, model in models.items():
        start = time.perf_counter()
        params, losses = fit(model, *train, config, config.seed)
        predict_jit = jax.jit(lambda f, p=params, m=model: m.apply({"params": p}, f))

        def predict(f, fn=predict_jit):
            return np.asarray(fn(jnp.asarray(f, jnp.float32)))

        results[name] = evaluate(predict, x, features, config)
        results[name]["train_loss"] = losses
        results[name]["seconds"] = time.perf_counter() - start

    _plot(time_axis, x, results, config, workdir)
    summary = {name: {k: v for k, v in r.items() if k != "curves"} for name, r in results.items()}
    write_text_atomic(workdir / "sine_results.json", json.dumps(summary, indent=2) + "\n")
    header = "model  1-step(all)  1-step(test)  free-run  " + "  ".join(
        f"{k}-step" for k in config.k_steps
    )
    print(header)
    for name, r in summary.items():
        ks = "  ".join(f"{r['k_step_mse'][k]:.4f}".rjust(len(f"{k}-step")) for k in config.k_steps)
        print(
            f"{name:<5}  {r['onestep_mse']:>11.4f}  {r['onestep_test_mse']:>12.4f}  "
            f"{r['multistep_mse']:>8.4f}  {ks}"
        )
    print(f"(mean squared errors against the observed series; noise variance {config.noise**2})")
    return summary


def _plot(time_axis, x, results, config, workdir: Path) -> None:
    """The book's two figures, one panel per model: 1-step and free-running predictions
    against the data, and the k-step-ahead predictions."""
    tau, start = config.tau, config.n_train + config.tau

    def predictions(ax, curves):
        ax.plot(time_axis, x, label="data", lw=1)
        ax.plot(time_axis[tau:], curves["onestep"], label="1-step preds", lw=1)
        ax.plot(time_axis[start:], curves["multistep"][start:], label="multistep preds", lw=1)

    def k_steps(ax, curves):
        table = curves["k_table"]
        for k in config.k_steps:
            times = time_axis[tau + k - 1 : tau + k - 1 + table.shape[0]]
            ax.plot(times, table[:, tau + k - 1], label=f"{k}-step preds", lw=1)

    _panels(results, predictions, config.T, workdir / "sine_predictions.png")
    _panels(results, k_steps, config.T, workdir / "sine_k_step.png")


def _panels(results, draw, T: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(6, 2.4 * len(results)), dpi=110)
    for ax, (name, r) in zip(axes, results.items()):
        draw(ax, r["curves"])
        ax.set_title(name)
        ax.set_xlim(1, T)
        ax.legend(fontsize=7, loc="lower left")
    axes[-1].set_xlabel("time")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
