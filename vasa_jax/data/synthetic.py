"""Procedural talking-head corpus with exact ground truth.

    python -m vasa_jax.data.synthetic --out DIR --identities 100 --clips-per-identity 4 \
        --frames 100 --resolution 128 --seed 0 --workers 2
    python -m vasa_jax.data.synthetic --contact-sheet sheet.png --strip strip.png

Each clip is a 3D head (`synthetic_head`: identity from an integer id, ray-cast
with perspective) speaking speech-like audio (`synthetic_speech`). Labels are
per-frame float32 [T] arrays named in `LABEL_NAMES`; their sign conventions are
in the `synthetic_head` docstring (yaw > 0: face turns to the viewer's left;
pitch > 0: face tilts up; roll > 0: counter-clockwise in the image; gaze_theta
> 0: eyes look to the viewer's left; gaze_phi > 0: up).

How motion follows the audio (deterministic, so a model can learn it):
  mouth_open  = clip(track.open + emotion offset)   track.open = syllable envelope
                x vowel openness (a 1.0, o .62, e .55, u .30, i .28), read
                MOUTH_LEAD_S = 60 ms (1.5 frames) ahead of the sound
  mouth_width = clip(track.width + 0.15 x happy)    /i/ 1.0, /e/ .65, /a/ .25
  mouth_round = track.round                         /u/ 1.0, /o/ .8
  pitch       = drift - 0.10 x accent - 0.04 x phrase boundary + phrase offset
                (a nod on every pitch accent, head lowers at phrase ends)
  brow        = emotion baseline + 0.5 x accent + small drift
  yaw         = slow drift + a new head orientation after each phrase boundary
Independent of audio: blinks (a Poisson-like process, ~1 every 4 s, 150-250 ms,
fast close, slower open), slow head drift (sums of low-frequency sinusoids),
gaze saccades around the clip's main gaze (every 0.5-2.5 s) with the eyes
counter-rotating half the head's yaw drift (vestibulo-ocular reflex).

Clip-level labels (attrs): main gaze (theta, phi), main distance, emotion from
`EMOTIONS` (shifts the smile / brow / mouth baselines). Splits of a corpus:
`train`; `benchmark` (held-out identities, the last ~10% of ids, with audio
seeds from a disjoint range); `benchmark_cross` (benchmark identity A with the
exact motion of benchmark clip B, attrs.motion_source = B's clip_id).
"""

import multiprocessing
import os
from typing import Sequence

import numpy as np
from tqdm import tqdm

from vasa_jax import cli, media
from vasa_jax.data import records
from vasa_jax.data import synthetic_speech as speech
from vasa_jax.data.synthetic_head import Identity, identity_params, render_frame, render_frames  # noqa: F401
from vasa_jax.data.synthetic_speech import MOUTH_LEAD_S, SAMPLE_RATE, synth_speech  # noqa: F401
from vasa_jax.errors import UserError

FPS = 25
LABEL_NAMES = ("yaw", "pitch", "roll", "tx", "ty", "distance", "mouth_open", "mouth_width",
               "mouth_round", "blink", "gaze_theta", "gaze_phi", "brow", "smile")
EMOTIONS = ("neutral", "happy", "sad", "surprised", "angry")
# Each clip's main gaze (radians) and head-to-camera distance are drawn from these ranges
# (`clip_attrs`): the controls a model trained on this corpus has seen, so what `sample` accepts.
GAZE_THETA_RANGE = (-0.3, 0.3)
GAZE_PHI_RANGE = (-0.2, 0.2)
DISTANCE_RANGE = (0.85, 1.2)
# Baselines per emotion: (smile, brow, mouth_open offset, mouth_width offset).
_EMOTION_BASE = {
    "neutral": (0.0, 0.0, 0.0, 0.0),
    "happy": (0.7, 0.2, 0.02, 0.15),
    "sad": (-0.45, -0.2, 0.0, 0.0),
    "surprised": (0.05, 0.85, 0.12, 0.0),
    "angry": (-0.35, -0.75, 0.0, 0.05),
}
MIN_RESOLUTION, MAX_RESOLUTION = 64, 512
# Audio seeds: train clips draw from [0, 2^30), benchmark clips from [2^30, 2^31).
BENCHMARK_AUDIO_BASE = 1 << 30


def _drift(rng, t, amp, f_lo=0.05, f_hi=0.4, n=3):
  """Smooth zero-mean wander: a sum of sinusoids with random frequency and phase."""
  f = rng.uniform(f_lo, f_hi, n)
  ph = rng.uniform(0, 2 * np.pi, n)
  w = rng.uniform(0.5, 1.0, n)
  x = (w[:, None] * np.sin(2 * np.pi * f[:, None] * t[None] + ph[:, None])).sum(0)
  return amp * x / np.sqrt((w * w).sum() / 2)


def _smooth(x, sigma):
  return speech._gauss_smooth(np.asarray(x, np.float64), sigma)


def _blinks(rng, t):
  """Blink curve 0..1: intervals 1.2 s + Exp(2.8 s), 150-250 ms, 40% closing."""
  out = np.zeros_like(t)
  tb = rng.uniform(0.2, 3.0)
  while tb < t[-1] + 1:
    dur = rng.uniform(0.15, 0.25)
    x = (t - tb) / dur
    close = np.sin(0.5 * np.pi * np.clip(x / 0.4, 0, 1))
    opening = np.cos(0.5 * np.pi * np.clip((x - 0.4) / 0.6, 0, 1))
    out = np.maximum(out, np.where((x >= 0) & (x < 1), np.where(x < 0.4, close, opening), 0.0))
    tb += dur + 1.2 + rng.exponential(2.8)
  return out


def _saccades(rng, t, sd):
  """Piecewise-constant gaze offsets that jump every 0.5-2.5 s."""
  out = np.zeros_like(t)
  tj, val = 0.0, 0.0
  while tj < t[-1] + 1:
    out[t >= tj] = val
    val = rng.normal(0, sd)
    tj += rng.uniform(0.5, 2.5)
  return out


def make_motion(seed: int, num_frames: int, *, gaze=(0.0, 0.0), distance: float = 1.0,
                emotion=0, speech_track: dict, fps: int = FPS) -> dict:
  """Per-frame labels {name: float32 [T]} driven by a speech track (see module docstring)."""
  emotion = EMOTIONS[emotion] if isinstance(emotion, (int, np.integer)) else emotion
  if emotion not in _EMOTION_BASE:
    raise UserError(f"emotion {emotion!r} is unknown; accepted: {', '.join(EMOTIONS)}")
  rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x40710]))
  t = (np.arange(num_frames) + 0.5) / fps
  tr = {k: np.asarray(v, np.float64)[:num_frames] for k, v in speech_track.items()}
  smile0, brow0, open0, width0 = _EMOTION_BASE[emotion]
  accent, boundary = tr["accent"], tr["boundary"]

  # A new head orientation after each phrase boundary (peaks of the pulse).
  b = boundary
  peaks = np.nonzero((b > 0.5) & (b >= np.roll(b, 1)) & (b >= np.roll(b, -1)))[0]
  seg = np.searchsorted(peaks, np.arange(num_frames), side="right")
  yaw_off = rng.normal(0, 0.1, len(peaks) + 1)[seg]
  pitch_off = rng.normal(0, 0.035, len(peaks) + 1)[seg]
  yaw_drift = _drift(rng, t, 0.14)
  lab = {
      "yaw": _smooth(yaw_off, 6) + yaw_drift,
      "pitch": _smooth(pitch_off, 6) + _drift(rng, t, 0.05) - 0.10 * accent - 0.04 * boundary,
      "roll": _drift(rng, t, 0.045),
      "tx": _drift(rng, t, 0.03),
      "ty": _drift(rng, t, 0.02) - 0.015 * accent,
      "distance": distance + _drift(rng, t, 0.015, 0.02, 0.15),
      "mouth_open": tr["open"] + open0,
      "mouth_width": tr["width"] + width0,
      "mouth_round": tr["round"],
      "blink": _blinks(rng, t),
      "gaze_theta": gaze[0] + _smooth(_saccades(rng, t, 0.07), 0.5) - 0.5 * yaw_drift,
      "gaze_phi": gaze[1] + _smooth(_saccades(rng, t, 0.045), 0.5),
      "brow": brow0 + 0.5 * accent + _drift(rng, t, 0.06),
      "smile": smile0 + _drift(rng, t, 0.08, 0.02, 0.1),
  }
  lo_hi = {"yaw": (-0.8, 0.8), "pitch": (-0.45, 0.45), "roll": (-0.35, 0.35), "mouth_open": (0, 1),
           "mouth_width": (0, 1), "mouth_round": (0, 1), "blink": (0, 1), "brow": (-1, 1),
           "smile": (-1, 1), "gaze_theta": (-0.6, 0.6), "gaze_phi": (-0.45, 0.45)}
  for k, (lo, hi) in lo_hi.items():
    lab[k] = np.clip(lab[k], lo, hi)
  return {k: np.asarray(lab[k], np.float32) for k in LABEL_NAMES}


def motion_from_audio(audio_16k, fps: int = FPS, seed: int = 0, *, gaze=(0.0, 0.0),
                      distance: float = 1.0, emotion=0) -> dict:
  """Labels that make a synthetic head speak any 16 kHz speech waveform."""
  audio = np.asarray(audio_16k, np.float32).reshape(-1)
  if audio.size < SAMPLE_RATE // fps:
    raise UserError(f"audio has {audio.size} samples; need at least one frame ({SAMPLE_RATE // fps})")
  if not np.all(np.isfinite(audio)):
    raise UserError("audio contains NaN or infinite samples")
  track = speech.motion_track_from_audio(audio, fps)
  return make_motion(seed, len(track["open"]), gaze=gaze, distance=distance, emotion=emotion,
                     speech_track=track, fps=fps)


def clip_attrs(identity_id: int, audio_seed: int):
  """Clip-level controls (main gaze, distance, emotion) drawn from the clip's seeds."""
  rng = np.random.default_rng(np.random.SeedSequence([int(identity_id), int(audio_seed), 0xC11B]))
  gaze = np.array([rng.uniform(*GAZE_THETA_RANGE), rng.uniform(*GAZE_PHI_RANGE)], np.float32)
  dist = np.float32(rng.uniform(*DISTANCE_RANGE))
  emotion = int(rng.choice(len(EMOTIONS), p=[0.4, 0.2, 0.13, 0.13, 0.14]))
  motion_seed = int(rng.integers(1 << 31))
  return gaze, dist, emotion, motion_seed


def _check(num_frames, resolution):
  if not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
    raise UserError(f"number of frames must be a positive integer, got {num_frames!r}")
  if not isinstance(resolution, (int, np.integer)) or not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
    raise UserError(f"resolution {resolution!r} is out of range; accepted: {MIN_RESOLUTION}..{MAX_RESOLUTION}")


def clip_id_for(identity_id: int, audio_seed: int) -> str:
  return f"syn-id{identity_id:05d}-a{audio_seed:06d}"


def make_clip(identity_id: int, audio_seed: int, num_frames: int, resolution: int,
              split: str = "train", *, render: bool = True) -> dict:
  """One clip dict (the records schema); render=False leaves frames out (motion only)."""
  _check(num_frames, resolution)
  audio, track = synth_speech(audio_seed, num_frames, FPS)
  gaze, dist, emotion, motion_seed = clip_attrs(identity_id, audio_seed)
  labels = make_motion(motion_seed, num_frames, gaze=gaze, distance=float(dist), emotion=emotion,
                       speech_track=track)
  clip = {
      "clip_id": clip_id_for(identity_id, audio_seed),
      "identity": int(identity_id),
      "source": "synthetic",
      "fps": FPS, "sample_rate": SAMPLE_RATE,
      "frames": render_frames(identity_params(identity_id), labels, resolution) if render else None,
      "audio": audio,
      "labels": labels,
      "attrs": {"gaze": gaze, "distance": np.asarray(dist, np.float32), "emotion": emotion,
                "audio_seed": int(audio_seed), "split": split},
  }
  return clip


def make_cross_clip(identity_id: int, motion_clip: dict, resolution: int | None = None,
                    split: str | None = None) -> dict:
  """Identity `identity_id` performing exactly the motion (and audio) of `motion_clip`."""
  if resolution is None:
    if motion_clip.get("frames") is None:
      raise UserError("make_cross_clip needs a resolution when the motion clip has no frames")
    resolution = int(np.shape(motion_clip["frames"])[1])
  labels = {k: np.asarray(v, np.float32).copy() for k, v in motion_clip["labels"].items()}
  _check(len(labels["yaw"]), resolution)
  attrs = dict(motion_clip["attrs"])
  attrs["motion_source"] = motion_clip["clip_id"]
  if split is not None:
    attrs["split"] = split
  return {
      "clip_id": f"syn-id{identity_id:05d}-x-{motion_clip['clip_id']}",
      "identity": int(identity_id),
      "source": "synthetic",
      "fps": motion_clip["fps"], "sample_rate": motion_clip["sample_rate"],
      "frames": render_frames(identity_params(identity_id), labels, resolution),
      "audio": np.asarray(motion_clip["audio"], np.float32).copy(),
      "labels": labels,
      "attrs": attrs,
  }


# --------------------------------------------------------------------------------------
# Corpus


def benchmark_identities(num_identities: int, first_identity: int = 0) -> range:
  """Held-out identity ids: the last ~10% (none when there is a single identity)."""
  n = 0 if num_identities < 2 else max(1, int(round(0.1 * num_identities)))
  end = first_identity + num_identities
  return range(end - n, end)


def corpus_jobs(num_identities: int, clips_per_identity: int, seed: int, first_identity: int = 0) -> list:
  """Every clip of a corpus as (split, identity, audio_seed, motion identity or None).

  Identities are `first_identity .. first_identity + num_identities - 1`: a corpus
  that starts past every id a checkpoint was trained on is a benchmark of new faces.
  """
  bench = benchmark_identities(num_identities, first_identity)
  jobs = []
  for ident in range(first_identity, first_identity + num_identities):
    split = "benchmark" if ident in bench else "train"
    base = BENCHMARK_AUDIO_BASE if split == "benchmark" else 0
    for j in range(clips_per_identity):
      a = int(np.random.SeedSequence([int(seed), ident, j, 0xA0D10]).generate_state(1)[0]) % BENCHMARK_AUDIO_BASE
      jobs.append((split, ident, base + a, None))
  if len(bench) >= 2:
    ids = list(bench)
    for split, ident, a, _ in [j for j in jobs if j[0] == "benchmark"]:
      other = ids[(ids.index(ident) + 1) % len(ids)]
      jobs.append(("benchmark_cross", other, a, ident))
  return jobs


def _run_job(job_and_cfg):
  (split, ident, audio_seed, motion_ident), num_frames, resolution = job_and_cfg
  if motion_ident is None:
    return split, make_clip(ident, audio_seed, num_frames, resolution, split)
  src = make_clip(motion_ident, audio_seed, num_frames, resolution, "benchmark", render=False)
  return split, make_cross_clip(ident, src, resolution, split)


def write_corpus(out_dir, num_identities, clips_per_identity, num_frames, resolution, seed,
                 workers=None, clips_per_shard=64, progress=True, overwrite=False, first_identity=0):
  """Renders clips in worker processes; the main process writes them in a fixed order."""
  _check(num_frames, resolution)
  jobs = corpus_jobs(num_identities, clips_per_identity, seed, first_identity)
  work = [(j, num_frames, resolution) for j in jobs]
  workers = workers or os.cpu_count() or 1
  with records.CorpusWriter(out_dir, resolution=resolution, fps=FPS, sample_rate=SAMPLE_RATE,
                            clips_per_shard=clips_per_shard, overwrite=overwrite) as w:
    bar = tqdm(total=len(work), unit="clip", disable=not progress, desc="synthetic corpus")
    if workers == 1:
      results = map(_run_job, work)
      pool = None
    else:
      pool = multiprocessing.get_context("spawn").Pool(workers)
      results = pool.imap(_run_job, work, chunksize=1)
    try:
      for split, clip in results:
        w.add(split, clip)
        bar.update(1)
    finally:
      bar.close()
      if pool is not None:
        pool.terminate()
  return len(jobs)


_FEATURES = (("mouth", "mouth_open"), ("eyes", "blink"))


def feature_extremes(identity_id: int, labels: dict, resolution: int):
  """Per feature: the clip's frames drawn with only that feature at 0 and at 1, float [T, H, W, 3]."""
  ident = identity_params(identity_id)
  out = {}
  for name, key in _FEATURES:
    lo, hi = (dict(labels, **{key: np.full_like(np.asarray(labels[key], np.float32), v)}) for v in (0.0, 1.0))
    out[name] = (render_frames(ident, lo, resolution).astype(np.float32) / 255.0,
                 render_frames(ident, hi, resolution).astype(np.float32) / 255.0)
  return out


def _grow(mask, steps: int):
  for _ in range(steps):
    mask = mask | np.roll(mask, 1, 1) | np.roll(mask, -1, 1) | np.roll(mask, 1, 2) | np.roll(mask, -1, 2)
  return mask


def region_masks(identity_id: int, labels: dict, resolution: int, *, grow: int = 1, extremes=None) -> dict:
  """Boolean [T, H, W] masks of the mouth and the eyes in each frame of a clip.

  The renderer draws the same frame twice with only the feature changed (mouth
  shut / wide open, eyes open / closed): the pixels that differ are the region
  the feature can occupy in that pose, grown by `grow` pixels. `extremes`: those
  renders, when the caller has them already (`feature_extremes`).
  """
  extremes = extremes or feature_extremes(identity_id, labels, resolution)
  return {name: _grow(np.abs(hi - lo).max(-1) > 8 / 255, grow) for name, (lo, hi) in extremes.items()}


def pixel_features(identity_id: int, labels: dict, frames_TxHxWx3: np.ndarray, *, extremes=None) -> dict:
  """Mouth opening and blink read from a clip's pixels: {"mouth_open", "blink"} float [T].

  Every frame is compared with the corpus' own renders of that frame with the
  feature at 0 and at 1 (same identity, pose and other labels): the reading is
  where the frame lies between the two, `<x - lo, hi - lo> / |hi - lo|^2` over the
  pixels where they differ. Ground-truth frames read their labels back (a
  monotone, near-linear map); a model's output is read with the same ruler, so
  what it draws, not what its latents say, is measured. `labels` are the frame's
  intended labels (for a reconstruction: the driver's).
  """
  x = np.asarray(frames_TxHxWx3)
  x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
  extremes = extremes or feature_extremes(identity_id, labels, x.shape[1])
  out = {}
  for name, key in _FEATURES:
    lo, hi = extremes[name]
    d = hi - lo
    mask = (np.abs(d).max(-1, keepdims=True) > 8 / 255).astype(np.float32)
    num = ((x - lo) * d * mask).sum((1, 2, 3))
    den = (d * d * mask).sum((1, 2, 3))
    out[key] = np.where(den > 0, num / np.maximum(den, 1e-12), 0.0).astype(np.float32)
  return out


# What `read_controls` searches for each clip-level control, in label units: the values tried.
_CONTROL_GRIDS = {"gaze_theta": np.linspace(-0.6, 0.6, 25), "gaze_phi": np.linspace(-0.45, 0.45, 19),
                  "distance": np.linspace(0.7, 1.35, 27), "smile": np.linspace(-1.0, 1.0, 21),
                  "brow": np.linspace(-1.0, 1.0, 21)}


# Controls read as a shape wherever it lies within `read_controls`' `align` pixels: a smile (the curve of the
# mouth) is the same smile drawn a pixel higher; a brow's height above the eyes is itself the label, so
# brows are read only after the whole frame is aligned.
_SHAPE_CONTROLS = ("smile",)


def _shifted(x_xHxWxC: np.ndarray, dy: int, dx: int) -> np.ndarray:
  """Images [..., H, W, C] moved by (dy, dx) pixels (down, right), their edges repeated into the gap."""
  h, w = x_xHxWxC.shape[-3:-1]
  lead = ((0, 0),) * (x_xHxWxC.ndim - 3)
  pad = np.pad(x_xHxWxC, (*lead, (abs(dy), abs(dy)), (abs(dx), abs(dx)), (0, 0)), mode="edge")
  return pad[..., abs(dy) - dy:abs(dy) - dy + h, abs(dx) - dx:abs(dx) - dx + w, :]


def read_controls(identity_id: int, labels: dict, frames_TxHxWx3: np.ndarray, *, stride: int = 4,
                  keys: Sequence[str] | None = None, align: int = 2) -> dict:
  """Gaze, distance, smile and brow read from a clip's pixels: {name: float [ceil(T / stride)]}.

  For every `stride`-th frame and each of those labels, the corpus renders the frame
  (same identity, and every other label as `labels` gives it) at each value of a grid
  (`_CONTROL_GRIDS`) and keeps the value whose render is nearest the frame in squared
  error, refined between grid points by a parabola through the three nearest. So the
  reading is what the pixels show: an iris drawn off-centre reads as that gaze, a head
  drawn smaller as a larger distance, whatever the latents said. Ground-truth frames
  read their own labels back (tests check it); on a model's output, `labels` are what
  it was asked to draw (stage 2's label-space motion), which fixes everything but the
  label being read. `keys`: read only these (default: all of `_CONTROL_GRIDS`).

  `align` (pixels): a model draws a face a pixel or two off where the renderer would, and a
  squared error reads that as a label: a true frame moved down by one pixel reads a smile of
  0.6 as 0.0 and a brow of 0.1 as -0.25. So each frame is first moved by the whole-pixel shift
  within `align` that best matches the render of its labels as given, and the shape controls
  (`_SHAPE_CONTROLS`: the smile) are read where the control changes the render (the mouth),
  at their own best shift within `align`. True frames still read exactly (their best shift is
  0); `align=0` is the plain reading.
  """
  grids = _CONTROL_GRIDS if keys is None else {k: _CONTROL_GRIDS[k] for k in keys}
  x = np.asarray(frames_TxHxWx3)[::stride]
  x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
  sub = {k: np.asarray(v, np.float32)[::stride] for k, v in labels.items()}
  ident = identity_params(identity_id)
  draw = lambda lab: render_frames(ident, lab, x.shape[1]).astype(np.float32) / 255.0  # noqa: E731
  shifts = [(dy, dx) for dy in range(-align, align + 1) for dx in range(-align, align + 1)]
  if align:
    asked = draw(sub)
    best = [min(shifts, key=lambda s: float(((_shifted(f, *s) - a) ** 2).sum())) for f, a in zip(x, asked)]
    x = np.stack([_shifted(f, *s) for f, s in zip(x, best)])
  out = {}
  for key, grid in grids.items():
    at = lambda v, key=key: draw(dict(sub, **{key: np.full_like(sub[key], v)}))  # noqa: E731
    if align and key in _SHAPE_CONTROLS:
      where = _grow(np.abs(at(grid[-1]) - at(grid[0])).max(-1) > 4 / 255, align + 1)[..., None]  # [T, H, W, 1]
      err_of = lambda r, where=where: np.min([(((r - _shifted(x, *s)) ** 2) * where).sum((1, 2, 3))  # noqa: E731
                                              for s in shifts], 0)
    else:
      err_of = lambda r: ((r - x) ** 2).sum((1, 2, 3))  # noqa: E731
    err = np.stack([err_of(at(v)) for v in grid], -1)  # [T, G]: one render of the grid in memory at a time
    i = np.clip(err.argmin(-1), 1, len(grid) - 2)
    t = np.arange(len(x))
    lo, mid, hi = err[t, i - 1], err[t, i], err[t, i + 1]
    curv = lo - 2 * mid + hi
    shift = np.where(curv > 0, 0.5 * (lo - hi) / np.maximum(curv, 1e-12), 0.0)
    out[key] = (grid[i] + np.clip(shift, -1.0, 1.0) * (grid[1] - grid[0])).astype(np.float32)
  return out


def contact_sheet(first_identity: int = 0, resolution: int = 128, n: int = 16) -> np.ndarray:
  """uint8 grid of n identities, each in a slightly different pose and expression."""
  _check(1, resolution)
  rng = np.random.default_rng(first_identity)
  tiles = []
  for i in range(n):
    m = {k: 0.0 for k in LABEL_NAMES}
    m.update(distance=1.0, yaw=rng.uniform(-0.5, 0.5), pitch=rng.uniform(-0.15, 0.15),
             mouth_open=rng.uniform(0, 0.6), smile=rng.uniform(-0.3, 0.8), gaze_theta=rng.uniform(-0.2, 0.2))
    tiles.append(render_frame(identity_params(first_identity + i), m, resolution))
  cols = int(np.ceil(np.sqrt(n)))
  tiles += [np.zeros_like(tiles[0])] * (cols * cols - n)
  return np.concatenate([np.concatenate(tiles[r * cols:(r + 1) * cols], 1) for r in range(cols)], 0)


def strip(identity_id: int, audio_seed: int, num_frames: int, resolution: int, count: int = 10) -> np.ndarray:
  """uint8 row of `count` evenly spaced frames of one clip."""
  clip = make_clip(identity_id, audio_seed, num_frames, resolution, render=False)
  idx = np.linspace(0, num_frames - 1, count).round().astype(int)
  sub = {k: v[idx] for k, v in clip["labels"].items()}
  return np.concatenate(list(render_frames(identity_params(identity_id), sub, resolution)), 1)


def _parser():
  p = cli.make_parser("python -m vasa_jax.data.synthetic",
                      "Write a synthetic talking-head corpus (train / benchmark / benchmark_cross splits) "
                      "or preview PNGs of it.")
  p.add_argument("--out", help="corpus folder to write (must not already hold a corpus)")
  p.add_argument("--identities", type=int, default=100, help="number of identities (ids F..F+N-1)")
  p.add_argument("--first-identity", type=int, default=0, metavar="F",
                 help="first identity id (a corpus of ids past a model's training set has only new faces)")
  p.add_argument("--clips-per-identity", type=int, default=4, help="clips per identity")
  p.add_argument("--frames", type=int, default=100, help="frames per clip (25 fps)")
  p.add_argument("--resolution", type=int, default=128, help=f"square frame size, {MIN_RESOLUTION}..{MAX_RESOLUTION}")
  p.add_argument("--seed", type=int, default=0, help="corpus seed (audio and clip-level controls)")
  p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="render processes")
  p.add_argument("--clips-per-shard", type=int, default=64, help="clips per ArrayRecord shard")
  p.add_argument("--overwrite", action="store_true", help="replace a corpus already in --out, and "
                 "--contact-sheet, --strip and --video files that exist")
  p.add_argument("--contact-sheet", metavar="PATH", help="write a PNG of 16 identities (a corpus too only if --out is given)")
  p.add_argument("--strip", metavar="PATH", help="write a PNG strip of 10 frames of one clip (identity --identity, audio seed --seed)")
  p.add_argument("--identity", type=int, default=0,
                 help="first identity for --contact-sheet, identity for --strip and --speak")
  p.add_argument("--speak", nargs="?", const=EXAMPLE_SPEECH, metavar="AUDIO",
                 help="render identity --identity speaking AUDIO (default: the bundled example speech) "
                 "into --video, with motion derived from the audio by the corpus' own mapping")
  p.add_argument("--video", default="synthetic_speaker.mp4", help="mp4 written by --speak")
  return p


RENDERER_ID = "synthetic-renderer"  # Stands in for a checkpoint hash in the watermark and metadata.
EXAMPLE_SPEECH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "speech.wav")


def speak(audio_path: str, video_path: str, identity_id: int, resolution: int, seed: int) -> str:
  """Writes an mp4 of a synthetic head speaking `audio_path`; returns its path."""
  media.require_output_path(video_path, (".mp4",))
  audio = media.load_audio(audio_path)
  labels = motion_from_audio(audio, FPS, seed)
  identity = identity_params(identity_id)
  num_frames = len(labels["mouth_open"])
  # Every video this project writes is marked as generated, this one too. Imported here: jax is
  # heavy and only --speak needs it; the corpus' render workers import this module without it.
  import jax
  from vasa_jax import provenance, watermark
  payload = watermark.make_payload(RENDERER_ID)
  marker = watermark.Watermarker(payload)
  embed = jax.jit(marker.embed, static_argnums=2)
  metadata = provenance.provenance_metadata(RENDERER_ID, payload, watermark=True)
  with media.VideoWriter(video_path, FPS, metadata=metadata) as writer:
    chunk = 25  # Render a second at a time: memory stays flat for long audio.
    for start in tqdm(range(0, num_frames, chunk), desc="render", unit="s", leave=False):
      sub = {k: v[start:start + chunk] for k, v in labels.items()}
      frames = render_frames(identity, sub, resolution)
      pad = chunk - len(frames)  # One compiled shape for the watermark.
      batch = np.concatenate([frames, np.repeat(frames[-1:], pad, 0)]) if pad else frames
      marked = np.asarray(embed(batch.astype(np.float32) / 255.0, start, FPS))[:len(frames)]
      for frame in np.clip(np.round(marked * 255.0), 0, 255).astype(np.uint8):
        writer.write(frame)
    writer.close(audio)
  return video_path


def main(args) -> int:
  for name in ("identities", "clips_per_identity", "frames", "workers", "clips_per_shard"):
    if getattr(args, name) < 1:
      raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
  for name in ("identity", "first_identity"):
    if getattr(args, name) < 0:
      raise UserError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
  _check(args.frames, args.resolution)
  if not (args.contact_sheet or args.strip or args.out or args.speak):
    raise UserError("nothing to do: give --out DIR, --contact-sheet PATH, --strip PATH or --speak [AUDIO]")
  # Every output is checked before any work: an existing file is only replaced with --overwrite.
  for path, suffix in ((args.contact_sheet, ".png"), (args.strip, ".png"), (args.speak and args.video, ".mp4")):
    if path:
      media.require_output_path(path, (suffix,), overwrite=args.overwrite)
  for path, make in ((args.contact_sheet, lambda: contact_sheet(args.identity, args.resolution)),
                     (args.strip, lambda: strip(args.identity, args.seed, args.frames, args.resolution))):
    if path:
      media.save_image(path, make())
      print(f"wrote {path}")
  if args.speak:
    print(f"wrote {os.path.abspath(speak(args.speak, args.video, args.identity, args.resolution, args.seed))}")
  if args.out:
    n = write_corpus(args.out, args.identities, args.clips_per_identity, args.frames, args.resolution,
                     args.seed, args.workers, args.clips_per_shard, overwrite=args.overwrite,
                     first_identity=args.first_identity)
    print(f"wrote {n} clips to {args.out}")
  return 0


if __name__ == "__main__":
  cli.main_entry(main, _parser())
