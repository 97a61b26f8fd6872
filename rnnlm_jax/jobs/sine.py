"""Exercise 3: the autoregressive model of the book's "sequence models" section, with an RNN.

Data: `x_t = sin(0.01 t) + N(0, noise)` for t = 1..T; features are windows of the last
`tau` values, labels the next value; the first `n_train` examples train. Two regressors are
trained on the same data with the same seed and the book's recipe (squared loss, Adam,
minibatches of 16): the book's MLP (tau -> 10 ReLU -> 1) and an RNN that reads the window as
a sequence of `tau` scalars (`RNNLayer`, float inputs) and predicts from its last state.
Both are then judged as the book does: 1-step-ahead predictions, a free-running multi-step
prediction from the end of the training data, and k-step-ahead predictions (k = 1, 4, 16, 64).

Both train side by side through the one run loop (`rnnlm_jax.train.loop`), so the job
resumes after a stop or a crash, bit-exact; each model's epochs are exactly those of its own
run (its minibatch order is the `epoch`-th permutation drawn from its seed).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from rnnlm_jax import extras
from rnnlm_jax.config.checks import validate
from rnnlm_jax.files import write_json_atomic, write_text_atomic
from rnnlm_jax.nn.models import RNNLayer
from rnnlm_jax.train import checkpoints, loop

log = logging.getLogger(__name__)


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


def adam_step(model: nn.Module, tx: optax.GradientTransformation):
    """The book's step, jitted: squared loss, `tx` (Adam):
    `(params, opt_state, X, y) -> (params, opt_state, loss)`."""

    @jax.jit
    def step(params, opt_state, X, y):
        def loss_fn(p):
            return jnp.mean((model.apply({"params": p}, X) - y) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The book's shuffle of epoch `epoch` (0-based): the `epoch`-th permutation of `n`
    drawn from one generator seeded `seed` (the order an uninterrupted run draws)."""
    rng = np.random.default_rng(seed)
    for _ in range(epoch):
        rng.permutation(n)
    return rng.permutation(n)


def fit(model: nn.Module, features, labels, config, seed: int) -> tuple[Any, list[float]]:
    """The book's training alone (no workdir): squared loss, Adam, shuffled minibatches.
    Returns `(params, per-epoch mean training loss)`."""
    params = model.init(jax.random.key(seed), features[:1])["params"]
    tx = optax.adam(config.lr)
    opt_state = tx.init(params)
    step = adam_step(model, tx)
    losses = []
    for epoch in range(config.num_epochs):
        order = epoch_order(len(features), seed, epoch)
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


class SineJob(loop.Job):
    """Exercise 3: the book's MLP and an RNN regressor, trained side by side on the same
    noisy sine series (see `loop.Job`)."""

    name = "sine"
    plot_keys = ("mlp_loss", "rnn_loss")
    plot_file = "train_loss.png"
    plot_ylabel = "training loss (MSE)"

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = validate(config)

    def load(self) -> None:
        c = self.config
        self.time_axis, self.x = make_series(c.T, c.noise, c.seed)
        self.features, labels = embed(self.x, c.tau)
        self.train = (self.features[: c.n_train], labels[: c.n_train])
        self.models = {
            "mlp": MLP(c.mlp_hiddens),
            "rnn": RNNRegressor(c.cell, c.num_hiddens, c.num_layers),
        }
        self.tx = optax.adam(c.lr)
        self.steps = {name: adam_step(m, self.tx) for name, m in self.models.items()}
        self.steps_per_epoch = math.ceil(c.n_train / c.batch_size)

    def init_state(self):
        state = {}
        for name, model in self.models.items():
            params = model.init(jax.random.key(self.config.seed), self.train[0][:1])["params"]
            state[name] = {"params": params, "opt_state": self.tx.init(params)}
        return state

    def abstract_state(self):
        return jax.eval_shape(self.init_state)

    def write_files(self, workdir: Path) -> None:
        write_json_atomic(workdir / checkpoints.CONFIG_FILE, self.config.to_dict())

    def epoch_data(self, epoch: int):
        return epoch_order(len(self.train[0]), self.config.seed, epoch)

    def train_chunk(self, state, carry, order, start: int, stop: int):
        B = self.config.batch_size
        features, labels = self.train
        sums = {}
        for name, step in self.steps.items():
            began = time.perf_counter()
            params, opt_state = state[name]["params"], state[name]["opt_state"]
            total = 0.0
            for i in range(start * B, min(stop * B, len(order)), B):
                idx = order[i : i + B]
                params, opt_state, loss = step(params, opt_state, features[idx], labels[idx])
                total += float(loss) * len(idx)
            state = {**state, name: {"params": params, "opt_state": opt_state}}
            sums[f"{name}_loss_sum"] = total
            sums[f"{name}_seconds"] = time.perf_counter() - began
        return state, carry, sums

    def end_epoch(self, state, epoch: int, sums: dict, seconds: float) -> dict:
        n = len(self.train[0])
        return {
            "epoch": epoch,
            **{f"{name}_loss": sums[f"{name}_loss_sum"] / n for name in self.models},
            **{f"{name}_seconds": sums[f"{name}_seconds"] for name in self.models},
            "seconds": seconds,
        }

    def log_epoch(self, state, record: dict, logger) -> None:
        losses = ", ".join(f"{name} {record[f'{name}_loss']:.4f}" for name in self.models)
        log.info(f"epoch {record['epoch']}: training loss {losses}")

    def report(self, state, result: loop.RunResult) -> None:
        c, workdir = self.config, self.workdir
        results = {}
        for name, model in self.models.items():
            start = time.perf_counter()
            params = state[name]["params"]
            predict_jit = jax.jit(lambda f, p=params, m=model: m.apply({"params": p}, f))

            def predict(f, fn=predict_jit):
                return np.asarray(fn(jnp.asarray(f, jnp.float32)))

            results[name] = evaluate(predict, self.x, self.features, c)
            results[name]["train_loss"] = [r[f"{name}_loss"] for r in result.history]
            train_seconds = sum(r.get(f"{name}_seconds", 0.0) for r in result.history)
            results[name]["seconds"] = train_seconds + time.perf_counter() - start
        _plot(self.time_axis, self.x, results, c, workdir)
        summary = {n: {k: v for k, v in r.items() if k != "curves"} for n, r in results.items()}
        write_text_atomic(workdir / "sine_results.json", json.dumps(summary, indent=2) + "\n")
        header = "model  1-step(all)  1-step(test)  free-run  " + "  ".join(
            f"{k}-step" for k in c.k_steps
        )
        log.info(header)
        for name, r in summary.items():
            ks = "  ".join(f"{r['k_step_mse'][k]:.4f}".rjust(len(f"{k}-step")) for k in c.k_steps)
            log.info(
                f"{name:<5}  {r['onestep_mse']:>11.4f}  {r['onestep_test_mse']:>12.4f}  "
                f"{r['multistep_mse']:>8.4f}  {ks}"
            )
        log.info(f"(mean squared errors against the observed series; noise variance {c.noise**2})")
        result.extras["summary"] = summary


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains (or resumes) the MLP baseline and the RNN on the same data in `workdir`;
    writes `sine_results.json`, `sine_predictions.png` and `sine_k_step.png` there and
    prints the errors. Returns the results (None after a stop)."""
    return loop.run(SineJob(config), workdir).extras.get("summary")


def _plot(time_axis, x, results, config, workdir: Path) -> None:
    """The book's two figures, one panel per model: 1-step and free-running predictions
    against the data, and the k-step-ahead predictions (skipped, with a warning, without
    matplotlib: the `plot` extra)."""
    if not extras.usable("matplotlib", "the sine figures"):
        return
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
