"""Training maths: the train state, the optimizers, the jitted step, and a compiled chunk of steps.

The book's `train_ch8`: mean softmax cross-entropy over the T*B targets,
gradients clipped to global L2 norm `clip`, plain SGD with rate `lr`, one
step per minibatch; the hidden state starts at zero each epoch (each batch
under random partitioning) and is otherwise carried over with its gradient
stopped at the batch boundary.

The model contract it relies on is `rnnlm_jax.nn.contract`'s.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct
from flax.training import train_state

from rnnlm_jax.nn.contract import begin_state, check_logits, check_model
from rnnlm_jax.nn.models import RNNModel, State


class TrainState(train_state.TrainState):
    """flax's train state (params, optimizer state, step) plus the dropout key and the
    model's logits layout.

    `dropout_key` is raw key data (uint32 `[2]`, so Orbax can save it); step t draws its
    dropout masks from `fold_in(dropout_key, t)`, so a resumed run draws the same ones.
    `logits_layout` (static) is the model's, see the module docstring.
    """

    dropout_key: jax.Array
    logits_layout: str = struct.field(pytree_node=False)


def make_optimizer(lr, clip: float) -> optax.GradientTransformation:
    """The book's updater: clip by global L2 norm `clip`, then SGD with rate `lr` (a number,
    or an optax schedule of the step)."""
    return optax.chain(optax.clip_by_global_norm(clip), optax.sgd(lr))


def epoch_decay(lr: float, decay: float, decay_after: int, steps_per_epoch: int):
    """Zaremba et al.'s schedule: `lr * decay ** max(epoch + 1 - decay_after, 0)` in epoch
    0, 1, ... (epoch = step // steps_per_epoch), as an optax schedule."""

    def schedule(step):
        epoch = step // steps_per_epoch
        return lr * decay ** jnp.maximum(epoch + 1 - decay_after, 0).astype(jnp.float32)

    return schedule


OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "linear")


def lr_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int = 1):
    """The learning rate `config` describes, as a number (constant) or an optax schedule of
    the step: `warmup_steps` linear from 0, then `constant` (times Zaremba et al.'s
    `lr_decay` per epoch, if set), or `cosine` / `linear` decay to `final_lr_fraction * lr`
    at the last step (`train_steps` when set, else `num_epochs * steps_per_epoch`)."""
    lr, warmup = config.lr, config.warmup_steps
    kind = config.get("lr_schedule", "constant")
    if kind == "constant":
        base = lr if config.lr_decay == 1.0 else epoch_decay(
            lr, config.lr_decay, config.decay_after, steps_per_epoch)  # fmt: skip
        if not warmup:
            return base
        rest = base if callable(base) else optax.constant_schedule(base)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, lr, warmup), lambda t: rest(t + warmup)], [warmup]
        )
    steps = config.get("train_steps", 0) or config.num_epochs * steps_per_epoch
    total = max(steps, warmup + 1)
    end = lr * config.final_lr_fraction
    if kind == "cosine":
        decay = optax.cosine_decay_schedule(lr, total - warmup, end / lr)
    else:
        decay = optax.linear_schedule(lr, end, total - warmup)
    if not warmup:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


# Weight decay by role: the weight matrices decay (kernels, embeddings, the RG-LRU's
# block-diagonal gate weights `w`, the LRU's `B`, `C` and a matrix `D`); these names never
# do, whatever their rank: biases (the RG-LRU's gate biases `b [heads, H / heads]` too),
# norms' scales and a recurrence's per-unit parameters; nor anything in a depthwise Conv1D.
NOT_DECAYED_NAMES = frozenset({"bias", "b", "scale", "a_param", "nu_log", "theta_log",
                               "gamma_log"})  # fmt: skip
NOT_DECAYED_MODULES = frozenset({"conv_1d"})  # Griffin's depthwise filters `[width, H]`


def decays(path: tuple, leaf) -> bool:
    """Whether weight decay applies to the parameter at `path` (flax's parameter tree keys):
    a weight matrix (two or more axes) not named as a bias, scale or per-unit parameter
    (`NOT_DECAYED_NAMES`) and not inside a depthwise convolution (`NOT_DECAYED_MODULES`)."""
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    if names[-1] in NOT_DECAYED_NAMES or NOT_DECAYED_MODULES & set(names[:-1]):
        return False
    return leaf.ndim >= 2


def _decayed(params):
    """Weight decay's mask over `params` (`decays` for every leaf)."""
    return jax.tree_util.tree_map_with_path(decays, params)


def config_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int = 1):
    """The optimizer `config` describes: gradients clipped to global norm `clip`, then
    `sgd` (the book's; with `lr_decay` per epoch if set), `adam` (weight decay as an L2 term
    added to the gradient) or `adamw` (decoupled weight decay), at `lr_schedule(config)`.
    Weight decay applies to the matrices only. The book's configs give exactly
    `make_optimizer(lr, clip)`."""
    name = config.get("optimizer", "sgd")
    wd = config.get("weight_decay", 0.0)
    lr = lr_schedule(config, steps_per_epoch)
    if name == "sgd" and not wd:
        return make_optimizer(lr, config.clip)
    b1, b2 = config.get("beta1", 0.9), config.get("beta2", 0.999)
    decay = [optax.add_decayed_weights(wd, mask=_decayed)] if wd else []
    if name == "sgd":
        tx = optax.chain(*decay, optax.sgd(lr))
    elif name == "adam":
        tx = optax.chain(*decay, optax.adam(lr, b1, b2))
    else:
        tx = optax.adamw(lr, b1, b2, weight_decay=wd, mask=_decayed)
    return optax.chain(optax.clip_by_global_norm(config.clip), tx)


def create_train_state(
    model: RNNModel,
    rng: jax.Array,
    lr: float | None = None,
    clip: float | None = None,
    batch_size: int = 1,
    num_steps: int = 1,
    *,
    tx: optax.GradientTransformation | None = None,
) -> TrainState:
    """Initialises the model's parameters and the optimizer state; `step` starts at 0.

    `tx`: any optax optimizer, e.g. `create_train_state(model, key, tx=optax.adam(1e-3))`;
    without one, the book's clipped SGD with `lr` and `clip`. `batch_size` and `num_steps`
    are the shape of the tokens the parameters are initialised with (any will do for a
    model whose parameters do not depend on them). Checks the model contract first
    (`rnnlm_jax.nn.contract`).
    """
    layout = check_model(model)
    if tx is None:
        if lr is None or clip is None:
            raise ValueError("create_train_state needs lr and clip, or an optax tx")
        tx = make_optimizer(lr, clip)
    tokens = jnp.zeros((batch_size, num_steps), jnp.int32)
    (logits, _), variables = model.init_with_output(rng, tokens, begin_state(model, batch_size))
    check_logits(logits, layout, batch_size, num_steps)
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=tx,
        dropout_key=jax.random.key_data(jax.random.fold_in(rng, 1)),
        logits_layout=layout,
    )


def initial_train_state(
    model: RNNModel, config: ml_collections.ConfigDict, steps_per_epoch: int = 1
) -> TrainState:
    """The train state a run of `config` starts from (parameters drawn from `config.seed`;
    `steps_per_epoch` for a learning-rate schedule)."""
    return create_train_state(
        model,
        jax.random.key(config.seed),
        None,
        None,
        config.batch_size,
        config.num_steps,
        tx=config_optimizer(config, steps_per_epoch),
    )


def abstract_train_state(
    model: RNNModel, config: ml_collections.ConfigDict, steps_per_epoch: int = 1
) -> TrainState:
    """The train state's structure, shapes and dtypes for `config`, allocating nothing."""
    return jax.eval_shape(lambda: initial_train_state(model, config, steps_per_epoch))


def loss_fn(
    params,
    apply_fn,
    carry: State,
    X: jax.Array,
    Y: jax.Array,
    dropout_rng=None,
    logits_layout: str = "time_major",
):
    """Mean cross-entropy of the logits for `X` against `Y` (both int `[B, T]`).

    With `dropout_rng` the model runs in training mode (dropout on); without, it is
    deterministic. Returns `(mean_loss, final_state)`. The targets are `Y` for
    `batch_major` logits `[B, T, V]`, and `Y.T` flattened for `time_major` ones `[T * B, V]`.
    """
    if dropout_rng is None:
        logits, carry = apply_fn({"params": params}, X, carry)
    else:
        logits, carry = apply_fn(
            {"params": params}, X, carry, deterministic=False, rngs={"dropout": dropout_rng}
        )
    check_logits(logits, logits_layout, *Y.shape)
    targets = Y if logits_layout == "batch_major" else Y.T.reshape(-1)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return losses.mean(), carry


def _train_step(state: TrainState, carry: State, X: jax.Array, Y: jax.Array):
    carry = jax.lax.stop_gradient(carry)
    dropout_rng = jax.random.fold_in(jax.random.wrap_key_data(state.dropout_key), state.step)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, carry), grads = grad_fn(
        state.params, state.apply_fn, carry, X, Y, dropout_rng, state.logits_layout
    )
    state = state.apply_gradients(grads=grads)
    num_tokens = Y.size
    step_metrics = {
        "loss_sum": loss * num_tokens,
        "num_tokens": jnp.asarray(num_tokens, jnp.float32),
        "grad_norm": optax.tree.norm(grads),
    }
    return state, carry, step_metrics


train_step = jax.jit(_train_step, donate_argnums=0)
train_step.__doc__ = """One clipped-SGD step: `(state, carry, X, Y) -> (state, carry, metrics)`.

Args:
  state: the `TrainState` (donated: do not reuse the one passed in).
  carry: the hidden state `[L, B, H]` (LSTM: a pair); its gradient is stopped.
  X, Y: int32 `[B, T]` inputs and targets.

Returns:
  The updated state, the final hidden state and `metrics`: `loss_sum` (the
  summed token losses), `num_tokens` and `grad_norm` (the global gradient
  norm before clipping).
"""


# The stream `state_reset` draws from: its rows for step t from `fold_in(fold_in(dropout_key,
# RESET_STREAM), t)`, apart from the dropout masks' `fold_in(dropout_key, t)`.
RESET_STREAM = 0x5E7


def reset_rows(state: TrainState, carry: State, begin_state: State, prob: float) -> State:
    """`carry` with each row (the batch axis 1 of every leaf) replaced by `begin_state`'s
    with probability `prob`, drawn from the train state's key and step (so a resumed run
    resets the same rows)."""
    key = jax.random.fold_in(jax.random.wrap_key_data(state.dropout_key), RESET_STREAM)
    B = jax.tree.leaves(carry)[0].shape[1]
    reset = jax.random.bernoulli(jax.random.fold_in(key, state.step), prob, (B,))

    def pick(kept, zero):
        return jnp.where(reset.reshape((1, B) + (1,) * (kept.ndim - 2)), zero, kept)

    return jax.tree.map(pick, carry, begin_state)


def _train_chunk(
    state, carry, X_all, Y_all, begin_state, reset_each_batch, state_reset=0.0, steps=None
):  # fmt: skip
    def one(state, carry, X, Y):
        if reset_each_batch:
            carry = begin_state
        elif state_reset > 0:
            carry = reset_rows(state, carry, begin_state, state_reset)
        return _train_step(state, carry, X, Y)

    if steps is not None:
        return _first_steps(one, state, carry, X_all, Y_all, steps)

    def body(carried, batch):
        state, carry, step_metrics = one(*carried, *batch)
        return (state, carry), step_metrics

    (state, carry), per_step = jax.lax.scan(body, (state, carry), (X_all, Y_all))
    chunk_metrics = {
        "loss_sum": per_step["loss_sum"].sum(),
        "num_tokens": per_step["num_tokens"].sum(),
        "grad_norm": per_step["grad_norm"].mean(),
    }
    return state, carry, chunk_metrics


def _first_steps(one, state, carry, X_all, Y_all, steps):
    """`one` over the first `steps` (traced) of the stacked minibatches, by a loop whose trip
    count is data (`fori_loop` with a traced bound is a while loop): the metrics summed as
    it goes."""
    shapes = jax.eval_shape(one, state, carry, X_all[0], Y_all[0])[2]
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def body(i, carried):
        state, carry, sums = carried
        state, carry, step_metrics = one(state, carry, X_all[i], Y_all[i])
        return state, carry, jax.tree.map(jnp.add, sums, step_metrics)

    state, carry, sums = jax.lax.fori_loop(0, steps, body, (state, carry, zeros))
    return state, carry, {**sums, "grad_norm": sums["grad_norm"] / steps}


train_chunk = jax.jit(
    _train_chunk, donate_argnums=0, static_argnames=("reset_each_batch", "state_reset")
)
train_chunk.__doc__ = """A run of consecutive minibatches as one compiled program: `train_step`
scanned over them, `(state, carry, X_all, Y_all, begin_state) -> (state, carry, metrics)`.

The run loop's unit of work: an epoch is one chunk or several (`rnnlm_jax.train.loop`),
and chaining chunks gives the same state as one chunk over all their minibatches. The
hidden state `carry` is carried from batch to batch (gradient stopped at each boundary),
or reset to `begin_state` before every batch if `reset_each_batch` (random partitioning);
with `state_reset` p > 0 each row is reset before a batch with probability p
(`reset_rows`). Nothing syncs with the host inside. With `steps` (an int scalar, not
static) only the first `steps` minibatches train, the rest of `X_all` is padding: one
compiled program serves every chunk length up to N (the run loop's remainders).

Args:
  state: the `TrainState` (donated).
  carry: the hidden state the first minibatch starts from.
  X_all, Y_all: int32 `[N, B, T]`, the chunk's stacked minibatches.
  begin_state: the zero state `[L, B, H]` (LSTM: a pair).
  reset_each_batch: static.
  state_reset: static, the probability of each row's reset (sequential partitioning).
  steps: None (all N), or how many of the N minibatches to train, 1 <= steps <= N.

Returns:
  The new state, the hidden state after the last minibatch, and device scalars:
  `loss_sum` and `num_tokens` over the chunk, and `grad_norm`, the mean over its steps of
  the norm before clipping.
"""


def _train_epoch(state, X_all, Y_all, begin_state, reset_each_batch):
    state, _, epoch_metrics = _train_chunk(
        state, begin_state, X_all, Y_all, begin_state, reset_each_batch
    )
    return state, epoch_metrics


train_epoch = jax.jit(_train_epoch, donate_argnums=0, static_argnames="reset_each_batch")
train_epoch.__doc__ = """One epoch as one compiled program: `train_chunk` over all its
minibatches from `begin_state`: `(state, X_all, Y_all, begin_state) -> (state, metrics)`.
"""


def _evaluate_from(state: TrainState, carry: State, X_all: jax.Array, Y_all: jax.Array):
    def body(carry, batch):
        X, Y = batch
        loss, carry = loss_fn(
            state.params, state.apply_fn, carry, X, Y, logits_layout=state.logits_layout
        )
        return carry, loss * Y.size

    carry, losses = jax.lax.scan(body, carry, (X_all, Y_all))
    sums = {"loss_sum": losses.sum(), "num_tokens": jnp.asarray(Y_all.size, jnp.float32)}
    return carry, sums


@jax.jit
def evaluate(state: TrainState, X_all: jax.Array, Y_all: jax.Array, begin_state: State):
    """Held-out loss, dropout off: the state is carried through the stacked minibatches
    `X_all, Y_all` int32 `[N, B, T]` (sequential order). Returns device scalars
    `loss_sum` and `num_tokens`."""
    return _evaluate_from(state, begin_state, X_all, Y_all)[1]


evaluate_from = jax.jit(_evaluate_from)
evaluate_from.__doc__ = """`evaluate` from the hidden state `carry`, returning the state after
the last minibatch too: `(state, carry, X_all, Y_all) -> (carry, sums)`, so a held-out text
too large for one call is read a chunk of minibatches at a time, its state carried."""
