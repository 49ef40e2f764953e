"""Orbax checkpoints holding the train state, the grain iterator state and the config.

One checkpoint directory per run (`WORKDIR/checkpoints/<step>`; WORKDIR local or `gs://`,
`vasa_jax.paths`). Saving is atomic
(Orbax writes to a temporary folder and renames), so an interrupted save, even a
`kill -9`, leaves the previous checkpoint intact.

Saves are asynchronous by default: `save` returns once the state is copied to host
memory (and the data iterator's position recorded), and the files are written in a
background thread while the next steps train; the next `save` and `close` wait for it.

Restoring takes the newest checkpoint that reads. One that does not (a file missing or
cut short) is reported and, once an older one has restored, moved to
`WORKDIR/checkpoints_damaged/` so the run continues from the older one; if none reads,
the run and its checkpoints disagree (another model or data) and that is an error.
"""

import logging
from typing import Any, Callable

import grain
import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from vasa_jax import config, paths
from vasa_jax.errors import UserError

log = logging.getLogger("vasa_jax.train")

DAMAGED = "checkpoints_damaged"


class Checkpointer:
  """Saves and restores `(state, data iterator, config)` together.

  Only the training loop opens a run as its `writer`: a writer removes the temporary folders of
  saves cut short by a kill and sets damaged checkpoints aside; a reader (evaluation, export,
  sampling from a run that may still be training) changes nothing.
  """

  def __init__(self, workdir: str, *, writer: bool = False, max_to_keep: int = 3, async_save: bool = True):
    self.workdir = paths.path(workdir)
    self.directory = self.workdir / "checkpoints"
    self.writer = writer
    # A reader is not Orbax's read_only (which logs warnings on every open): it creates, cleans and
    # saves nothing because it is never asked to.
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=writer,
                                           enable_async_checkpointing=async_save,
                                           cleanup_tmp_directories=writer)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "data", "config"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_iter: Any, config_dict: dict) -> None:
    """Starts saving; returns once `state` may change (it is on the host) and `data_iter` may advance."""
    args = {"state": ocp.args.StandardSave(state), "config": ocp.args.JsonSave(config_dict)}
    if data_iter is not None:
      args["data"] = grain.checkpoint.CheckpointSave(data_iter)  # a blocking item: its state is read now
    self.manager.save(step, args=ocp.args.Composite(**args), force=True)

  def wait(self) -> None:
    """Blocks until the last save is on disk."""
    self.manager.wait_until_finished()

  def restore_latest(self, abstract_state: Any, data_iter: Any = None) -> tuple[Any, int | None]:
    """(state, step) of the newest checkpoint that restores into `abstract_state`'s structure and
    shardings (the iterator in place); (None, None) when there is no checkpoint yet."""

    def read(step):
      args = {"state": ocp.args.StandardRestore(abstract_state)}
      if data_iter is not None:
        args["data"] = grain.checkpoint.CheckpointRestore(data_iter)
      return self.manager.restore(step, args=ocp.args.Composite(**args))["state"]

    return self._newest_readable(read)

  def restore_raw(self, step: int | None = None) -> tuple[Any, int | None]:
    """(state as nested dicts of host arrays, step) of `step` or the newest readable checkpoint,
    without needing its structure (for inference)."""

    def read(step):
      restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
      return jax.tree.map(jax.device_get, restored["state"])

    return (read(step), step) if step is not None else self._newest_readable(read)

  def config(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]

  def close(self) -> None:
    """Waits for a save in flight, then releases the manager."""
    self.manager.close()

  def _newest_readable(self, read: Callable[[int], Any]) -> tuple[Any, int | None]:
    failed: list[tuple[int, Exception]] = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        value = read(step)
      except Exception as e:  # noqa: BLE001 - any reader error: tensorstore, JSON, missing files
        failed.append((step, e))
        log.warning("checkpoint %s/%d cannot be read (%s: %s); trying the previous one",
                    self.directory, step, type(e).__name__, str(e)[:300])
        continue
      if failed:
        log.warning("resuming from checkpoint %d: %s unreadable", step,
                    ", ".join(str(s) for s, _ in failed))
        if self.writer:  # An older one read, so the newer ones are damaged rather than of another model.
          self._set_aside([s for s, _ in failed])
      return value, step
    if failed:
      step, e = failed[0]
      raise UserError(f"no checkpoint in {self.directory} restores (newest, {step}: {type(e).__name__}: "
                      f"{str(e)[:200]}); it does not match this run's model or data: use a new --workdir "
                      "or the config it was made with")
    return None, None

  def _set_aside(self, steps: list[int]) -> None:
    """Moves damaged step folders out of the manager's view, keeping them for inspection."""
    if jax.process_index() == 0:
      target = paths.make_folder(self.workdir / DAMAGED)
      note = target / "README.txt"  # Also makes the folder exist on object stores, for the moves.
      if not note.exists():
        note.write_text("Checkpoints that could not be restored, moved here by vasa_jax.train.\n")
      for step in steps:
        dst, n = target / str(step), 1
        while dst.exists():
          dst, n = target / f"{step}.{n}", n + 1
        (self.directory / str(step)).rename(dst)
        log.warning("moved damaged checkpoint %d to %s", step, dst)
    multihost_utils.sync_global_devices("vasa_jax:set_aside_damaged_checkpoints")
    self.manager.reload()


def load_run(workdir: str, step: int | None = None):
  """(config, saved state as nested dicts of arrays, step) of a run folder's checkpoint (default:
  the newest that reads)."""
  if not (paths.path(workdir) / "checkpoints").is_dir():
    raise UserError(f"{workdir!r} holds no checkpoints/ folder; give the --workdir of a training run")
  ckpt = Checkpointer(workdir)
  try:
    state, step = ckpt.restore_raw(step)
    if step is None:
      raise UserError(f"{workdir!r} has no finished checkpoint yet")
    cfg = config.from_stored(ckpt.config(step))
  finally:
    ckpt.close()
  return cfg, state, step


def load_ema(workdir: str, step: int | None = None):
  """(config, EMA weights, step) of a run folder: what sampling and evaluation use."""
  cfg, state, step = load_run(workdir, step)
  return cfg, state["ema"], step
