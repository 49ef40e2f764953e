"""Eye and mouth regions (data/face_regions.py) and the region-weighted loss that reads them."""

import jax.numpy as jnp
import numpy as np
import pytest

from vasa_jax.data import face_regions, synthetic
from vasa_jax.train import stage1


def _labels(rng, n):
  return {"yaw": rng.uniform(-0.4, 0.4, n), "pitch": rng.uniform(-0.2, 0.2, n), "roll": rng.uniform(-0.15, 0.15, n),
          "tx": rng.uniform(-0.1, 0.1, n), "ty": rng.uniform(-0.1, 0.1, n), "distance": rng.uniform(0.95, 1.25, n),
          "mouth_open": rng.uniform(0, 1, n), "mouth_width": rng.uniform(-0.5, 0.5, n),
          "mouth_round": rng.uniform(0, 1, n), "smile": rng.uniform(-0.3, 0.6, n), "blink": rng.uniform(0, 1, n),
          "gaze_theta": rng.uniform(-0.3, 0.3, n), "gaze_phi": rng.uniform(-0.2, 0.2, n), "brow": rng.uniform(-1, 1, n)}


@pytest.mark.parametrize("identity", [3, 11])
def test_synthetic_eye_ellipses_hold_the_rendered_eyes_and_the_mouth_ellipse_its_lips(identity):
  """The corpus' own renders say where the eyes can be (the frame drawn with them open and shut):
  every such pixel lies in the projected ellipses, which are not much larger than the eyes."""
  labels = _labels(np.random.default_rng(identity), 4)
  reg = face_regions.from_synthetic(identity, labels)
  assert reg.shape == (4, 3, 4) and (reg[:, 0, 0] < reg[:, 1, 0]).all()  # viewer's left eye first
  m = face_regions.masks(reg, 96)
  truth = synthetic.region_masks(identity, labels, 96)
  eyes = np.maximum(m["eye_a"], m["eye_b"])
  assert (eyes * truth["eyes"]).sum() / truth["eyes"].sum() > 0.99
  assert eyes.sum() < 4.0 * truth["eyes"].sum()
  # The mouth's region also holds the chin that drops with it; the ellipse holds the lips and the
  # opening at any width (where shut and wide-open renders differ most).
  lo, hi = synthetic.feature_extremes(identity, labels, 96)["mouth"]
  opening = (np.abs(hi - lo).max(-1) > 0.25) & (hi[..., 1] < 0.2) & (hi[..., 0] < 0.45)  # its dark interior
  assert opening.sum() > 40
  assert (m["mouth"] * opening).sum() / opening.sum() > 0.8  # the rest: the moving chin's shadow on the neck
  assert m["mouth"].sum() < 2.5 * truth["mouth"].sum()
  assert not (eyes * m["mouth"]).any()


def test_masks_are_the_same_in_numpy_and_jax_and_exact_for_a_known_circle():
  reg = np.array([[[0.25, 0.5, 0.125, 0.125], [0.75, 0.5, 0.125, 0.25], [0.5, 0.8, 0.2, 0.05]]], np.float32)
  a = face_regions.masks(reg, 64)
  b = face_regions.masks(reg, 64, xp=jnp)
  for k in face_regions.NAMES:
    np.testing.assert_array_equal(a[k], np.asarray(b[k]))
  # A circle of radius 8 px at (16, 32): ~pi r^2 pixel centres inside.
  assert abs(a["eye_a"].sum() - np.pi * 8 ** 2) < 12
  assert a["eye_a"][0, 32, 16] == 1 and a["eye_a"][0, 32, 25] == 0 and a["eye_b"][0, 32 + 15, 48] == 1


def test_landmark_regions_bound_the_mesh_eyes_and_lips():
  rng = np.random.default_rng(0)
  lm = rng.uniform(0.4, 0.6, (2, 478, 3)).astype(np.float32)
  lm[:, list(face_regions._MESH_EYES[0]), :2] = rng.uniform([0.6, 0.3], [0.7, 0.35], (2, 16, 2))
  lm[:, list(face_regions._MESH_EYES[1]), :2] = rng.uniform([0.3, 0.3], [0.4, 0.35], (2, 16, 2))
  lm[:, list(face_regions._MESH_LIPS), :2] = rng.uniform([0.42, 0.7], [0.58, 0.8], (2, 20, 2))
  reg = face_regions.from_landmarks(lm)
  assert reg[:, 0, 0].max() < 0.4 < 0.6 < reg[:, 1, 0].min()  # sorted: the eye on the viewer's left first
  m = face_regions.masks(reg, 128)
  for name, idx in (("eye_a", face_regions._MESH_EYES[1]), ("eye_b", face_regions._MESH_EYES[0]),
                    ("mouth", face_regions._MESH_LIPS)):
    px = np.clip((lm[:, list(idx), :2] * 128).astype(int), 0, 127)
    for t in range(2):
      assert m[name][t, px[t, :, 1], px[t, :, 0]].all(), name
  with pytest.raises(ValueError, match="face-mesh points"):
    face_regions.from_landmarks(np.zeros((2, 68, 2)))


def test_face_region_l1_reads_only_the_eyes_and_the_mouth():
  reg = np.array([[[0.3, 0.4, 0.1, 0.06], [0.7, 0.4, 0.1, 0.06], [0.5, 0.75, 0.15, 0.08]]], np.float32)
  m = face_regions.masks(reg, 64)
  y = np.full((1, 64, 64, 3), 0.5, np.float32)
  eyes = np.maximum(m["eye_a"], m["eye_b"])[..., None]
  outside = y + 0.4 * (1 - np.maximum(eyes, m["mouth"][..., None]))
  assert float(stage1.face_region_l1(jnp.asarray(outside), y, reg)) == 0.0
  # Eyes wrong by 0.2 everywhere inside, mouth right: half of 0.2 (each region's mean, averaged).
  x = y + 0.2 * eyes
  n = eyes.sum()
  np.testing.assert_allclose(float(stage1.face_region_l1(jnp.asarray(x), y, reg)), 0.2 * n / (n + 1) / 2, rtol=1e-5)
