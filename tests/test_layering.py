"""Dependency direction: media/audio -> models -> diffusion/motion -> train; inference never imports train."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["vasa_jax.sample", "vasa_jax.stream", "vasa_jax.bundle", "vasa_jax.live",
                                    "vasa_jax.app"])
def test_inference_never_imports_the_trainer(module):
  code = (f"import {module}, sys; "
          "bad = sorted(m for m in sys.modules if m.startswith('vasa_jax.train')); "
          "assert not bad, bad")
  res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert res.returncode == 0, res.stderr
