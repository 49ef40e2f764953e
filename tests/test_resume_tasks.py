"""Resume is exact for the real tasks: stage 1 and stage 2 on the tiny config, 2 + 2 steps == 4 steps.

Stage 1's GAN switches on at step 2 (tiny `gan_start`), so the resumed half also checks
that the step counter, the optimiser states, the EMA and the data iterator all come back.
"""

import jax
import numpy as np
import pytest

import corpora
from vasa_jax import config
from vasa_jax.train import __main__ as train_main
from vasa_jax.train import checkpoint, loop


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  return corpora.synthetic_64(tmp_path_factory.mktemp("corpus_resume") / "syn64", identities=20, frames=24, seed=2)


def _train(build, cfg, section, corpus, workdir, num_steps):
  task, dataset = build(cfg, corpus)
  return loop.run(task, cfg, workdir, dataset, train_cfg=cfg[section], num_steps=num_steps)


def _assert_trees_equal(a, b, what):
  leaves_a, tree_a = jax.tree.flatten(a)
  leaves_b, tree_b = jax.tree.flatten(b)
  assert tree_a == tree_b, what
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7, err_msg=what)


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 2])
def test_two_plus_two_steps_equal_four(stage, corpus, tmp_path):
  cfg = config.load("tiny")
  build, section = (train_main.build_stage1, "train") if stage == 1 else (train_main.build_stage2, "motion_train")
  with cfg.unlocked():
    cfg[section].update({"steps": 4, "checkpoint_every": 2, "preview_every": 0})
  full = _train(build, cfg, section, corpus, str(tmp_path / "full"), None)
  part_dir = str(tmp_path / "part")
  half = _train(build, cfg, section, corpus, part_dir, 2)
  assert int(half.step) == 2 and checkpoint.Checkpointer(part_dir).latest_step() == 2
  resumed = _train(build, cfg, section, corpus, part_dir, None)    # A new task and iterator, as after a restart.
  assert int(resumed.step) == int(full.step) == 4
  _assert_trees_equal(resumed.params, full.params, "params")
  _assert_trees_equal(resumed.ema, full.ema, "ema")
  _assert_trees_equal(resumed.opt, full.opt, "optimiser state")
  # The halves really trained: step 2's parameters differ from step 4's.
  moved = max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
              for x, y in zip(jax.tree.leaves(half.params), jax.tree.leaves(full.params)))
  assert moved > 1e-6
