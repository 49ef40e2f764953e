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
