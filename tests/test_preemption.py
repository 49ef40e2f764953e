"""`python -m vasa_jax.train` as a process: SIGTERM saves and exits 0; a run killed with kill -9
resumes to the parameters, losses and data order of an uninterrupted run; a damaged latest
checkpoint falls back to the previous one. Stage 2 on the tiny config (the loop is shared by
both stages; stage 2 compiles in seconds).
"""

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

import corpora
from vasa_jax.train import checkpoint

STEPS, EVERY = 30, 5


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  return corpora.synthetic_64(tmp_path_factory.mktemp("corpus_preempt") / "syn64", identities=8, frames=24, seed=4)


def _start(corpus, workdir, steps=STEPS):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,  # the suite's (conftest)
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
  cmd = [sys.executable, "-m", "vasa_jax.train", "--stage", "2", "--config", "tiny", "--data", corpus,
         "--workdir", workdir, "--config.motion_train.motion_source=labels",
         f"--config.motion_train.steps={steps}", "--config.motion_train.log_every=1",
         f"--config.motion_train.checkpoint_every={EVERY}"]
  return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _run(corpus, workdir, steps=STEPS):
  proc = _start(corpus, workdir, steps)
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out
  return out


def _run_until(corpus, workdir, step, sig):
  """Starts a run and sends `sig` once it has printed `step`; returns (exit status, output)."""
  proc = _start(corpus, workdir, steps=STEPS)
  lines = []
  for line in proc.stdout:
    lines.append(line)
    if line.startswith(f"step {step}/"):
      proc.send_signal(sig)
      break
  out, _ = proc.communicate(timeout=600)
  return proc.returncode, "".join(lines) + out


def _losses(workdir):
  """Step -> logged metrics; a resumed run logs the steps after its checkpoint again, the last counts."""
  by_step = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      m = json.loads(line)
      by_step[m.pop("step")] = {k: v for k, v in m.items() if not k.startswith("perf/")}
  return by_step


def _assert_same_state(a, b):
  leaves_a, tree_a = jax.tree.flatten(a)
  leaves_b, tree_b = jax.tree.flatten(b)
  assert tree_a == tree_b
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_sigterm_saves_the_current_step_and_exits_0(corpus, tmp_path):
  workdir = str(tmp_path / "term")
  status, out = _run_until(corpus, workdir, 3, signal.SIGTERM)
  assert status == 0, out
  assert "stopped by signal at step" in out and "after saving" in out
  stopped = int(out.split("stopped by signal at step ")[1].split()[0])
  assert 3 <= stopped < STEPS
  assert checkpoint.Checkpointer(workdir).latest_step() == stopped      # Not a multiple of EVERY: the signal's save.


@pytest.mark.slow
def test_kill_9_resumes_like_an_uninterrupted_run_and_a_damaged_latest_falls_back(corpus, tmp_path):
  full = str(tmp_path / "full")
  _run(corpus, full)
  part = str(tmp_path / "part")
  status, out = _run_until(corpus, part, 2 * EVERY + 2, signal.SIGKILL)  # Mid-run, a save may be in flight.
  assert status == -signal.SIGKILL, out
  killed_at = checkpoint.Checkpointer(part).latest_step()
  assert killed_at is not None and killed_at < STEPS
  _run(corpus, part)                                                     # Resumes from what survived.
  _, want, _ = checkpoint.load_run(full)
  _, got, step = checkpoint.load_run(part)
  assert step == STEPS
  _assert_same_state(got, want)
  # Same batches in the same order: every step's losses match (they depend on the batch and its noise).
  full_losses, part_losses = _losses(full), _losses(part)
  assert sorted(part_losses) == list(range(1, STEPS + 1))
  for s in range(1, STEPS + 1):
    np.testing.assert_allclose(list(part_losses[s].values()), list(full_losses[s].values()), rtol=1e-6,
                               err_msg=f"step {s}")

  # A damaged latest checkpoint (its largest array file cut short): the run warns, resumes from the
  # previous one, sets the damaged one aside and retrains to the same parameters.
  state_dir = os.path.join(part, "checkpoints", str(STEPS), "state")
  files = [os.path.join(r, f) for r, _, fs in os.walk(state_dir) for f in fs]
  big = max(files, key=os.path.getsize)
  with open(big, "r+b") as f:
    f.truncate(os.path.getsize(big) // 2)
  out = _run(corpus, part)
  assert f"checkpoints/{STEPS} cannot be read" in out and f"resuming from checkpoint {STEPS - EVERY}" in out
  assert sorted(os.listdir(os.path.join(part, checkpoint.DAMAGED))) == [str(STEPS), "README.txt"]
  _, again, step = checkpoint.load_run(part)
  assert step == STEPS
  _assert_same_state(again, want)
