"""The training loop on a toy task: resume is exact, NaN stops safely, SIGTERM saves."""

import json
import os
import signal

import flax.struct
import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vasa_jax import config
from vasa_jax.train import checkpoint, loop


@flax.struct.dataclass
class _State:
  step: jax.Array
  params: jax.Array
  opt: optax.OptState
  ema: jax.Array


class _LinearTask:
  """Least squares y = x @ w, with an optional NaN injected at one step."""

  def __init__(self, nan_at: int | None = None):
    self.tx = optax.adam(0.05)
    self.nan_at = nan_at

  def init(self, rng):
    w = jax.random.normal(rng, (3,))
    return _State(step=jnp.zeros((), jnp.int32), params=w, opt=self.tx.init(w), ema=w)

  def host_batch(self, raw):
    return {"x": raw["x"], "y": raw["y"]}

  def train_step(self, state, batch, rng):
    def loss_fn(w):
      return jnp.mean((batch["x"] @ w - batch["y"]) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    if self.nan_at is not None:
      loss = jnp.where(state.step + 1 == self.nan_at, jnp.nan, loss)
    finite = jnp.isfinite(loss)
    updates, opt = self.tx.update(grads, state.opt, state.params)
    params = jnp.where(finite, optax.apply_updates(state.params, updates), state.params)
    return (_State(step=state.step + 1, params=params, opt=opt, ema=params),
            {"loss/total": loss, "finite": finite.astype(jnp.float32),
             "noise": jax.random.uniform(rng)})


def _dataset(seed=0):
  rng = np.random.default_rng(123)
  x = rng.normal(size=(64, 3)).astype(np.float32)
  y = (x @ np.array([1.0, -2.0, 0.5], np.float32)).astype(np.float32)
  ds = grain.MapDataset.source([{"x": x[i], "y": y[i]} for i in range(64)]).shuffle(seed=seed).repeat()
  return ds.to_iter_dataset().batch(4, drop_remainder=True)


def _cfg(**train):
  cfg = config.load("tiny")
  with cfg.unlocked():
    cfg.train.update({"steps": 6, "log_every": 1, "checkpoint_every": 2, "preview_every": 0, **train})
  return cfg


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
  full = loop.run(_LinearTask(), _cfg(), str(tmp_path / "full"), _dataset())
  part = str(tmp_path / "part")
  loop.run(_LinearTask(), _cfg(), part, _dataset(), num_steps=3)   # Saves at 2 and at 3.
  assert checkpoint.Checkpointer(part).latest_step() == 3
  resumed = loop.run(_LinearTask(), _cfg(), part, _dataset())      # Restores state + data iterator.
  assert int(resumed.step) == 6
  np.testing.assert_allclose(np.asarray(resumed.params), np.asarray(full.params), rtol=1e-6)
  full_losses = [m["loss/total"] for m in _metrics(str(tmp_path / "full"))]
  part_losses = [m["loss/total"] for m in _metrics(part)]
  np.testing.assert_allclose(part_losses, full_losses, rtol=1e-6)
  # Per-step RNG is fold_in(seed, step): identical after resume too.
  np.testing.assert_allclose([m["noise"] for m in _metrics(part)], [m["noise"] for m in _metrics(str(tmp_path / "full"))])
  init = np.asarray(_LinearTask().init(jax.random.key(0)).params)
  truth = np.array([1.0, -2.0, 0.5])
  assert np.linalg.norm(np.asarray(full.params) - truth) < np.linalg.norm(init - truth)  # It learns.


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  workdir = str(tmp_path / "nan")
  with pytest.raises(loop.Diverged, match="diverged at step 5"):
    loop.run(_LinearTask(nan_at=5), _cfg(), workdir, _dataset())
  ckpt = checkpoint.Checkpointer(workdir)
  assert ckpt.latest_step() == 4
  good = loop.run(_LinearTask(), _cfg(steps=4), workdir, _dataset())  # Restores cleanly; nothing to do.
  assert int(good.step) == 4 and np.all(np.isfinite(np.asarray(good.params)))


def test_sigterm_saves_a_checkpoint_and_stops(tmp_path):
  workdir = str(tmp_path / "term")

  def on_log(step, metrics):
    if step == 3:
      os.kill(os.getpid(), signal.SIGTERM)

  state = loop.run(_LinearTask(), _cfg(checkpoint_every=100), workdir, _dataset(), on_log=on_log)
  assert int(state.step) == 3
  assert checkpoint.Checkpointer(workdir).latest_step() == 3


def _saved_steps(workdir):
  ckpt = checkpoint.Checkpointer(workdir)
  try:
    return {s: ckpt.restore_raw(s)[0] for s in ckpt.manager.all_steps()}
  finally:
    ckpt.close()


def test_async_saves_hold_the_state_of_their_step_while_training_goes_on(tmp_path):
  """Async saves return before the files are written and the next (donating) steps overwrite the
  state; every checkpoint still equals the blocking run's, iterator position included."""
  runs = {}
  for mode in (True, False):
    workdir = str(tmp_path / f"async_{mode}")
    loop.run(_LinearTask(), _cfg(steps=8, async_checkpoints=mode, keep_checkpoints=10), workdir, _dataset())
    runs[mode] = (_saved_steps(workdir), workdir)
  (saved_async, dir_async), (saved_sync, dir_sync) = runs[True], runs[False]
  assert sorted(saved_async) == sorted(saved_sync) == [2, 4, 6, 8]
  for step in saved_sync:
    for key in ("params", "opt", "ema", "step"):
      for a, b in zip(jax.tree.leaves(saved_async[step][key]), jax.tree.leaves(saved_sync[step][key])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    data = [open(os.path.join(d, "checkpoints", str(step), "data", "process_0-of-1.json")).read()
            for d in (dir_async, dir_sync)]
    assert data[0] == data[1]
  assert not np.allclose(np.asarray(saved_sync[2]["params"]), np.asarray(saved_sync[8]["params"]))


def _truncate_largest(folder):
  files = [os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs]
  big = max(files, key=os.path.getsize)
  with open(big, "r+b") as f:
    f.truncate(os.path.getsize(big) // 2)


def _delete_array_metadata(state_dir):
  os.remove(os.path.join(state_dir, "_METADATA"))


@pytest.mark.parametrize("damage", [_truncate_largest, _delete_array_metadata])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(damage, tmp_path, caplog):
  full = loop.run(_LinearTask(), _cfg(), str(tmp_path / "full"), _dataset())
  workdir = str(tmp_path / "run")
  loop.run(_LinearTask(), _cfg(), workdir, _dataset())                    # Checkpoints 2, 4, 6.
  damage(os.path.join(workdir, "checkpoints", "6", "state"))
  with caplog.at_level("WARNING", logger="vasa_jax.train"):
    assert checkpoint.load_run(workdir)[2] == 4                           # A reader falls back, moves nothing.
    assert checkpoint.Checkpointer(workdir).manager.all_steps() == [2, 4, 6]
    resumed = loop.run(_LinearTask(), _cfg(), workdir, _dataset())        # Resumes at 4, trains 5 and 6 again.
  assert "checkpoints/6 cannot be read" in caplog.text and "resuming from checkpoint 4" in caplog.text
  assert sorted(os.listdir(os.path.join(workdir, checkpoint.DAMAGED))) == ["6", "README.txt"]  # Kept.
  assert int(resumed.step) == 6
  np.testing.assert_allclose(np.asarray(resumed.params), np.asarray(full.params), rtol=1e-6)
  assert checkpoint.load_run(workdir)[2] == 6                             # The new 6 reads.


def test_when_no_checkpoint_restores_the_run_stops_and_moves_nothing(tmp_path):
  workdir = str(tmp_path / "run")
  loop.run(_LinearTask(), _cfg(steps=2), workdir, _dataset())             # One checkpoint: 2.
  _truncate_largest(os.path.join(workdir, "checkpoints", "2", "state"))
  with pytest.raises(loop.UserError, match="no checkpoint in .* restores"):
    loop.run(_LinearTask(), _cfg(steps=4), workdir, _dataset())
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["2"]


def test_if_finite_applies_the_whole_update_or_keeps_every_old_array():
  from vasa_jax.train import state as state_lib
  old = {"w": jnp.ones(3), "opt": (jnp.zeros(2), jnp.int32(4))}
  calls = []

  def update():
    calls.append(1)
    return jax.tree.map(lambda a: a + 1, old)

  step = jax.jit(lambda finite: state_lib.if_finite(finite, update, old))
  new = step(jnp.bool_(True))
  assert len(calls) == 1  # traced once, into one conditional
  np.testing.assert_array_equal(new["w"], 2.0)
  assert int(new["opt"][1]) == 5
  kept = step(jnp.bool_(False))
  np.testing.assert_array_equal(kept["w"], 1.0)
  np.testing.assert_array_equal(kept["opt"][0], 0.0)
  assert int(kept["opt"][1]) == 4 and kept["opt"][1].dtype == jnp.int32
