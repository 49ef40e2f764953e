"""The training loop around one jitted step, shared by both stages.

A `Task` (`train/stage1.py`, `train/stage2.py`) supplies `init(rng) -> state`,
`train_step(state, batch, rng) -> (state, metrics)` and `host_batch(raw) -> batch`;
a `PreviewTask` also `preview(params, batch) -> image`. The loop owns the side effects:
born-sharded init or automatic resume from `WORKDIR/checkpoints`, checkpoints that
hold the state, the grain iterator and the config, TensorBoard scalars, a console
line with steps/s, examples/s, achieved FLOP/s as a share of a matmul peak measured
on the device at the start (XLA's count of the step's FLOPs) and ETA, preview grids, a NaN/Inf guard that stops before
anything bad is saved, and a save on SIGTERM/SIGINT (preemption).
"""

import json
import logging
import signal
import time
from typing import Any, Callable, Protocol, runtime_checkable

import jax
import ml_collections
import numpy as np
from tensorboardX import SummaryWriter

from vasa_jax import bundle as bundle_lib
from vasa_jax import media, paths, perf
from vasa_jax.errors import UserError
from vasa_jax.train import checkpoint as ckpt_lib
from vasa_jax.train import mesh as mesh_lib
from vasa_jax.train import state as state_lib

log = logging.getLogger("vasa_jax.train")


class Task(Protocol):
  """What the loop trains: pure functions of the state, plus the host-side batch conversion."""

  def init(self, rng: jax.Array) -> Any:
    """A fresh train state (a pytree with `step` and `ema`), jitted into its shardings by the loop.

    A task whose state holds host data that must not become compiled constants (stage 2's
    frozen wav2vec2) also defines `init_inputs() -> tuple`: the loop calls `init(rng, *inputs)`."""

  def train_step(self, state: Any, batch: dict, rng: jax.Array) -> tuple[Any, dict[str, jax.Array]]:
    """One update; metrics include `finite` (0 when the update was skipped for a NaN/Inf loss)."""

  def host_batch(self, raw: dict) -> dict:
    """A pipeline batch (numpy, on the host) -> the arrays `train_step` takes."""


@runtime_checkable
class PreviewTask(Task, Protocol):
  def preview(self, params: Any, batch: dict) -> jax.Array:
    """An image grid [H, W, 3] of what `params` (the EMA weights) make of `batch`."""


class Diverged(UserError):
  """The loss became NaN/Inf; the last checkpoint was kept."""


class _Preempted:
  """Turns SIGTERM/SIGINT into a flag the loop checks between steps."""

  def __init__(self):
    self.flag = False
    self._old = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread (e.g. under some test runners).
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.flag:  # A second signal: give up at once.
      raise KeyboardInterrupt
    log.warning("signal %d: saving a checkpoint after this step, then stopping", signum)
    self.flag = True

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


class _Scalars:
  """TensorBoard scalars and preview images (process 0 only) plus a JSON-lines copy of the scalars."""

  def __init__(self, workdir):
    self.enabled = jax.process_index() == 0
    self._tb = None
    self._jsonl = None
    if self.enabled:
      self._tb = SummaryWriter(str(workdir / "tensorboard"))  # tensorboardX writes gs:// itself
      self._jsonl = paths.GrowingFile(workdir / "metrics.jsonl")

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    for k, v in scalars.items():
      self._tb.add_scalar(k, v, step)
    self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")

  def image(self, step: int, tag: str, grid_HxWx3) -> None:
    if self.enabled:
      self._tb.add_image(tag, np.asarray(grid_HxWx3), step, dataformats="HWC")

  def close(self) -> None:
    if self.enabled:
      self._tb.close()
      self._jsonl.close()


def run(task: Task, cfg: ml_collections.ConfigDict, workdir: str, dataset: Any, *,
        train_cfg: ml_collections.ConfigDict | None = None, num_steps: int | None = None,
        on_log: Callable[[int, dict], None] | None = None) -> Any:
  """Trains `task` until `train_cfg.steps` (or `num_steps` more steps); returns the final state.

  `train_cfg` is the stage's section (`cfg.train` for stage 1, `cfg.motion_train` for
  stage 2); the whole `cfg` is saved with every checkpoint. SIGTERM/SIGINT from the start
  (set-up and compiling included) make it save after the current step and return.
  """
  with _Preempted() as preempted:
    return _run(task, cfg, workdir, dataset, cfg.train if train_cfg is None else train_cfg,
                num_steps, on_log, preempted)


def _run(task, cfg, workdir, dataset, t, num_steps, on_log, preempted) -> Any:
  workdir = paths.make_folder(workdir)
  mesh = mesh_lib.make_mesh(cfg.get("mesh"))
  mesh_lib.check_batch_size(t.batch_size, microbatches=t.get("microbatches", 1))
  rng = jax.random.key(cfg.seed)
  repl = mesh_lib.replicated(mesh)

  # Born sharded: shapes first, then init (or restore) directly into its shardings: replicated, or
  # split over the `fsdp` axis by the config's rule (`mesh.state_sharding`, what `aot` compiles).
  inputs = task.init_inputs() if hasattr(task, "init_inputs") else ()
  abstract, state_shardings = state_lib.sharded_abstract(lambda r: task.init(r, *inputs), rng,
                                                         mesh_lib.state_sharding(mesh, cfg.get("mesh")))
  base = None
  if t.get("init_from") and not (workdir / "checkpoints").is_dir():
    base = _warm_start_weights(task, t.init_from, rng)  # Checked before anything is written.
  checkpointer = ckpt_lib.Checkpointer(workdir, writer=True, max_to_keep=t.keep_checkpoints,
                                       async_save=t.async_checkpoints)
  data_iter = iter(dataset)
  state, start = checkpointer.restore_latest(abstract, data_iter)
  if start is not None:
    log.info("resumed from %s at step %d", checkpointer.directory, start)
  elif base is not None:
    state = jax.jit(task.warm_start, out_shardings=state_shardings)(base, rng)
    start = 0
  else:
    state = jax.jit(task.init, out_shardings=state_shardings)(rng, *inputs)
    start = 0
  last = t.steps if num_steps is None else min(t.steps, start + num_steps)
  config_dict = json.loads(cfg.to_json())
  (workdir / "config.json").write_text(json.dumps(config_dict, indent=1))

  step_fn = jax.jit(task.train_step, in_shardings=(state_shardings, mesh_lib.batch_sharding(mesh), repl),
                    out_shardings=(state_shardings, repl), donate_argnums=(0,))
  # Replicated output: every process can read the grid, process 0 writes it.
  preview_fn = jax.jit(task.preview, out_shardings=repl) if isinstance(task, PreviewTask) else None
  scalars = _Scalars(workdir)
  pending: list[tuple[int, dict]] = []
  accum: dict[str, list[float]] = {}
  t_log, step_log = time.time(), start  # Rate over the last log interval (the first includes compiling).
  step = start
  step_flops = peak = None  # FLOPs of one step (the whole global batch), the devices' summed matmul peak.

  def fetch(entry):
    """Pulls one step's metrics to the host and checks them."""
    s, metrics = entry
    host = {k: float(v) for k, v in jax.device_get(metrics).items()}
    if host.get("finite", 1.0) < 1.0 or not all(np.isfinite(v) for v in host.values()):
      bad = ", ".join(f"{k}={v:.4g}" for k, v in host.items() if not np.isfinite(v)) or "non-finite loss"
      raise Diverged(f"training diverged at step {s} ({bad}); the update was skipped and the last "
                     f"checkpoint ({checkpointer.latest_step()}) is intact: lower --config.train.lr_gen "
                     "or resume from it")
    for k, v in host.items():
      accum.setdefault(k, []).append(v)
    return s

  try:
    while step < last and not preempted.flag:
      try:
        raw = next(data_iter)
      except StopIteration:
        log.info("data exhausted at step %d", step)
        break
      batch = mesh_lib.put_batch(task.host_batch(raw), mesh)
      if step_flops is None:  # XLA's count for the lowered step (no extra compile) and a matmul yardstick.
        step_flops = perf.flops(step_fn, state, batch, jax.random.fold_in(rng, step), compile=False)
        peak = perf.matmul_peak(1024, repeats=2, min_time=0.1) * jax.device_count()
      state, metrics = step_fn(state, batch, jax.random.fold_in(rng, step))
      step += 1
      pending.append((step, metrics))
      # Metrics of the previous step are fetched after this one is dispatched.
      while len(pending) > 1:
        fetch(pending.pop(0))
      if step % t.log_every == 0 or step == last:
        while pending:
          fetch(pending.pop(0))
        now = time.time()
        rate = (step - step_log) / max(now - t_log, 1e-9)
        t_log, step_log = now, step
        means = {k: float(np.mean(v)) for k, v in accum.items()}
        means["perf/steps_per_s"] = rate
        means["perf/examples_per_s"] = rate * t.batch_size
        means["perf/tflops"] = rate * step_flops / 1e12
        means["perf/peak_fraction"] = rate * step_flops / peak
        scalars.write(step, means)
        if on_log:
          on_log(step, means)
        eta = (last - step) / max(rate, 1e-9)
        shown = " ".join(f"{k.split('/')[-1]}={v:.4g}" for k, v in means.items()
                         if k.startswith(("loss/", "psnr/")))
        print(f"step {step}/{last} {shown} {rate:.2f} steps/s {rate * t.batch_size:.1f} examples/s "
              f"{means['perf/tflops'] * 1e3:.1f} GFLOP/s ({100 * means['perf/peak_fraction']:.0f}% of matmul peak) "
              f"ETA {_duration(eta)}", flush=True)
        accum.clear()
      if preview_fn is not None and t.preview_every and step % t.preview_every == 0:
        _write_preview(workdir, step, preview_fn(state.ema, batch), scalars)
      if step % t.checkpoint_every == 0 or step == last or preempted.flag:
        while pending:
          fetch(pending.pop(0))
        checkpointer.save(step, state, data_iter, config_dict)  # Written while the next steps run.
    if preempted.flag:
      log.warning("stopped by signal at step %d%s", step, " after saving" if step > start else "")
  finally:
    scalars.close()
    checkpointer.close()
  return state


def _warm_start_weights(task: Task, run_dir: str, rng) -> Any:
  """Another run's generator weights (its EMA, what sampling uses) or a bundle's stage-1 weights,
  checked against this task's; the new run starts from them at step 0 (`task.warm_start`)."""
  if not hasattr(task, "warm_start"):
    raise UserError("train.init_from is for stage 1 only")
  if (paths.path(run_dir) / bundle_lib.BUNDLE_JSON).is_file():  # an exported bundle's stage 1
    base, base_step = bundle_lib.load(run_dir).face_params, "bundle"
  else:
    _, base, base_step = ckpt_lib.load_ema(run_dir)
  fresh = jax.eval_shape(task.init, rng).params["gen"]
  flat = lambda tree: {jax.tree_util.keystr(k): (tuple(x.shape), str(x.dtype))  # noqa: E731
                       for k, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
  have, want = flat(base), flat(fresh)
  if any(k not in want or want[k] != v for k, v in have.items()):
    raise UserError(f"train.init_from {run_dir!r}: its generator does not match this config's "
                    "face model (give the run's own config, with only train/loss/data keys changed, "
                    "or a lever that adds a module, such as face.pixel_blend)")
  added = sorted(k for k in want if k not in have)
  if added:  # A lever that adds a module (face.pixel_blend): those weights start fresh.
    log.warning("train.init_from: %d weights new in this config start from their initialisation: %s",
                len(added), ", ".join(added))
  log.warning("starting from %s (step %s) with fresh optimisers", run_dir, base_step)
  return base


def _write_preview(workdir, step: int, grid, scalars: _Scalars) -> None:
  if jax.process_index() != 0:
    return
  grid = np.asarray(jax.device_get(grid))
  folder = paths.make_folder(workdir / "previews")
  media.save_image(folder / f"step_{step:07d}.png", grid)
  scalars.image(step, "preview", grid)


def _duration(seconds: float) -> str:
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
