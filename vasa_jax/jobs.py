"""One video to make (portrait, audio, output, per-video controls), checked before any work.

`python -m vasa_jax.sample` makes one `Job` from its flags, `sample --batch` one per CSV row
(`batch`); both go through `check` and `load`, so a bad value gets the same message either
way, naming the flag (`--gaze`) or the CSV column (`gaze`).
"""

import dataclasses
import math
import os
import sys

import numpy as np

from vasa_jax import cli, faces, media
from vasa_jax.data.synthetic import DISTANCE_RANGE, EMOTIONS, GAZE_PHI_RANGE, GAZE_THETA_RANGE
from vasa_jax.errors import UserError
from vasa_jax.motion import Controls

# The controls a model trained on the synthetic corpus has seen (gaze in degrees, to 0.1).
GAZE_THETA_DEG = tuple(round(math.degrees(r), 1) for r in GAZE_THETA_RANGE)
GAZE_PHI_DEG = tuple(round(math.degrees(r), 1) for r in GAZE_PHI_RANGE)
# jax.random.key takes the seed modulo 2**32: larger seeds would repeat smaller ones.
SEED_RANGE = (0, 2 ** 32 - 1)
DEMO_OUT = "vasa_jax_demo.mp4"
DEMO_IMAGE = media.DEMO_IMAGE
CROPS = ("face", "none")
# How a CLI job names its fields in messages; a CSV job uses the column names (the fields').
FLAGS = {"portrait": "--image", "audio": "--audio", "driving": "--driving", "out": "--out", "seed": "--seed",
         "gaze": "--gaze", "distance": "--distance", "emotion": "--emotion", "still": "--still"}


@dataclasses.dataclass
class Job:
  portrait: str
  audio: str | None                 # None: the driving video's own sound
  out: str
  driving: str | None = None
  seed: int = 0
  gaze: tuple[float, float] | None = None   # degrees (theta, phi)
  distance: float | None = None
  emotion: str | None = None
  still: bool = False
  from_csv: bool = False

  def name(self, field: str) -> str:
    return field if self.from_csv else FLAGS[field]

  def controls(self) -> Controls:
    gaze = None if self.gaze is None else tuple(math.radians(g) for g in self.gaze)
    return Controls(gaze=gaze, distance=self.distance, emotion=parse_emotion(self.emotion, self.name("emotion")))


@dataclasses.dataclass
class Inputs:
  portrait: np.ndarray               # float32 HxWx3 in [0, 1]
  audio: np.ndarray | None           # mono float32 at the model's rate; None: a driving video without sound
  driving: np.ndarray | None = None  # uint8 TxHxWx3 frames of the driving video


def default_out(portrait: str, sound: str) -> str:
  """`<portrait stem>_<audio stem>.mp4`: the output named after the inputs."""
  stem = lambda path: os.path.splitext(os.path.basename(path))[0]  # noqa: E731
  return f"{stem(portrait)}_{stem(sound)}.mp4"


def parse_emotion(text: str | None, name: str = "--emotion"):
  """A name from EMOTIONS, or a comma-separated vector of len(EMOTIONS) weights in 0..1."""
  if text is None:
    return None
  if text.strip().lower() in EMOTIONS:
    return EMOTIONS.index(text.strip().lower())
  try:
    vec = [float(x) for x in text.split(",")]
  except ValueError:
    vec = []
  if len(vec) != len(EMOTIONS):
    raise UserError(f"{name} {text!r}: give one of {', '.join(EMOTIONS)} or {len(EMOTIONS)} comma-separated "
                    "weights (e.g. 0,1,0,0,0)")
  if not all(0.0 <= w <= 1.0 for w in vec) or sum(vec) == 0:
    raise UserError(f"{name} {text!r}: each weight must lie in 0..1 and one at least above 0 (the model was "
                    "trained on one emotion at a time, e.g. 0,1,0,0,0)")
  return vec


def check(job: Job, *, overwrite: bool) -> None:
  """What can be checked without decoding anything: values, the output name, the input files."""
  cli.check_range(job.name("seed"), job.seed, *SEED_RANGE)
  if job.gaze is not None:
    theta, phi = job.gaze
    if not (GAZE_THETA_DEG[0] <= theta <= GAZE_THETA_DEG[1] and GAZE_PHI_DEG[0] <= phi <= GAZE_PHI_DEG[1]):
      raise UserError(f"{job.name('gaze')} {theta:g} {phi:g} is out of range; accepted: theta "
                      f"{GAZE_THETA_DEG[0]:g}..{GAZE_THETA_DEG[1]:g} and phi {GAZE_PHI_DEG[0]:g}..{GAZE_PHI_DEG[1]:g} "
                      "degrees (the gaze directions the model was trained on)")
  if job.distance is not None:
    cli.check_range(job.name("distance"), job.distance, *DISTANCE_RANGE,
                    " (the distances the model was trained on; 1 is typical, smaller is closer)")
  parse_emotion(job.emotion, job.name("emotion"))
  media.require_output_path(job.out, (".mp4",), overwrite=overwrite)
  media.require_file(job.portrait, "image", media.IMAGE_ACCEPTED)
  if job.audio is not None:
    media.require_file(job.audio, "audio", media.AUDIO_ACCEPTED)
  if job.driving is not None:
    media.require_file(job.driving, "video", media.VIDEO_ACCEPTED)


def crop_mode(job: Job, crop: str | None) -> str:
  """`--crop` as given, or by default "face", except for the bundled synthetic portrait ("none")."""
  if crop is None:
    same = os.path.exists(job.portrait) and os.path.samefile(job.portrait, DEMO_IMAGE)
    return "none" if same else "face"
  if crop not in CROPS:
    raise UserError(f"--crop {crop!r}: accepted: face (find the face and crop around it) or none (the image is "
                    "already a face crop; its central square is used)")
  return crop


def load(job: Job, *, sample_rate: int, max_seconds: float, warn: bool = True, crop: str | None = None,
         face_index: int | None = None) -> Inputs:
  """Decodes the job's inputs (a bad file is a UserError) and, with `crop` "face", cuts the portrait
  (and every driving frame) around its face; `warn`: about a portrait with no face when the faces
  extra is not installed."""
  crop = crop_mode(job, crop)
  if face_index is not None and crop != "face":
    raise UserError(f"--face-index {face_index} picks a face to crop around; it does not go with --crop none")
  if crop == "face" and not faces.available():
    if warn:
      print(f"warning: no face detector installed ({faces.INSTALL_HINT}); using the central square of "
            f"{job.portrait} as it is", file=sys.stderr)
    crop = "none"
  portrait = media.load_image(job.portrait)
  if crop == "face":
    portrait, _, _ = faces.crop_portrait(portrait, face_index=face_index, what=f"image {job.portrait!r}")
  elif warn and face_likeness(portrait) < 0.03:
    print(f"warning: {job.portrait} shows little face-like (skin-coloured) content in its centre; "
          "results will be poor. A frontal, centred portrait works best.", file=sys.stderr)
  driving = audio = None
  if job.driving is not None:
    driving, fps, audio = media.read_video(job.driving, sample_rate=sample_rate)
    if crop == "face":
      driving = faces.crop_video(driving, fps, what=f"video {job.driving!r}")
  if job.audio is not None:
    audio = media.load_audio(job.audio, sample_rate=sample_rate, max_seconds=max_seconds)
  return Inputs(portrait, audio, driving)


def face_likeness(img_HxWx3: np.ndarray) -> float:
  """Fraction of skin-coloured pixels in the central region (a cheap 'is there a face' check)."""
  h, w, _ = img_HxWx3.shape
  c = img_HxWx3[h // 6: 5 * h // 6, w // 6: 5 * w // 6] * 255.0
  r, g, b = c[..., 0], c[..., 1], c[..., 2]
  cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
  cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
  # The classic YCbCr skin box, which covers light to dark skin tones.
  skin = (cb > 77) & (cb < 127) & (cr > 133) & (cr < 173)
  return float(skin.mean())
