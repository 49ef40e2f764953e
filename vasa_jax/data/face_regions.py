"""Where the eyes and the mouth are in a frame: three ellipses per frame, for region-weighted losses.

A frame's regions are float32 [3, 4]: rows (right eye, left eye, mouth) as seen in the image
(viewer's left first), columns (u, v, ru, rv): centre and half-axes in image units [0, 1] (u right,
v down). They come from the corpus' own geometry for synthetic clips (`from_synthetic`: the head
model's eye and mouth centres projected through the frame's pose, exact and cheap, no rendering),
and from face landmarks for real clips (`from_landmarks`: MediaPipe face-mesh points, as `prepare`
stores them). `masks` turns them into per-pixel masks inside a jitted loss.
"""

from __future__ import annotations

import numpy as np

from vasa_jax.data import synthetic_head as head

NAMES = ("eye_a", "eye_b", "mouth")

# Half-axes around each centre, in head units: an eye's opening with its lids and lashes (the
# eyeball's radius plus a margin for gaze and blink), the mouth with its lips at any opening.
_EYE_MARGIN = 1.35
_MOUTH_MARGIN = (0.06, 0.03)

# MediaPipe face-mesh indices (478-point model): the contour of each eye and the outer lips.
_MESH_EYES = ((33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
              (362, 382, 381, 380, 374, 373, 390, 249, 263, 466, 388, 387, 386, 385, 384, 398))
_MESH_LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
_LANDMARK_MARGIN = (1.6, 1.4)  # eye box grown by this (the lids move beyond the contour), lips box


def from_synthetic(identity_id: int, labels: dict) -> np.ndarray:
  """float32 [T, 3, 4] regions of a synthetic clip's frames, from its identity and per-frame labels."""
  ident = head.identity_params(identity_id)
  n = len(np.atleast_1d(labels["yaw"]))
  lab = {k: np.broadcast_to(np.asarray(v, np.float64), (n,)) for k, v in labels.items()}
  out = np.zeros((n, 3, 4), np.float32)
  eye_z = [head._skin_surface_z(ident, s * ident.eye_sep, ident.eye_y) - 0.5 * ident.eye_r for s in (-1, 1)]
  for t in range(n):
    rot = head.rotation(lab["yaw"][t], lab["pitch"][t], lab["roll"][t])
    centre = head.head_center(lab["tx"][t], lab["ty"][t], lab["distance"][t])
    # The mouth's region is where it can be at any opening: from the upper lip of a shut mouth to
    # the lower lip of a wide-open one (the renderer's ellipse, `synthetic_head._paint_face`), so
    # that an output that opens a shut mouth is caught inside it too.
    half_w = ident.mouth_w * (1.0 + 0.3 * max(lab["mouth_width"][t], 0.0) + 0.12 * max(lab["smile"][t], 0.0))
    top = ident.mouth_y + 0.004 + 1.6 * ident.lip_th
    bottom = ident.mouth_y - 0.045 - 0.004 - 0.12 * 1.25 - 1.85 * ident.lip_th
    mouth_z = head._skin_surface_z(ident, 0.0, ident.mouth_y)
    if not np.isfinite(mouth_z):
      mouth_z = 0.9
    parts = [(np.array([s * ident.eye_sep, ident.eye_y, z]), (ident.eye_r * _EYE_MARGIN,) * 2)
             for s, z in zip((-1, 1), eye_z)]
    parts.append((np.array([0.0, (top + bottom) / 2, mouth_z]),
                  (half_w + _MOUTH_MARGIN[0], (top - bottom) / 2 + _MOUTH_MARGIN[1])))
    rows = []
    for p_local, (rx, ry) in parts:
      p = centre + rot @ p_local
      uv = head.project(p)
      scale = 1.0 / (-p[2] * head.TAN_HALF_FOV)  # head units -> [-1, 1] image units at that depth
      rows.append([(uv[0] + 1) / 2, (uv[1] + 1) / 2, rx * scale / 2, ry * scale / 2])
    rows[:2] = sorted(rows[:2])  # The eye on the viewer's left first.
    out[t] = rows
  return out


def from_landmarks(landmarks_TxNx2: np.ndarray) -> np.ndarray:
  """float32 [T, 3, 4] regions from face-mesh landmarks in image units [0, 1] (x right, y down)."""
  lm = np.asarray(landmarks_TxNx2, np.float32)
  if lm.ndim != 3 or lm.shape[1] < 468 or lm.shape[2] < 2:
    raise ValueError(f"landmarks must be [T, 468 or 478, 2+] face-mesh points, got {lm.shape}")
  out = []
  for idx, grow in ((_MESH_EYES[0], _LANDMARK_MARGIN[0]), (_MESH_EYES[1], _LANDMARK_MARGIN[0]),
                    (_MESH_LIPS, _LANDMARK_MARGIN[1])):
    pts = lm[:, list(idx), :2]
    lo, hi = pts.min(1), pts.max(1)
    c, half = (lo + hi) / 2, (hi - lo) / 2 * grow
    half = np.maximum(half, [[0.02, 0.02]])  # a shut eye's contour is a line: keep some height
    out.append(np.concatenate([c, half], -1))
  out = np.stack(out, 1)
  swap = out[:, 0, 0] > out[:, 1, 0]  # The eye on the viewer's left first.
  out[swap, :2] = out[swap][:, 1::-1]
  return out.astype(np.float32)


def masks(regions_Bx3x4, size: int, xp=np):
  """{name: float [B, size, size]} 1 inside each ellipse, 0 outside (`xp`: numpy or jax.numpy)."""
  r = xp.asarray(regions_Bx3x4)
  grid = (xp.arange(size, dtype=r.dtype) + 0.5) / size
  u, v = grid[None, None, :], grid[None, :, None]
  out = {}
  for k, name in enumerate(NAMES):
    cu, cv, ru, rv = (r[:, k, j][:, None, None] for j in range(4))
    inside = ((u - cu) / xp.maximum(ru, 1e-4)) ** 2 + ((v - cv) / xp.maximum(rv, 1e-4)) ** 2 <= 1.0
    out[name] = inside.astype(r.dtype)
  return out
