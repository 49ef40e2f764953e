"""Gradient accumulation (`train.microbatches`, `motion_train.microbatches`): the mean over slices run
one after another is the whole batch's gradient, no example changes device, and the batch checks."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import corpora
from jitter import jitter
from vasa_jax import config
from vasa_jax.errors import UserError
from vasa_jax.train import __main__ as train_main
from vasa_jax.train import mesh as mesh_lib
from vasa_jax.train import state as state_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _linear_grads(batch, _rng, w=jnp.arange(6.0).reshape(3, 2) / 5):
  loss, g = jax.value_and_grad(lambda w: jnp.mean((batch["x"] @ w - batch["y"]) ** 2))(w)
  return g, {"loss": loss}


def test_accumulate_gives_the_whole_batch_gradient_and_splits_rows_by_stride():
  rng = np.random.default_rng(0)
  batch = {"x": jnp.asarray(rng.normal(size=(12, 3)), jnp.float32), "y": jnp.asarray(rng.normal(size=(12, 2)), jnp.float32)}
  whole = _linear_grads(batch, None)
  for m in (2, 3, 4):
    got = jax.jit(lambda b, m=m: state_lib.accumulate(_linear_grads, b, jax.random.key(0), m))(batch)
    np.testing.assert_allclose(got[0], whole[0], rtol=1e-5)
    np.testing.assert_allclose(got[1]["loss"], whole[1]["loss"], rtol=1e-5)
  # Slice i holds rows i, i + m, ...; each slice gets its own key.
  seen = state_lib.accumulate(lambda b, r: ({"rows": b["x"][:, 0]}, {"key": jax.random.uniform(r)}),
                              {"x": jnp.arange(6.0)[:, None]}, jax.random.key(3), 2)
  np.testing.assert_allclose(seen[0]["rows"], [(0 + 1) / 2, (2 + 3) / 2, (4 + 5) / 2])
  keys = [float(jax.random.uniform(jax.random.fold_in(jax.random.key(3), i))) for i in (0, 1)]
  assert float(seen[1]["key"]) == pytest.approx(np.mean(keys))
  with pytest.raises(ValueError, match="a batch of 12 does not split into 5 microbatches"):
    state_lib.accumulate(_linear_grads, batch, jax.random.key(0), 5)


def test_batch_check_names_the_microbatches():
  mesh_lib.check_batch_size(8, 2, microbatches=4)
  with pytest.raises(UserError, match="microbatches 3: each of the 2 devices' 4 examples must split"):
    mesh_lib.check_batch_size(8, 2, microbatches=3)


def test_stage1_with_microbatches_takes_the_whole_batch_gradient(tmp_path):
  """With the terms that couple a batch's examples (motion_cos) and the random label choices off, two
  microbatches give the generator, discriminator and identity net the gradient of the whole batch."""
  data = corpora.synthetic_64(str(tmp_path / "corpus"), identities=8, frames=12, seed=0)
  cfg = config.load("tiny", (("loss.motion_cos", "0.0"), ("loss.teacher_labels", "0.0"),
                             ("loss.dyn_free_from_src", "0.0"), ("train.batch_size", "4")))
  task, dataset = train_main.build_stage1(cfg, data)
  from vasa_jax.train import stage1
  batch = stage1.prepare_batch(task.host_batch(next(iter(dataset))))
  p = task.init(jax.random.key(0)).params
  p = dict(p, gen=jitter(p["gen"], 0.02))
  fn = lambda part, r: task.grads(p, part, 1.0, r)  # noqa: E731  (GAN on: the discriminator learns too)
  whole = jax.jit(fn)(batch, jax.random.key(1))
  halves = jax.jit(lambda b: state_lib.accumulate(fn, b, jax.random.key(1), 2))(batch)
  assert halves[1]["loss/gen"] == pytest.approx(float(whole[1]["loss/gen"]), rel=1e-4)
  for group in range(3):
    a, b = jax.tree.leaves(whole[0][group]), jax.tree.leaves(halves[0][group])
    scale = max(float(jnp.abs(g).max()) for g in a)
    assert scale > 0
    for x, y in zip(a, b):
      np.testing.assert_allclose(np.asarray(y), np.asarray(x), atol=2e-4 * scale)


_SHARDED = r"""
import jax, jax.numpy as jnp, numpy as np
from vasa_jax import config
from vasa_jax.train import mesh as mesh_lib
from vasa_jax.train import state as state_lib
assert jax.device_count() == 4
mesh = mesh_lib.make_mesh(config.load("tiny").mesh)  # what training uses: data = 4, fsdp = 1
def fn(b, _):
  loss, g = jax.value_and_grad(lambda w: jnp.mean((b["x"] @ w - b["y"]) ** 2))(jnp.ones((3, 2)))
  return g, loss
rng = np.random.default_rng(0)
batch = {"x": rng.normal(size=(16, 3)).astype(np.float32), "y": rng.normal(size=(16, 2)).astype(np.float32)}
put = mesh_lib.put_batch(batch, mesh)
step = jax.jit(lambda b: state_lib.accumulate(fn, b, jax.random.key(0), 2))
hlo = step.lower(put).compile().as_text()
got = step(put)
want = fn(batch, None)
np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
# The gradients are summed over devices (all-reduce); no example is moved between devices for the slices.
assert "all-reduce" in hlo
for op in ("all-to-all", "all-gather", "collective-permute"):
  assert op not in hlo, op
print("ok")
"""


def test_microbatches_keep_every_example_on_its_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", _SHARDED], env=env, cwd=REPO, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "ok" in out.stdout
