"""Pseudo-labels from face landmarks, under the synthetic corpus' label names (`synthetic.LABEL_NAMES`).

A real video has no ground truth; `prepare` reads these from the 478 MediaPipe landmarks of each
frame (in crop coordinates: x, y in [0, 1] of the crop, z in the same unit). They follow the synthetic
labels' sign conventions (`synthetic_head`): yaw > 0 the face turns to the viewer's left, pitch > 0
it tilts up, roll > 0 counter-clockwise in the image, gaze_theta > 0 the eyes look to the viewer's
left, gaze_phi > 0 up. Scales are geometric and approximate (radians for the angles; mouth, blink
and smile in roughly the corpus' 0..1 ranges), good enough for what stage 1 uses them for (`dyn_sup`,
`pose_sup_all`, `rare_driver`), not a measurement. Correlations with the true labels on synthetic
renders are checked in `tests/test_prepare.py`.

  yaw/pitch/roll  rotation of the face frame: x from cheek to cheek, y from forehead to chin (3D)
  tx, ty          the eyes' midpoint relative to where the crop rule puts them, in crop widths (ty > 0: up)
  distance        crop size over the face's size, relative to the crop rule (1 = as framed)
  mouth_open      inner-lip gap over mouth width, x 2, clipped to 0..1
  mouth_width     mouth width over the outer eye-corner distance, minus 0.55, x 2
  mouth_round     openness without width: mouth_open x (1 - mouth_width), clipped to 0..1
  blink           1 - eyelid gap over eye width, relative to the clip's open eye (90th percentile)
  gaze_theta/phi  iris offset from the eye's centre in the face frame, over the half eye width (asin)
  brow            brow height above the eyes over face size, minus the clip's median, x 10
  smile           corners raised above the lips' centre, over mouth width, x 3
"""

import numpy as np

from vasa_jax import faces

LABEL_NAMES = ("yaw", "pitch", "roll", "tx", "ty", "distance", "mouth_open", "mouth_width",
               "mouth_round", "blink", "gaze_theta", "gaze_phi", "brow", "smile")


def _unit(v):
  return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def head_rotation(lm_Tx478x3: np.ndarray) -> np.ndarray:
  """Per-frame face axes [T, 3, 3] (rows x, y, z) in camera coordinates (x right, y down, z away)."""
  x = _unit(lm_Tx478x3[:, faces.CHEEK_B] - lm_Tx478x3[:, faces.CHEEK_A])
  yv = lm_Tx478x3[:, faces.CHIN] - lm_Tx478x3[:, faces.FOREHEAD]
  y = _unit(yv - np.sum(yv * x, -1, keepdims=True) * x)
  z = np.cross(x, y)
  return np.stack([x, y, z], 1)


def labels_from_landmarks(lm_Tx478x3: np.ndarray) -> dict[str, np.ndarray]:
  """The pseudo-labels of one clip: float32 [T] per name in LABEL_NAMES."""
  lm = np.asarray(lm_Tx478x3, np.float64)
  rot = head_rotation(lm)
  x, z = rot[:, 0], rot[:, 2]
  out = {
      "yaw": np.arctan2(z[:, 0], z[:, 2]),
      "pitch": np.arctan2(z[:, 1], np.hypot(z[:, 0], z[:, 2])),
      "roll": np.arctan2(-x[:, 1], x[:, 0]),
  }
  p = lm[..., :2]
  eye_a, eye_b = p[:, list(faces.EYE_A)].mean(1), p[:, list(faces.EYE_B)].mean(1)
  eyes = (eye_a + eye_b) / 2
  out["tx"], out["ty"] = eyes[:, 0] - 0.5, (0.5 - faces.CROP_CENTER_BELOW_EYES) - eyes[:, 1]   # ty > 0: up
  size = np.array([faces.face_frame(f)[1] for f in lm])
  out["distance"] = 1.0 / np.maximum(size * faces.CROP_SCALE, 1e-6)
  dist = lambda a, b: np.linalg.norm(p[:, a] - p[:, b], axis=-1)  # noqa: E731
  eye_span = dist(faces.EYE_A[0], faces.EYE_B[0])
  mouth_w = dist(*faces.MOUTH_CORNERS)
  gap = dist(*faces.LIP_INNER)
  out["mouth_open"] = np.clip(2.0 * gap / np.maximum(mouth_w, 1e-6), 0, 1)
  out["mouth_width"] = 2.0 * (mouth_w / np.maximum(eye_span, 1e-6) - 0.55)
  out["mouth_round"] = np.clip(out["mouth_open"] * (1 - np.clip(out["mouth_width"], 0, 1)), 0, 1)
  lids = (dist(*faces.EYELIDS_A) / np.maximum(dist(*faces.EYE_A), 1e-6)
          + dist(*faces.EYELIDS_B) / np.maximum(dist(*faces.EYE_B), 1e-6)) / 2
  out["blink"] = np.clip(1.0 - lids / max(float(np.percentile(lids, 90)), 1e-6), 0, 1)
  # Gaze: each iris' offset from its eye's centre, in the face's own (roll-free) image axes.
  ex = x[:, :2] / np.maximum(np.linalg.norm(x[:, :2], axis=-1, keepdims=True), 1e-9)
  ey = np.stack([-ex[:, 1], ex[:, 0]], -1)          # image "down" of the face
  offs = []
  for iris, (c0, c1) in ((faces.IRIS_A, faces.EYE_A), (faces.IRIS_B, faces.EYE_B)):
    center = (p[:, c0] + p[:, c1]) / 2
    half = dist(c0, c1)[:, None] / 2
    offs.append((p[:, iris] - center) / np.maximum(half, 1e-6))
  off = np.mean(offs, 0)
  out["gaze_theta"] = -np.arcsin(np.clip(np.sum(off * ex, -1), -1, 1))
  out["gaze_phi"] = -np.arcsin(np.clip(np.sum(off * ey, -1), -1, 1))
  brow = ((eye_a - p[:, faces.BROW_A]) * ey).sum(-1) + ((eye_b - p[:, faces.BROW_B]) * ey).sum(-1)
  brow = brow / 2 / np.maximum(size, 1e-6)
  out["brow"] = 10.0 * (brow - np.median(brow))
  lips = p[:, list(faces.LIP_INNER)].mean(1)
  corners = p[:, list(faces.MOUTH_CORNERS)].mean(1)
  out["smile"] = 3.0 * ((lips - corners) * ey).sum(-1) / np.maximum(mouth_w, 1e-6)
  return {n: np.asarray(out[n], np.float32) for n in LABEL_NAMES}
