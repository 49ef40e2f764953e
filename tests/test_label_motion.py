"""Label-space motion <-> stage-1 latents."""

import numpy as np
import pytest

from vasa_jax import label_motion
from vasa_jax.data.synthetic import LABEL_NAMES


def _labels(t=5, seed=0):
  rng = np.random.default_rng(seed)
  lab = {n: rng.uniform(-0.3, 0.3, t).astype(np.float32) for n in LABEL_NAMES}
  lab["distance"] = rng.uniform(0.8, 1.2, t).astype(np.float32)
  return lab


def test_to_latents_writes_labels_and_keeps_free_dims():
  lab = _labels()
  arr = np.stack([lab[n] for n in LABEL_NAMES], -1)
  z_dyn = np.arange(20, dtype=np.float32) + 100.0
  lat = label_motion.to_latents(arr, LABEL_NAMES, z_dyn)
  assert lat.shape == (5, 6 + 20)
  np.testing.assert_allclose(lat[:, :6], label_motion.pose_target(lab), rtol=1e-6)
  np.testing.assert_allclose(lat[:, 6:6 + 8], label_motion.dyn_target(lab), rtol=1e-6)
  np.testing.assert_array_equal(lat[:, 6 + 8:], np.tile(z_dyn[8:], (5, 1)))  # Free dims: the portrait's.
  # Scale is the inverse distance: a closer head (distance < 1) is bigger.
  assert np.all((lat[:, 5] > 0) == (lab["distance"] < 1))


def test_from_latents_inverts_to_latents():
  lab = _labels(t=1, seed=1)
  arr = np.stack([lab[n] for n in LABEL_NAMES], -1)
  lat = label_motion.to_latents(arr, LABEL_NAMES, np.zeros(12, np.float32))[0]
  back = label_motion.from_latents(lat[:6], lat[6:], LABEL_NAMES)
  np.testing.assert_allclose(back, arr[0], rtol=1e-5, atol=1e-6)


def test_missing_label_is_named():
  names = [n for n in LABEL_NAMES if n != "blink"]
  with pytest.raises(ValueError, match="blink"):
    label_motion.to_latents(np.zeros((1, len(names))), names, np.zeros(10))
