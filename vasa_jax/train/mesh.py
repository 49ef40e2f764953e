"""Device mesh and shardings: a `data` axis and an `fsdp` axis, set by the run config's `mesh` section.

  make_mesh(mesh_cfg, devices)        -> Mesh (data, fsdp) over every device (or the given ones)
  state_sharding(mesh, mesh_cfg)      -> leaf -> NamedSharding: the rule for params, optimizer state, EMA
  param_spec(shape, fsdp, min_params) -> the PartitionSpec of one array under that rule
  batch_sharding(mesh)                -> batches split along their leading axis over every device

Batches are split over both axes (every device gets its own examples). The train
state follows one rule, config data (`mesh.fsdp`, `mesh.fsdp_min_params`): an array
with at least `fsdp_min_params` elements is split along its largest dimension that
the `fsdp` axis divides; smaller arrays (biases, norms, scalars) and arrays no
dimension of which divides stay replicated. With `fsdp = 1` everything is
replicated (plain data parallelism); XLA inserts the all-gathers of sharded weights
and the reduce-scatters of their gradients. The train loop and the ahead-of-time
compiler (`aot.py`) build the mesh and the state's shardings through these same
functions, so what `aot` compiles is what trains. The same code runs on one CPU,
fake CPU devices (`--xla_force_host_platform_device_count=8`), a GPU, a multi-host
TPU pod slice, or a TPU topology described without a TPU (`aot --topology`).
"""

import math

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from vasa_jax.errors import UserError

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)


def fsdp_size(mesh_cfg, num_devices: int) -> int:
  """The `fsdp` axis length for `num_devices`: `mesh.fsdp` (-1: all of them; 1: replicated state)."""
  fsdp = 1 if mesh_cfg is None else int(mesh_cfg.fsdp)
  if fsdp == -1:
    return num_devices
  if fsdp < 1 or num_devices % fsdp:
    raise UserError(f"mesh.fsdp={fsdp} does not divide {num_devices} devices; use a divisor of "
                    f"{num_devices}, -1 (all devices) or 1 (replicated state)")
  return fsdp


def make_mesh(mesh_cfg=None, devices=None) -> jax.sharding.Mesh:
  """A 2-D (data, fsdp) mesh over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else list(devices)
  fsdp = fsdp_size(mesh_cfg, len(devices))
  return jax.make_mesh((len(devices) // fsdp, fsdp), BATCH_AXES,
                       axis_types=(jax.sharding.AxisType.Auto,) * 2, devices=devices)


def param_spec(shape, fsdp: int, min_params: int) -> P:
  """The rule for one array of the train state (see the module docstring)."""
  if fsdp == 1 or math.prod(shape) < min_params:
    return P()
  divisible = [(size, axis) for axis, size in enumerate(shape) if size % fsdp == 0]
  if not divisible:
    return P()
  _, axis = max(divisible)  # The largest; on a tie the last (output channels / features).
  return P(*([None] * axis + [FSDP_AXIS]))


def state_sharding(mesh, mesh_cfg):
  """`leaf -> NamedSharding` for every array of a train state (params, optimizer state, EMA)."""
  fsdp = mesh.shape[FSDP_AXIS]
  min_params = 0 if mesh_cfg is None else int(mesh_cfg.fsdp_min_params)
  return lambda leaf: NamedSharding(mesh, param_spec(leaf.shape, fsdp, min_params))


def describe(state_shardings, abstract) -> str:
  """One line: how much of a state (bytes) is sharded, e.g. for `aot`'s report."""
  total = sharded = 0
  count = 0
  for sharding, leaf in zip(jax.tree.leaves(state_shardings), jax.tree.leaves(abstract)):
    size = math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
    total += size
    if any(axis is not None for axis in sharding.spec):
      sharded += size
      count += 1
  return f"{count} arrays ({sharded / max(total, 1):.0%} of {total / 2**20:.0f} MiB) sharded"


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def check_batch_size(global_batch: int, num_devices: int | None = None, microbatches: int = 1) -> None:
  n = jax.device_count() if num_devices is None else num_devices
  if global_batch % n:
    raise UserError(f"batch size {global_batch} does not split over {n} devices; use a multiple of {n}")
  if microbatches < 1 or (global_batch // n) % microbatches:
    raise UserError(f"microbatches {microbatches}: each of the {n} devices' {global_batch // n} examples must "
                    f"split into that many equal slices; accepted: a divisor of {global_batch // n}")


def put_batch(batch, mesh):
  """Host-local numpy batch (this process's slice) -> globally sharded jax arrays."""
  sharding = batch_sharding(mesh)

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree.map(put, batch)
