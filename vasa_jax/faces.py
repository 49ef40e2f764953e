"""Faces in real photos and videos: detection, 478 landmarks (with iris), a face-centred square crop.

    image -> BlazeFace full-range detector (192^2, 2304 anchors) -> boxes + 6 keypoints
          -> face mesh (192^2 crop, rotated upright by the eyes) -> 468 landmarks
          -> iris model (64^2 crop per eye) -> 5 iris points per eye -> 478 landmarks
          -> a square crop around the face, framed like the synthetic corpus' heads

The three networks are MediaPipe's (0.10.21, Apache-2.0), shipped in `vasa_jax/face_models/`
and run by the TFLite interpreter of `ai-edge-litert` (the `faces` extra). MediaPipe itself
cannot share an environment with this project (its wheels need protobuf < 5, grain needs
>= 5.28), so the pre- and post-processing of its graphs (anchors, weighted NMS, the ROI
rules) are re-implemented here in numpy. Nothing is downloaded.

Landmark indices are MediaPipe's face-mesh indices (468..472: the iris of the eye around
33/133, the subject's right eye; 473..477: the other). Coordinates are image pixels
(x right, y down); z is relative depth in the same units (smaller = closer to the camera).
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np
from PIL import Image

from vasa_jax.errors import UserError

MODELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "face_models")
DETECTOR_MODEL = "face_detection_full_range_sparse.tflite"
MESH_MODEL = "face_landmark.tflite"
IRIS_MODEL = "iris_landmark.tflite"
INSTALL_HINT = "pip install 'vasa_jax[faces]'"

MIN_DETECTION_SCORE = 0.5
NMS_IOU = 0.3
MIN_PRESENCE = 0.5           # the mesh model's own "a face is in this crop" score
# The square crop's side in units of the face's size (`face_frame`), and how far below the eyes'
# midpoint its centre sits (a share of the side): the framing of the synthetic corpus' heads, so a
# model trained on them sees real faces at the same scale. Measured with `face_frame` on renders of
# identities 0, 4, ..., 36 at 256^2: side 1.34-1.71 face sizes (mean 1.52; the demo portrait 1.92),
# eyes 0.059-0.092 of the side above the centre (mean 0.073).
CROP_SCALE = 1.6
CROP_CENTER_BELOW_EYES = 0.075

# Landmarks the rules below use (MediaPipe face-mesh indices).
EYE_A = (33, 133)            # outer, inner corner of the subject's right eye (image left when frontal)
EYE_B = (263, 362)           # outer, inner corner of the subject's left eye
MOUTH_CORNERS = (61, 291)
LIP_INNER = (13, 14)         # upper, lower inner lip, centre
EYELIDS_A = (159, 145)       # upper, lower lid of eye A
EYELIDS_B = (386, 374)
IRIS_A, IRIS_B = 468, 473    # iris centres
NOSE_TIP, CHIN, FOREHEAD = 1, 152, 10
CHEEK_A, CHEEK_B = 234, 454
BROW_A, BROW_B = 105, 334


def available() -> bool:
  """Whether the TFLite runtime of the `faces` extra is installed."""
  try:
    import ai_edge_litert.interpreter  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return False
  return True


@dataclasses.dataclass
class Face:
  """One face in an image: the detector's box and score, and (after `landmarks`) its mesh."""
  box: np.ndarray                  # [4] x0, y0, x1, y1 in pixels
  score: float
  keypoints: np.ndarray            # [6, 2] right eye, left eye, nose tip, mouth, right ear, left ear
  landmarks: np.ndarray | None = None   # [478, 3] pixels (x, y, z)
  presence: float = 0.0            # the mesh model's face score for these landmarks

  @property
  def area(self) -> float:
    return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


# --------------------------------------------------------------------------- the networks


@functools.lru_cache(maxsize=None)
def _interpreter(name: str):
  try:
    from ai_edge_litert.interpreter import Interpreter  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise UserError(f"finding faces needs the TFLite runtime of the faces extra: {INSTALL_HINT}") from None
  path = os.path.join(MODELS, name)
  if not os.path.isfile(path):
    raise UserError(f"face model {path} is missing from this installation; reinstall vasa_jax")
  it = Interpreter(model_path=path, num_threads=1)
  it.allocate_tensors()
  return it


def _run(name: str, x_1xHxWx3: np.ndarray) -> list[np.ndarray]:
  it = _interpreter(name)
  it.set_tensor(it.get_input_details()[0]["index"], x_1xHxWx3.astype(np.float32))
  it.invoke()
  return [it.get_tensor(d["index"]) for d in it.get_output_details()]


def _as_uint8(img_HxWx3: np.ndarray) -> np.ndarray:
  if img_HxWx3.dtype == np.uint8:
    return img_HxWx3
  return np.clip(np.round(np.asarray(img_HxWx3, np.float32) * 255.0), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=None)
def _anchors() -> np.ndarray:
  """The full-range model's 48x48 anchor centres (one per cell, fixed size 1), [2304, 2]."""
  cells = (np.arange(48) + 0.5) / 48
  y, x = np.meshgrid(cells, cells, indexing="ij")
  return np.stack([x.ravel(), y.ravel()], -1)


def detect(img_HxWx3: np.ndarray, *, min_score: float = MIN_DETECTION_SCORE) -> list[Face]:
  """Every face the detector finds, largest first (boxes and keypoints in image pixels)."""
  img = _as_uint8(img_HxWx3)
  h, w = img.shape[:2]
  size = 192
  # Letterbox: keep the aspect ratio, pad symmetrically (as MediaPipe's ImageToTensor does).
  s = size / max(h, w)
  nw, nh = max(1, round(w * s)), max(1, round(h * s))
  px, py = (size - nw) // 2, (size - nh) // 2
  canvas = np.zeros((size, size, 3), np.float32)
  canvas[py:py + nh, px:px + nw] = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR), np.float32)
  raw_boxes, raw_scores = _run(DETECTOR_MODEL, (canvas / 127.5 - 1.0)[None])
  if raw_boxes.shape[-1] != 16:  # Output order differs between conversions: boxes carry 16 values.
    raw_boxes, raw_scores = raw_scores, raw_boxes
  scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores.reshape(-1).astype(np.float64), -100, 100)))
  keep = scores >= min_score
  if not keep.any():
    return []
  raw = raw_boxes.reshape(-1, 16)[keep] / size
  anchors = _anchors()[keep]
  cx, cy = raw[:, 0] + anchors[:, 0], raw[:, 1] + anchors[:, 1]
  boxes = np.stack([cx - raw[:, 2] / 2, cy - raw[:, 3] / 2, cx + raw[:, 2] / 2, cy + raw[:, 3] / 2], -1)
  kps = raw[:, 4:].reshape(-1, 6, 2) + anchors[:, None, :]
  faces = []
  for box, kp, score in _weighted_nms(boxes, kps, scores[keep]):
    # Letterbox [0, 1] -> image pixels.
    box = (box.reshape(2, 2) * size - (px, py)) / s
    kp = (kp * size - (px, py)) / s
    faces.append(Face(box=box.reshape(4), score=float(score), keypoints=kp))
  return sorted(faces, key=lambda f: -f.area)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  lo = np.maximum(box[:2], boxes[:, :2])
  hi = np.minimum(box[2:], boxes[:, 2:])
  inter = np.prod(np.clip(hi - lo, 0, None), -1)
  area = lambda b: np.prod(np.clip(b[..., 2:] - b[..., :2], 0, None), -1)  # noqa: E731
  return inter / np.maximum(area(box) + area(boxes) - inter, 1e-9)


def _weighted_nms(boxes, kps, scores):
  """MediaPipe's weighted non-maximum suppression: overlapping boxes are averaged by score."""
  order = np.argsort(-scores)
  boxes, kps, scores = boxes[order], kps[order], scores[order]
  alive = np.ones(len(scores), bool)
  for i in range(len(scores)):
    if not alive[i]:
      continue
    group = alive & (_iou(boxes[i], boxes) > NMS_IOU)
    group[i] = True
    wts = scores[group] / scores[group].sum()
    yield (wts[:, None] * boxes[group]).sum(0), (wts[:, None, None] * kps[group]).sum(0), scores[i]
    alive &= ~group


# --------------------------------------------------------------------------- rotated crops


def _crop(img: np.ndarray, center, side: float, angle: float, size: int, flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """A `size`^2 crop of a square of `side` pixels centred at `center`, rotated by `angle`
  (radians; the crop's x axis points along (cos, sin) in the image). Returns the crop and the
  2x3 matrix taking crop pixels to image pixels."""
  c, s_ = np.cos(angle), np.sin(angle)
  k = side / size
  ax = np.array([c, s_]) * k * (-1 if flip else 1)   # image step per crop pixel along x
  ay = np.array([-s_, c]) * k
  origin = np.asarray(center, np.float64) - ax * size / 2 - ay * size / 2
  m = np.stack([ax, ay, origin], 1)                  # [2, 3]: (u, v, 1) -> (x, y)
  # PIL maps output (u, v) to input (a u + b v + c, d u + e v + f) with pixel centres at +0.5.
  coeffs = m.copy()
  coeffs[:, 2] += 0.5 * (m[:, 0] + m[:, 1]) - 0.5
  out = Image.fromarray(img).transform((size, size), Image.AFFINE, tuple(coeffs.ravel()), Image.BILINEAR)
  return np.asarray(out), m


def _to_image(points_Nx3: np.ndarray, m: np.ndarray) -> np.ndarray:
  """Crop pixels (u, v, z) -> image pixels (x, y, z with the crop's scale)."""
  xy = points_Nx3[:, :2] @ m[:, :2].T + m[:, 2]
  z = points_Nx3[:, 2:3] * np.linalg.norm(m[:, 0])
  return np.concatenate([xy, z], -1)


def _roi_from_points(p0, p1, points_Nx2, scale: float) -> tuple[np.ndarray, float, float]:
  """MediaPipe's rule: rotation from the line p0 -> p1, a square `scale` times the longer side of
  the points' box in that rotated frame, centred on the box."""
  angle = float(np.arctan2(p1[1] - p0[1], p1[0] - p0[0]))
  c, s = np.cos(angle), np.sin(angle)
  rot = np.array([[c, s], [-s, c]])                  # image -> rotated frame
  q = points_Nx2 @ rot.T
  lo, hi = q.min(0), q.max(0)
  center = ((lo + hi) / 2) @ rot                     # back to the image frame
  return center, float(np.max(hi - lo) * scale), angle


def landmarks(img_HxWx3: np.ndarray, face: Face, *, from_landmarks: np.ndarray | None = None) -> Face:
  """Fills `face.landmarks` [478, 3] and `face.presence`; the crop comes from the detector's
  keypoints or, when tracking, from the previous frame's `from_landmarks`."""
  img = _as_uint8(img_HxWx3)
  if from_landmarks is None:
    kp = face.keypoints
    box = face.box.reshape(2, 2)
    angle = float(np.arctan2(kp[1, 1] - kp[0, 1], kp[1, 0] - kp[0, 0]))
    center, side = box.mean(0), float(np.max(box[1] - box[0]) * 1.5)
  else:
    center, side, angle = _roi_from_points(from_landmarks[EYE_A[0], :2], from_landmarks[EYE_B[0], :2],
                                           from_landmarks[:468, :2], 1.5)
  crop, m = _crop(img, center, side, angle, 192)
  mesh, presence = _run(MESH_MODEL, (crop.astype(np.float32) / 255.0)[None])
  if mesh.size != 1404:
    mesh, presence = presence, mesh
  pts = _to_image(mesh.reshape(468, 3).astype(np.float64), m)
  iris = [_iris(img, pts, EYE_A, flip=False), _iris(img, pts, EYE_B, flip=True)]
  face.landmarks = np.concatenate([pts, *iris], 0).astype(np.float32)
  face.presence = float(1.0 / (1.0 + np.exp(-float(np.asarray(presence).reshape(-1)[0]))))
  return face


def _iris(img: np.ndarray, pts: np.ndarray, corners, flip: bool) -> np.ndarray:
  """The 5 iris points [5, 3] of the eye between `corners` (MediaPipe: the model sees the subject's
  left eye mirrored, so both eyes reach it as a right eye)."""
  a, b = pts[corners[0], :2], pts[corners[1], :2]
  if flip:
    a, b = b, a
  center, side, angle = _roi_from_points(a, b, np.stack([a, b]), 2.3)
  crop, m = _crop(img, center, side, angle, 64, flip=flip)
  _, iris = _run(IRIS_MODEL, (crop.astype(np.float32) / 255.0)[None])
  return _to_image(iris.reshape(5, 3).astype(np.float64), m)


def find_faces(img_HxWx3: np.ndarray, *, min_score: float = MIN_DETECTION_SCORE) -> list[Face]:
  """Every face with its landmarks, largest first; faces the mesh model rejects are dropped."""
  faces = [landmarks(img_HxWx3, f) for f in detect(img_HxWx3, min_score=min_score)]
  return [f for f in faces if f.presence >= MIN_PRESENCE]


# --------------------------------------------------------------------------- the crop


def face_frame(landmarks_Nx3: np.ndarray) -> tuple[np.ndarray, float]:
  """The face's reference point (below the eyes' midpoint) and size in pixels, from landmarks."""
  eye_a = landmarks_Nx3[list(EYE_A), :2].mean(0)
  eye_b = landmarks_Nx3[list(EYE_B), :2].mean(0)
  eyes = (eye_a + eye_b) / 2
  mouth = landmarks_Nx3[list(MOUTH_CORNERS), :2].mean(0)
  width = np.linalg.norm(landmarks_Nx3[EYE_A[0], :2] - landmarks_Nx3[EYE_B[0], :2])
  height = np.linalg.norm(mouth - eyes)
  size = 2.0 * max(float(width), 1.6 * float(height))   # robust to yaw (width shrinks) and pitch
  return eyes, size


def crop_box(landmarks_Nx3: np.ndarray, scale: float = CROP_SCALE) -> np.ndarray:
  """The square crop (cx, cy, side) in pixels around a face, framed like the synthetic corpus."""
  eyes, size = face_frame(landmarks_Nx3)
  side = size * scale
  return np.array([eyes[0], eyes[1] + CROP_CENTER_BELOW_EYES * side, side], np.float64)


def cut(img_HxWx3: np.ndarray, box, size: int) -> np.ndarray:
  """The square `box` (cx, cy, side) of an image resized to `size`^2; parts outside the image
  repeat its edge pixels."""
  img = _as_uint8(img_HxWx3)
  cx, cy, side = (float(v) for v in box)
  x0, y0 = cx - side / 2, cy - side / 2
  h, w = img.shape[:2]
  pad = int(np.ceil(max(0.0, -x0, -y0, x0 + side - w, y0 + side - h))) + 1
  if pad > 1:
    pad = min(pad, 4 * max(h, w))
    img = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    x0, y0 = x0 + pad, y0 + pad
  else:
    pad = 0
  out = Image.fromarray(img).resize((size, size), Image.BICUBIC, box=(x0, y0, x0 + side, y0 + side),
                                    reducing_gap=None if side <= 3 * size else 2.0)
  return np.asarray(out)


def pick(faces: list[Face], face_index: int | None, what: str) -> Face:
  """The largest face, or with `face_index` the Nth counted from the left (0 first)."""
  if not faces:
    raise UserError(f"{what}: no face found; give a photo with a visible, roughly frontal face, or pass "
                    "--crop none if the image is already a face crop")
  if face_index is None:
    return faces[0]
  by_x = sorted(faces, key=lambda f: f.box[0] + f.box[2])
  if not 0 <= face_index < len(by_x):
    raise UserError(f"{what}: --face-index {face_index} is out of range; {len(by_x)} face(s) found, "
                    f"numbered 0..{len(by_x) - 1} from the left")
  return by_x[face_index]


def crop_portrait(img_HxWx3: np.ndarray, *, face_index: int | None = None, what: str = "image",
                  size: int | None = None) -> tuple[np.ndarray, Face, np.ndarray]:
  """The portrait's face crop (float32 in [0, 1], `size`^2, default the crop's own pixel size up to
  1024), the face it was cut around and the crop box (cx, cy, side)."""
  face = pick(find_faces(img_HxWx3), face_index, what)
  box = crop_box(face.landmarks)
  size = size or int(min(1024, max(64, round(box[2]))))
  return cut(img_HxWx3, box, size).astype(np.float32) / 255.0, face, box


# --------------------------------------------------------------------------- videos


@dataclasses.dataclass
class TrackStep:
  """One frame of a tracked face."""
  landmarks: np.ndarray | None     # [478, 3], None when the face was lost on this frame
  num_faces: int | None            # faces the detector saw on this frame; None: it did not run


class FaceTracker:
  """Follows one face through a video: landmarks every frame, each frame's crop placed by the
  previous frame's landmarks (MediaPipe's tracking rule); the detector runs on the first frame,
  every `detect_every` frames (to count faces) and whenever the face is lost."""

  def __init__(self, detect_every: int = 10):
    self.detect_every = detect_every
    self.previous: np.ndarray | None = None
    self.frame = 0

  def step(self, frame_HxWx3: np.ndarray) -> TrackStep:
    num_faces = None
    found = None
    if self.previous is not None:
      found = landmarks(frame_HxWx3, Face(np.zeros(4), 0.0, np.zeros((6, 2))), from_landmarks=self.previous)
      found = found if found.presence >= MIN_PRESENCE else None
    if found is None or self.frame % self.detect_every == 0:
      detected = detect(frame_HxWx3)
      num_faces = len(detected)
      if found is None and detected:
        if self.previous is not None:   # Re-acquire the face nearest the one we followed.
          eyes, _ = face_frame(self.previous)
          detected.sort(key=lambda f: np.linalg.norm(f.keypoints[:2].mean(0) - eyes))
        found = landmarks(frame_HxWx3, detected[0])
        found = found if found.presence >= MIN_PRESENCE else None
    self.previous = None if found is None else found.landmarks
    self.frame += 1
    return TrackStep(self.previous, num_faces)


def smooth_boxes(boxes_Tx3: np.ndarray, sigma: float) -> np.ndarray:
  """Gaussian smoothing in time (sigma in frames) of crop boxes; the ends are extended by point
  reflection, which keeps a steady motion unbiased up to the last frame."""
  if sigma <= 0 or len(boxes_Tx3) < 2:
    return boxes_Tx3.copy()
  radius = int(3 * sigma + 0.5)
  k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  k /= k.sum()
  if len(boxes_Tx3) > radius:
    padded = np.pad(boxes_Tx3, ((radius, radius), (0, 0)), mode="reflect", reflect_type="odd")
  else:
    padded = np.pad(boxes_Tx3, ((radius, radius), (0, 0)), mode="edge")
  return np.stack([np.convolve(padded[:, j], k, mode="valid") for j in range(boxes_Tx3.shape[1])], -1)


def fill_gaps(boxes_Tx3: np.ndarray) -> np.ndarray:
  """Rows of NaN (frames where the face was lost) take the nearest found frame's box."""
  ok = ~np.isnan(boxes_Tx3).any(-1)
  if not ok.any():
    raise ValueError("no frame has a face")
  idx = np.arange(len(boxes_Tx3))
  nearest = np.interp(idx, idx[ok], idx[ok]).round().astype(int)
  return boxes_Tx3[np.where(ok, idx, nearest)]


def crop_video(frames_TxHxWx3: np.ndarray, fps: float, *, size: int | None = None, what: str = "video"
               ) -> np.ndarray:
  """Every frame cut around the video's (largest, then followed) face with a smoothed square
  crop: uint8 [T, size, size, 3] (default size: the median crop's pixels, up to 512)."""
  tracker = FaceTracker(detect_every=max(1, int(round(fps))))
  boxes = np.full((len(frames_TxHxWx3), 3), np.nan)
  for t, frame in enumerate(frames_TxHxWx3):
    lm = tracker.step(frame).landmarks
    if lm is not None:
      boxes[t] = crop_box(lm)
  if np.isnan(boxes).all():
    raise UserError(f"{what}: no face found in any frame; give a video of a visible, roughly frontal face, "
                    "or pass --crop none if its frames are already face crops")
  boxes = smooth_boxes(fill_gaps(boxes), sigma=0.25 * fps)
  size = size or int(min(512, max(64, round(float(np.median(boxes[:, 2]))))))
  return np.stack([cut(f, b, size) for f, b in zip(frames_TxHxWx3, boxes)])
