"""Device mesh and shardings: data parallel with `jax.jit` over a named `data` axis.

Parameters are replicated, batches are split along their leading axis across all
devices of all processes; XLA inserts the gradient all-reduce. The same code runs
on one CPU, 8 fake CPU devices (`--xla_force_host_platform_device_count=8`), a GPU
or a multi-host TPU pod slice.
"""

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from vasa_jax.errors import UserError

DATA_AXIS = "data"


def make_mesh() -> jax.sharding.Mesh:
  """A 1-D mesh over every device of every process."""
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch: int) -> None:
  n = jax.device_count()
  if global_batch % n:
    raise UserError(f"batch size {global_batch} does not split over {n} devices; use a multiple of {n}")


def put_batch(batch, mesh):
  """Host-local numpy batch (this process's slice) -> globally sharded jax arrays."""
  sharding = batch_sharding(mesh)

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree.map(put, batch)
