"""Identity similarity of real faces: does a generated frame still show the portrait's person?

    python -m vasa_jax.face_identity --portrait photo.jpg --images out.mp4 [more images or videos]

The model is dlib's face recognition ResNet (`dlib_face_recognition_resnet_model_v1`: a 29-layer
ResNet, 128-D embedding, 99.38% on LFW by dlib's own measure), on a face found by dlib's HOG
detector and aligned by its 5-point landmark model into a 150x150 chip. The two model files come
from the `face-recognition-models` package (its LICENSE: CC0 1.0) and dlib from `dlib-bin`
(Boost licence): the `identity` extra. Nothing is downloaded. The package's 68-point model is
not used (its training data's terms forbid commercial use).

Scores are dlib's: the Euclidean distance of two embeddings, where below 0.6 means the same
person (dlib's threshold on LFW); the cosine similarity is reported beside it.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os

import numpy as np

from vasa_jax.errors import UserError

MODEL = ("dlib face_recognition_resnet_model_v1 (128-D, face-recognition-models 0.3.0, CC0), "
         "HOG detector, 5-point alignment")
INSTALL_HINT = "pip install 'vasa_jax[identity]'"
SAME_PERSON = 0.6            # dlib's distance threshold (LFW)
# dlib's HOG detector finds faces of about 80 px and up: smaller images are upsampled (x2 per step)
# until their shorter side reaches this, so a face filling a 64^2 or 128^2 frame is found.
MIN_SIDE = 256
CHIP_SIZE, CHIP_PADDING = 150, 0.25   # the input the ResNet was trained on


def _models_dir() -> str | None:
  # find_spec does not run the package's __init__, which imports pkg_resources (gone from setuptools 81).
  spec = importlib.util.find_spec("face_recognition_models")
  if spec is None or not spec.submodule_search_locations:
    return None
  return os.path.join(list(spec.submodule_search_locations)[0], "models")


def available() -> bool:
  try:
    import dlib  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return False
  d = _models_dir()
  return d is not None and os.path.exists(os.path.join(d, "dlib_face_recognition_resnet_model_v1.dat"))


@functools.lru_cache(maxsize=1)
def _models():
  if not available():
    raise UserError(f"identity similarity needs dlib and its face models: {INSTALL_HINT}")
  import dlib  # pylint: disable=import-outside-toplevel
  d = _models_dir()
  return (dlib.get_frontal_face_detector(),
          dlib.shape_predictor(os.path.join(d, "shape_predictor_5_face_landmarks.dat")),
          dlib.face_recognition_model_v1(os.path.join(d, "dlib_face_recognition_resnet_model_v1.dat")))


def _as_uint8(img: np.ndarray) -> np.ndarray:
  img = np.asarray(img)
  if img.ndim != 3 or img.shape[-1] != 3:
    raise ValueError(f"expected an RGB image [H, W, 3], got shape {img.shape}")
  if img.dtype != np.uint8:  # Float images of this project are in [0, 1].
    img = np.clip(np.round(np.asarray(img, np.float32) * 255.0), 0, 255).astype(np.uint8)
  return np.ascontiguousarray(img)


def embed(img_HxWx3: np.ndarray) -> np.ndarray | None:
  """The 128-D embedding of the largest face in an RGB image (uint8, or float in [0, 1]); None if no face."""
  detector, landmarks, net = _models()
  img = _as_uint8(img_HxWx3)
  up = min(3, max(0, math.ceil(math.log2(MIN_SIDE / max(1, min(img.shape[:2]))))))
  faces = detector(img, up)
  if not faces:
    return None
  face = max(faces, key=lambda r: r.area())
  import dlib  # pylint: disable=import-outside-toplevel
  chip = dlib.get_face_chip(img, landmarks(img, face), CHIP_SIZE, CHIP_PADDING)
  return np.asarray(net.compute_face_descriptor(chip), np.float64)


def compare(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
  """(dlib distance, cosine similarity) of two embeddings."""
  return float(np.linalg.norm(a - b)), float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def identity_similarity(portrait_HxWx3: np.ndarray, frames: np.ndarray | list, *, max_frames: int | None = None) -> dict:
  """Portrait vs frames: distance and cosine statistics over the frames where a face is found.

  `max_frames`: score at most this many frames, evenly spread. Where the portrait or every frame has
  no face, the numbers are NaN and `reason` says why.
  """
  frames = list(frames)
  if max_frames is not None and len(frames) > max_frames:
    frames = [frames[i] for i in np.linspace(0, len(frames) - 1, max_frames).round().astype(int)]
  out = {"model": MODEL, "frames": len(frames), "faces": 0, "distance_mean": math.nan, "distance_max": math.nan,
         "cosine_mean": math.nan, "same_person": math.nan}
  ref = embed(portrait_HxWx3)
  if ref is None:
    return {**out, "reason": "no face found in the portrait"}
  scores = [compare(ref, e) for e in map(embed, frames) if e is not None]
  if not scores:
    return {**out, "reason": f"no face found in any of the {len(frames)} frames"}
  d, c = np.array(scores).T
  return {**out, "faces": len(scores), "distance_mean": float(d.mean()), "distance_max": float(d.max()),
          "cosine_mean": float(c.mean()), "same_person": float(np.mean(d < SAME_PERSON))}


def pooled(results: list[dict]) -> dict:
  """Several `identity_similarity` results as one (means over the results that found faces)."""
  ok = [r for r in results if r["faces"]]
  out = {"model": MODEL, "portraits": len(results), "scored": len(ok),
         "frames": sum(r["frames"] for r in results), "faces": sum(r["faces"] for r in results)}
  for k in ("distance_mean", "cosine_mean", "same_person"):
    out[k] = float(np.mean([r[k] for r in ok])) if ok else math.nan
  out["distance_max"] = float(max(r["distance_max"] for r in ok)) if ok else math.nan
  if not ok:
    out["reason"] = results[0]["reason"] if results else "nothing to score"
  return out


def format_row(name: str, r: dict) -> str:
  if not r["faces"]:
    return f"{name}: n/a ({r.get('reason', 'no face')})"
  return (f"{name}: distance {r['distance_mean']:.3f} (max {r['distance_max']:.3f}), cosine {r['cosine_mean']:.3f}, "
          f"same person (< {SAME_PERSON}) in {100 * r['same_person']:.0f}% of {r['faces']}/{r['frames']} frames with a face")


def _load_frames(path: str) -> list[np.ndarray]:
  from vasa_jax import media  # pylint: disable=import-outside-toplevel
  if path.lower().endswith((".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")):
    return list(media.read_video(path)[0])
  return [media.load_image(path)]


def main(args) -> int:
  from vasa_jax import media  # pylint: disable=import-outside-toplevel
  portrait = media.load_image(args.portrait)
  if embed(portrait) is None:
    raise UserError(f"--portrait {args.portrait!r}: no face found (dlib's HOG detector needs a frontal or "
                    "near-frontal face of about 80 px or more)")
  print(f"model: {MODEL}")
  for path in args.images:
    r = identity_similarity(portrait, _load_frames(path), max_frames=args.max_frames)
    print(format_row(path, r))
  return 0


def parser():
  from vasa_jax import cli  # pylint: disable=import-outside-toplevel
  p = cli.make_parser("python -m vasa_jax.face_identity",
                      f"Identity similarity of real faces: a portrait against images or video frames ({MODEL}).")
  p.add_argument("--portrait", required=True, help="image of the reference face")
  p.add_argument("--images", required=True, nargs="+", help="images or videos to compare with it")
  p.add_argument("--max-frames", type=int, default=25, help="score at most this many frames per video")
  return p


if __name__ == "__main__":
  from vasa_jax import cli  # pylint: disable=import-outside-toplevel
  cli.main_entry(main, parser())
