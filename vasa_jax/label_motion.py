"""Motion in label space: the labelled part of the stage-1 latents, and the maps both ways.

When stage 1 is trained with `pose_sup` and `dyn_sup` on labelled data, its latents
are tied to named quantities: z_pose = (yaw, pitch, roll, tx, ty, -log distance)
and the first dims of z_dyn = `DYN_LABELS`; the remaining z_dyn dims are free
(whatever else the encoder finds). Stage 2 can then generate motion directly in
that space (`motion_train.motion_source = "labels"`): smooth, low-dimensional,
independent of any one stage-1 checkpoint. At inference the generated labels
become latents by writing them into the portrait's own latents: the pose
entirely, the labelled z_dyn dims, and the portrait's free dims kept as they are
(stage 1 is trained to render from exactly that mix, see `dyn_free_from_src`).
"""

from typing import Sequence

import numpy as np

POSE_LABELS = ("yaw", "pitch", "roll", "tx", "ty", "distance")
# Expression labels the first dims of z_dyn are tied to, in this order.
DYN_LABELS = ("mouth_open", "mouth_width", "mouth_round", "blink", "gaze_theta", "gaze_phi", "brow", "smile")


def pose_target(labels: dict) -> np.ndarray:
  """Per-frame pose labels -> z_pose targets [..., 6]; scale is the inverse distance, in log."""
  cols = [np.asarray(labels[k], np.float32) for k in POSE_LABELS[:5]]
  cols.append(-np.log(np.maximum(np.asarray(labels["distance"], np.float32), 1e-3)))
  return np.stack(cols, -1)


def dyn_target(labels: dict) -> np.ndarray:
  return np.stack([np.asarray(labels[k], np.float32) for k in DYN_LABELS], -1)


def _columns(names: Sequence[str]) -> tuple[list[int], list[int]]:
  col = {n: i for i, n in enumerate(names)}
  missing = [n for n in POSE_LABELS + DYN_LABELS if n not in col]
  if missing:
    raise ValueError(f"label-space motion lacks {missing}; it needs {POSE_LABELS + DYN_LABELS}")
  return [col[n] for n in POSE_LABELS], [col[n] for n in DYN_LABELS]


def to_latents(labels_TxL: np.ndarray, names: Sequence[str], z_dyn_portrait: np.ndarray) -> np.ndarray:
  """Label-space motion [T, L] -> stage-1 motion [T, 6 + Zd] on the portrait's free dims."""
  labels_TxL = np.asarray(labels_TxL, np.float32)
  pose_cols, dyn_cols = _columns(names)
  pose = labels_TxL[:, pose_cols].copy()
  pose[:, 5] = -np.log(np.maximum(pose[:, 5], 1e-3))
  dyn = np.tile(np.asarray(z_dyn_portrait, np.float32).reshape(1, -1), (len(labels_TxL), 1))
  dyn[:, :len(DYN_LABELS)] = labels_TxL[:, dyn_cols]
  return np.concatenate([pose, dyn], -1)


def from_latents(z_pose_6: np.ndarray, z_dyn: np.ndarray, names: Sequence[str]) -> np.ndarray:
  """A portrait's latents -> its motion in label space [L] (names not in the latents stay 0)."""
  pose_cols, dyn_cols = _columns(names)
  out = np.zeros(len(names), np.float32)
  pose = np.asarray(z_pose_6, np.float32).reshape(-1).copy()
  pose[5] = np.exp(-pose[5])
  out[pose_cols] = pose
  out[dyn_cols] = np.asarray(z_dyn, np.float32).reshape(-1)[:len(DYN_LABELS)]
  return out
