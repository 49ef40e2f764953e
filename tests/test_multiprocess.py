"""Two processes train together through the multi-host code path (gloo on CPU)."""

import os
import subprocess
import sys

import pytest

import corpora
import small_step
from vasa_jax.train import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_two_processes_train_and_checkpoint_together(tmp_path):
  corpus = str(tmp_path / "syn64")
  corpora.synthetic_64(corpus, identities=8, frames=12, seed=0)
  workdir = str(tmp_path / "run")
  env = dict(os.environ, PYTHON=sys.executable, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  # What is tested is the multi-host path (coordination, global batches, one checkpoint), on the smaller step.
  res = subprocess.run(["bash", os.path.join(REPO, "launch", "local_multiprocess.sh"), "2", "configs/tiny.py",
                        corpus, workdir, "--steps", "2", *small_step.flags()],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
  assert res.returncode == 0, res.stderr[-3000:]
  # Both processes report the same global metrics, one line each per step.
  lines = [l for l in res.stdout.splitlines() if l.startswith("step 2/2")]
  # Only the metrics must agree: each process times its own steps, so the steps/s figures differ.
  metrics = [[tok for tok in l.split() if "=" in tok] for l in lines]
  assert len(lines) == 2 and metrics[0] and metrics[0] == metrics[1], lines
  assert checkpoint.Checkpointer(workdir).latest_step() == 2
  assert os.listdir(os.path.join(workdir, "previews")) == ["step_0000002.png"]
