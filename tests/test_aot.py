"""The paper config compiles for 8 data-parallel devices on a CPU (fake devices)."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _aot(*args, timeout=900):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, "-m", "vasa_jax.train.aot", *args], capture_output=True, text=True,
                        cwd=REPO, env=env, timeout=timeout)


def test_tiny_step_compiles_and_runs_on_four_fake_devices():
  res = _aot("--config", "tiny", "--devices", "4", "--run")
  assert res.returncode == 0, res.stderr[-2000:]
  assert "4 devices" in res.stdout and "finite=True" in res.stdout


@pytest.mark.slow
def test_paper_step_compiles_on_eight_fake_devices():
  res = _aot("--config", "configs/paper.py", "--devices", "8")
  assert res.returncode == 0, res.stderr[-2000:]
  assert "config paper: 8 devices, global batch 32, 512x512" in res.stdout
  assert "compiled train step" in res.stdout


def test_indivisible_batch_is_a_clear_error():
  res = _aot("--config", "tiny", "--devices", "3")
  assert res.returncode == 2
  assert "does not split over 3 devices" in res.stderr
