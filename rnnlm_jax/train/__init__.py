"""Training: the maths of a step (`step`: the train state, the optimizer, `train_step`,
`train_chunk`, `evaluate`), the one run loop every job goes through (`loop`), and what the
loop keeps in a workdir (`checkpoints`, `metrics`, `workdir`, `preemption`, `parallel`).

`rnnlm_jax.train` offers the step's names directly (`train.create_train_state`,
`train.train_step`, ...); the loop and the checkpoints (Orbax) load only when imported.
"""

from rnnlm_jax.nn.contract import begin_state, check_logits, check_model, logits_by_step  # noqa: F401
from rnnlm_jax.train.step import (  # noqa: F401
    TrainState,
    _train_chunk,
    _train_epoch,
    _train_step,
    abstract_train_state,
    config_optimizer,
    create_train_state,
    epoch_decay,
    evaluate,
    initial_train_state,
    loss_fn,
    make_optimizer,
    train_chunk,
    train_epoch,
    train_step,
)
