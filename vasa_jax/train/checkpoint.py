"""Orbax checkpoints holding the train state, the grain iterator state and the config.

One checkpoint directory per run (`WORKDIR/checkpoints/<step>`). Saving is atomic
(Orbax writes to a temporary folder and renames), so an interrupted save leaves the
previous checkpoint intact; `restore_latest` resumes from the newest one.
"""

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from vasa_jax import config
from vasa_jax.errors import UserError


class Checkpointer:
  """Saves and restores `(state, data iterator, config)` together."""

  def __init__(self, workdir: str, *, max_to_keep: int = 3):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=False)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "data", "config"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_iter: Any, config_dict: dict) -> None:
    args = {"state": ocp.args.StandardSave(state), "config": ocp.args.JsonSave(config_dict)}
    if data_iter is not None:
      args["data"] = grain.checkpoint.CheckpointSave(data_iter)
    self.manager.save(step, args=ocp.args.Composite(**args), force=True)
    self.manager.wait_until_finished()

  def restore(self, step: int, abstract_state: Any, data_iter: Any = None) -> Any:
    """Restores the state into `abstract_state`'s structure/shardings (and the iterator in place)."""
    args = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      args["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(**args))
    except (ValueError, KeyError, FileNotFoundError) as e:
      raise UserError(f"checkpoint {self.directory}/{step} does not match this run's model or data "
                      f"({type(e).__name__}: {str(e)[:200]}); use a new --workdir or the config it was made with") from None
    return restored["state"]

  def restore_raw(self, step: int) -> Any:
    """The saved state as nested dicts of host arrays, without needing its structure (for inference)."""
    restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return jax.tree.map(lambda x: jax.device_get(x), restored["state"])

  def config(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]

  def close(self) -> None:
    self.manager.close()


def load_run(workdir: str, step: int | None = None):
  """(config, saved state as nested dicts of arrays, step) of a run folder's checkpoint."""
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise UserError(f"{workdir!r} holds no checkpoints/ folder; give the --workdir of a training run")
  ckpt = Checkpointer(workdir)
  try:
    step = ckpt.latest_step() if step is None else step
    if step is None:
      raise UserError(f"{workdir!r} has no finished checkpoint yet")
    cfg = config.from_stored(ckpt.config(step))
    state = ckpt.restore_raw(step)
  finally:
    ckpt.close()
  return cfg, state, step


def load_ema(workdir: str, step: int | None = None):
  """(config, EMA weights, step) of a run folder: what sampling and evaluation use."""
  cfg, state, step = load_run(workdir, step)
  return cfg, state["ema"], step
