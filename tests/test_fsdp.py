"""Sharding rules as config data (`mesh.fsdp`): the rule itself, and a tiny stage-1 run on 4 fake CPU
devices whose state is split over the `fsdp` axis trains to the same losses as a replicated one."""

import json
import os
import subprocess
import sys

import pytest
from jax.sharding import PartitionSpec as P

from vasa_jax import config
from vasa_jax.errors import UserError
from vasa_jax.train import mesh as mesh_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_rule_splits_the_largest_divisible_dimension_of_big_arrays_only():
  spec = lambda shape: mesh_lib.param_spec(shape, fsdp=4, min_params=1000)  # noqa: E731
  assert spec((3, 3, 64, 128)) == P(None, None, None, "fsdp")   # conv kernel: output channels
  assert spec((512, 256)) == P("fsdp")                          # the largest dimension
  assert spec((256, 256)) == P(None, "fsdp")                    # a tie: the last one
  assert spec((3, 3, 130, 66)) == P()                           # nothing divides by 4
  assert spec((3, 3, 130, 64)) == P(None, None, None, "fsdp")   # the largest that divides
  assert spec((512,)) == P()                                    # small: replicated
  assert spec(()) == P()
  assert mesh_lib.param_spec((512, 256), fsdp=1, min_params=0) == P()  # fsdp = 1: all replicated


def test_fsdp_axis_size_comes_from_the_config():
  cfg = config.load("tiny")
  assert mesh_lib.fsdp_size(cfg.mesh, 8) == 1                   # small configs stay replicated
  with cfg.unlocked():
    cfg.mesh.fsdp = -1
  assert mesh_lib.fsdp_size(cfg.mesh, 8) == 8
  with cfg.unlocked():
    cfg.mesh.fsdp = 3
  with pytest.raises(UserError, match="mesh.fsdp=3 does not divide 8 devices"):
    mesh_lib.fsdp_size(cfg.mesh, 8)


_RUN = r"""
import json, sys
import jax
import corpora
import small_step
from vasa_jax import config
from vasa_jax.train import loop
from vasa_jax.train import __main__ as train_main

assert jax.device_count() == 4, jax.devices()
data = corpora.synthetic_64(sys.argv[1] + "/corpus", identities=8, frames=12, seed=0)
out = {}
for fsdp in (1, 2):
  # fsdp = 2 on 4 devices: a 2 x 2 (data, fsdp) mesh, so both axes are exercised.
  # What is tested is the partitioning, on the smaller step (the other weights are still sharded).
  cfg = config.load("tiny", [("mesh.fsdp", str(fsdp)), ("mesh.fsdp_min_params", "2048"),
                             ("train.batch_size", "4"), ("train.steps", "2"), ("train.preview_every", "0"),
                             ("train.checkpoint_every", "100"), ("train.async_checkpoints", "false"),
                             *small_step.SMALL_STEP])
  task, dataset = train_main.build_stage1(cfg, data)
  losses = []
  state = loop.run(task, cfg, f"{sys.argv[1]}/run{fsdp}", dataset,
                   on_log=lambda step, m: losses.append(m["loss/gen"]))
  params = jax.tree.leaves(state.params)
  split = [a for a in params if "fsdp" in tuple(a.sharding.spec)]
  opt_specs = [tuple(s) for s in jax.tree.leaves(jax.tree.map(lambda a: a.sharding.spec, state.opt))]
  # A split array holds 1/fsdp of itself on each device.
  shard_rows = [a.addressable_shards[0].data.shape[a.sharding.spec.index("fsdp")] * fsdp
                == a.shape[a.sharding.spec.index("fsdp")] for a in split]
  out[fsdp] = {"losses": losses, "sharded": len(split), "arrays": len(params),
               "sharded_bytes": sum(a.nbytes for a in split) / sum(a.nbytes for a in params),
               "shards_are_slices": all(shard_rows),
               "opt_sharded": sum("fsdp" in s for s in opt_specs),
               "mesh": dict(jax.tree.leaves(state.params)[0].sharding.mesh.shape)}
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_fsdp_sharded_tiny_run_matches_replicated_on_four_fake_devices(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4",
             PYTHONPATH=os.path.join(REPO, "tests") + os.pathsep + os.environ.get("PYTHONPATH", ""))
  res = subprocess.run([sys.executable, "-c", _RUN, str(tmp_path)], capture_output=True, text=True, cwd=REPO,
                       env=env, timeout=1200)
  assert res.returncode == 0, res.stderr[-3000:]
  out = json.loads(next(line for line in res.stdout.splitlines() if line.startswith("RESULT "))[7:])
  rep, fsdp = out["1"], out["2"]
  assert rep["mesh"] == {"data": 4, "fsdp": 1} and fsdp["mesh"] == {"data": 2, "fsdp": 2}
  assert rep["sharded"] == 0 and rep["opt_sharded"] == 0
  # Really sharded: most of the weights' bytes, and their Adam moments, are split over the fsdp axis
  # (biases and norms, below fsdp_min_params, stay replicated), each device holding half of each.
  assert fsdp["sharded"] > 0 and fsdp["sharded_bytes"] > 0.5 and fsdp["shards_are_slices"], fsdp
  assert fsdp["opt_sharded"] >= 2 * fsdp["sharded"]
  assert len(rep["losses"]) == len(fsdp["losses"]) == 2
  # The same training, partitioned differently: float32 rounding apart.
  for a, b in zip(rep["losses"], fsdp["losses"]):
    assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), (rep["losses"], fsdp["losses"])
