"""Beyond one device: the 1-D `('data',)` mesh, global minibatches, multi-process start-up.

Data parallelism is left to the compiler: the train state is replicated, minibatches and the
hidden-state carry are split along the batch axis over all devices (of all processes), and
the one jitted epoch program then averages the gradients itself, since the loss is the mean
over the global batch. Every process computes the same epoch data from `(seed, epoch)` and
hands JAX only its own slice.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Starts `jax.distributed` when the run is one of several processes.

    Explicit coordinator flags win; otherwise SLURM is detected by `SLURM_NTASKS > 1` (a
    single-task job, e.g. one element of a job array, stays single-process). Returns
    whether it initialised.
    """
    if coordinator_address:
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
        return True
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        jax.distributed.initialize()  # JAX reads the SLURM environment.
        return True
    return False


def data_mesh() -> Mesh:
    """All devices of all processes on one `data` axis (process-major order), `Auto` axes:
    the explicit-sharding default of `jax.make_mesh` breaks linen RNNs."""
    return Mesh(np.array(jax.devices()), ("data",), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh, ndim: int, axis: int) -> NamedSharding:
    """Split along `axis` over the `data` axis, replicated along the others."""
    spec = [None] * ndim
    spec[axis] = "data"
    return NamedSharding(mesh, P(*spec))


def global_array(x: np.ndarray, mesh: Mesh, axis: int) -> jax.Array:
    """A host array that every process holds in full, as one global array split along `axis`.

    Each process hands over only its contiguous slice (its devices come in process order
    on the mesh).
    """
    sharding = batch_sharded(mesh, x.ndim, axis)
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    per_process = x.shape[axis] // jax.process_count()
    start = jax.process_index() * per_process
    local = np.take(np.asarray(x), np.arange(start, start + per_process), axis=axis)
    return jax.make_array_from_process_local_data(sharding, local, x.shape)


def check_divisible(batch_size: int) -> str | None:
    """Why `batch_size` cannot be split over the devices, or None if it can."""
    n = jax.device_count()
    if batch_size % n:
        return f"batch_size {batch_size} is not divisible by the {n} devices it is split over"
    return None


def agree(value: bool) -> bool:
    """Process 0's `value`, on every process (a multi-process run decides as one)."""
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(value)))


SIGNALS = ("SIGTERM", "SIGINT")  # a stop request's signal names, in a collective as 1, 2


def agreed_signal(name: str | None) -> str | None:
    """The stop request of the lowest-numbered process that has one (`SIGTERM`, `SIGINT` or
    None), on every process: one all-gather of the processes' flags."""
    from jax.experimental import multihost_utils

    code = np.int32(SIGNALS.index(name) + 1 if name else 0)
    codes = np.asarray(multihost_utils.process_allgather(code)).ravel()
    requested = [int(c) for c in codes if c]
    return SIGNALS[requested[0] - 1] if requested else None


def is_main_process() -> bool:
    """Process 0 writes the logs, metrics and plots; every process saves checkpoints."""
    return jax.process_index() == 0


def local_rows(batch_size: int) -> slice:
    """The rows of a global minibatch of `batch_size` that this process hands over (its
    devices' share, in process order)."""
    per_process = batch_size // jax.process_count()
    start = jax.process_index() * per_process
    return slice(start, start + per_process)


def from_local(local: np.ndarray, mesh: Mesh, axis: int, batch_size: int) -> jax.Array:
    """This process's rows `local_rows(batch_size)` (along `axis`) as one global array: a
    process reads only its own rows of the data."""
    shape = list(local.shape)
    shape[axis] = batch_size
    sharding = batch_sharded(mesh, local.ndim, axis)
    if jax.process_count() == 1:
        return jax.device_put(local, sharding)
    return jax.make_array_from_process_local_data(sharding, local, tuple(shape))
