"""The streaming sampler: audio chunks in, video frames out, bounded latency and memory.

    portrait -> encode once (V_app, z_id, starting pose/dynamics)
    audio chunks -> window of W frames ready? -> motion diffusion (K frames of context)
                 -> decode the window's frames in small batches -> watermark -> yield

The windows come from `motion.WindowLoop`, the loop that offline sampling,
evaluation and the benchmark run too. One jitted window step serves every window,
and one jitted decode step every frame batch: shapes never change, so nothing
recompiles after the first window (`compiled_steps()` says so). Memory is
constant in the audio length: only the last K motion frames and the unconsumed
audio are kept. Offline use (the whole clip pushed at once) runs the same steps,
so both give identical frames for the same seed.
"""

import functools
import json
import time
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vasa_jax import bundle as bundle_lib
from vasa_jax import label_motion, provenance
from vasa_jax import watermark as watermark_lib
from vasa_jax.data.synthetic import LABEL_NAMES
from vasa_jax.face_model import POSE_DIM, FaceModel, pad_batch
from vasa_jax.motion import Controls, MotionModel, WindowLoop


# Frames per live-mode window. A live window keeps only its first few frames (those heard so far);
# the rest are denoised from null audio and thrown away. A short window spends less of each
# step on them; it reads the first positions of the training window (`MotionDiT.max_window`).
# 24, not less: the pose smoothing (`diffusion.pose_smooth`, a Gaussian reaching 15 frames ahead)
# needs the frames after the heard ones; at 12 the head jittered (dP ratio 1.34 against 1.18).
LIVE_WINDOW = 24
# DDIM steps per live window when none are asked for (other modes: the config's `sample_steps`). A
# live step runs every hop (80 ms) and its diffusion time adds to every frame's latency; lip sync
# read from the pixels was not lower at 5 steps than at 10 (README, "App and API").
LIVE_STEPS = 5


def live_window_for(motion_cfg, hop: int) -> int:
  """The live window for a hop: `LIVE_WINDOW`, or longer when the hop and the audio lookahead
  need it, at most the training window W."""
  need = hop + int(motion_cfg.audio.lookahead) + 2
  return min(int(motion_cfg.data.window), max(LIVE_WINDOW, need))


class StreamingSampler:
  """Generate frames for one portrait from audio that arrives in pieces.

  Public steps, for callers that time or inspect them (bench, tests, `compile` ahead of time):
    add_audio(chunk) + motion_windows(final) -> denormalised motion per window
    render(motion_NxM)                       -> uint8 frames, watermarked
    window_step, decode_step, encode_step    -> the jitted functions behind them
  """

  def __init__(self, bundle: bundle_lib.Bundle, portrait_HxWx3: np.ndarray, *,
               watermark: watermark_lib.Watermarker | None, controls: Controls = Controls(),
               steps: int | None = None, guidance: Sequence[float] | None = None, seed: int = 0,
               still: bool = False, decode_batch: int = 10, label: bool = False, live_hop: int | None = None,
               live_window: int | None = None):
    """`watermark`: the `Watermarker` of this video's payload, or None to turn the invisible
    watermark off (callers must then say so in their output). It has no default, so that
    turning it off is always written down. `live_hop`: live mode (`WindowLoop.live_windows`):
    frames come out as soon as their audio is heard, at least this many at a time, instead of
    a whole window of W frames at a time. `live_window`: frames per live window (default
    `live_window_for(hop)`)."""
    self.bundle = bundle
    fcfg, mcfg = bundle.face_cfg, bundle.motion_cfg
    self.window, self.context = mcfg.data.window, mcfg.data.context
    self.fps = mcfg.data.fps
    self.steps = steps or (LIVE_STEPS if live_hop else mcfg.diffusion.sample_steps)
    d = mcfg.diffusion
    guidance = tuple(float(g) for g in (guidance if guidance is not None else (d.cfg_audio, d.cfg_gaze, 0, 0, 0)))
    if live_hop:
      # A control that is not given is dropped from every guidance variant (the window step's base
      # mask), so its guided pass repeats the unguided one: live mode skips it (the same motion, a
      # third less diffusion time per step when no gaze is asked for). Other modes keep the pass, so
      # that jobs with and without a gaze share one compiled window step (`sample --batch`, the app).
      given = (True, controls.gaze is not None, controls.distance is not None, controls.emotion is not None, True)
      guidance = tuple(g if on else 0.0 for g, on in zip(guidance, given))
    self.guidance = guidance
    self.still = still
    self.live_hop = live_hop
    self.decode_batch = decode_batch
    self.mean, self.std = np.asarray(bundle.mean), np.asarray(bundle.std)
    wm_cfg = None if watermark is None else (watermark.strength,)
    self.face, self.motion_model, self.decode_step = _compiled(
        fcfg.to_json(), mcfg.to_json(), int(bundle.mean.size), wm_cfg, label)
    self.encode_step = self.face.encode_jit
    self.signs = jnp.zeros((0,)) if watermark is None else watermark.signs_K
    self.spf = self.motion_model.samples_per_frame
    img = center_square(np.asarray(portrait_HxWx3, np.float32))[None]
    self.portrait = self.encode_step(bundle.face_params, self.face.to_input(img))
    # The portrait's own motion (denormalised [M]): the video starts from it, `still` keeps its pose.
    self.portrait_motion = np.asarray(
        jnp.concatenate([self.portrait["z_pose"], self.portrait["z_dyn"]], -1)[0])
    # Stage 2 generates these latents, or (motion_source "labels") motion in label space, which
    # `label_motion` writes into the portrait's own latents: `stage2_motion` is the portrait's
    # motion in stage 2's space, `pose_cols` where its pose lies.
    self.label_space = mcfg.motion_train.motion_source == "labels"
    if self.label_space:
      self.stage2_motion = label_motion.from_latents(self.portrait_motion[:POSE_DIM],
                                                     self.portrait_motion[POSE_DIM:], LABEL_NAMES)
      self.pose_cols = [LABEL_NAMES.index(n) for n in label_motion.POSE_LABELS]
    else:
      self.stage2_motion, self.pose_cols = self.portrait_motion, list(range(POSE_DIM))
    # Normalised, as the motion model sees it: the first window's context.
    self.first_motion = np.asarray((jnp.asarray(self.stage2_motion) - self.mean) / self.std)
    self.loop = WindowLoop(self.motion_model, bundle.motion_params, self.first_motion, controls,
                           jax.random.key(seed), steps=self.steps, guidance=self.guidance, live=bool(live_hop),
                           live_window=(live_window or live_window_for(mcfg, live_hop)) if live_hop else None)
    self.window_step = self.loop.step_fn
    self.frames_out = 0
    self.timings: dict[str, list[float]] = {"diffusion": [], "decode": []}
    # Seconds from the first window's audio being complete to the first frame out (compute only:
    # add W / fps of audio buffering for a live microphone).
    self.first_frame_latency: float | None = None
    self._window_started = 0.0

  # ------------------------------------------------------------------ streaming API

  def push(self, chunk: np.ndarray) -> Iterator[np.ndarray]:
    """Adds audio samples (16 kHz mono float32); yields every frame that is now ready."""
    self.add_audio(chunk)
    for motion in self.motion_windows(final=False):
      yield from self.render(motion)

  def flush(self) -> Iterator[np.ndarray]:
    """Generates the frames of the audio still buffered (the clip's last, partial window)."""
    for motion in self.motion_windows(final=True):
      yield from self.render(motion)

  def compile(self) -> None:
    """Compiles the decode step now for both batch sizes `render` uses (ahead of time: the calls
    reuse it), so that once the first frame is out the rest come at full speed; the window step
    compiles on the first window. Optional: without it, each compiles on its first call."""
    motion_dim = self.portrait_motion.size
    for size in sorted({1, self.decode_batch}):
      motion = jax.ShapeDtypeStruct((size, motion_dim), jnp.float32)
      times = jax.ShapeDtypeStruct((size,), jnp.float32)  # each frame's time (the watermark's wave)
      self.decode_step.lower(self.bundle.face_params, self.portrait, motion, self.signs, times).compile()

  def compiled_steps(self) -> dict[str, int]:
    """How many times each jitted step has been compiled: 1 window step; 2 decodes (the first
    frame alone, then full batches) once running, for any length of audio."""
    return {"window": self.window_step._cache_size(), "decode": self.decode_step._cache_size()}

  def skip(self, n: int) -> None:
    """Passes over `n` frames without drawing them (live mode drops late frames); later frames
    keep their own times, so the watermark's wave stays on the video's clock."""
    self.frames_out += n

  # ------------------------------------------------------------------ the two stages

  def add_audio(self, chunk: np.ndarray) -> None:
    self.loop.add_audio(chunk)

  def motion_windows(self, *, final: bool) -> Iterator[np.ndarray]:
    """Motion [n, M] (denormalised, ready to render) of each window the audio so far allows;
    `final`: also the clip's last, partial window."""
    if self.live_hop:
      windows = self.loop.live_windows(hop=self.live_hop, final=final)
    else:
      windows = self.loop.windows(final=final)
    while True:
      self._window_started = t0 = time.perf_counter()
      window = next(windows, None)
      if window is None:
        return
      self.timings["diffusion"].append(time.perf_counter() - t0)
      motion = window * self.std + self.mean
      if self.still:  # Keep the portrait's head pose; lips, eyes and expression still move.
        motion[:, self.pose_cols] = self.stage2_motion[self.pose_cols]
      if self.label_space:
        motion = label_motion.to_latents(motion, LABEL_NAMES, self.portrait_motion[POSE_DIM:])
      yield motion

  def render(self, motion_NxM: np.ndarray) -> Iterator[np.ndarray]:
    """Motion vectors -> uint8 frames, decoded in fixed batches (one compiled decode each):
    the stream's very first frame alone, so that it comes out as early as possible, then
    `decode_batch` frames per call."""
    n = len(motion_NxM)
    alone = int(self.frames_out == 0 and self.decode_batch > 1)
    bounds = sorted({0, alone, *range(alone + self.decode_batch, n, self.decode_batch), n})
    for start, end in zip(bounds[:-1], bounds[1:]):
      t0 = time.perf_counter()
      size = 1 if alone and start == 0 else self.decode_batch
      chunk, pad = pad_batch(np.asarray(motion_NxM[start:end]), size)
      # Each frame's time from the video's start: the watermark's sign wave depends on it, so
      # streaming and offline runs (and any batching) mark the same frame the same way.
      times = (self.frames_out + np.arange(size, dtype=np.float32)) / np.float32(self.fps)
      frames = np.asarray(self.decode_step(self.bundle.face_params, self.portrait, jnp.asarray(chunk), self.signs,
                                           jnp.asarray(times)))
      frames = frames[:size - pad]
      self.timings["decode"].append(time.perf_counter() - t0)
      if self.first_frame_latency is None:
        self.first_frame_latency = time.perf_counter() - self._window_started
      for frame in frames:
        self.frames_out += 1
        yield frame


@functools.lru_cache(maxsize=8)
def _compiled(face_json: str, motion_json: str, motion_dim: int, wm_cfg, label: bool):
  """Models and the jitted decode per (configs, watermark settings): later samplers reuse the
  compiled code (the window step is cached on the `MotionModel`)."""
  face = FaceModel(ml_collections.ConfigDict(json.loads(face_json)).face)
  motion = MotionModel(ml_collections.ConfigDict(json.loads(motion_json)), motion_dim=motion_dim)

  @jax.jit
  def decode(params, app, motion_BxM, signs_K, times_B):
    """Motion -> uint8 frames. The watermark (payload bits `signs_K`, frame times `times_B` in
    seconds) and the optional visible label are applied in the same compiled step, on the same
    device, before quantisation."""
    img = face.decode_motion(params, app, motion_BxM)
    if label:
      img = provenance.add_label(img)
    if wm_cfg is not None:
      img = watermark_lib.embed(img, signs_K, times_B, *wm_cfg)
    return jnp.clip(jnp.round(img * 255.0), 0, 255).astype(jnp.uint8)

  return face, motion, decode


def drive_from_video(sampler: StreamingSampler, frames_TxHxWx3: np.ndarray) -> Iterator[np.ndarray]:
  """Video-driven reenactment: pose and dynamics read from each driving frame."""
  b = sampler.decode_batch
  frames_TxHxWx3 = center_square(frames_TxHxWx3)
  for start in range(0, len(frames_TxHxWx3), b):
    chunk = frames_TxHxWx3[start:start + b].astype(np.float32) / 255.0
    motion = sampler.face.motion_of_frames(sampler.bundle.face_params, chunk, b)
    if sampler.still:
      motion[:, :POSE_DIM] = sampler.portrait_motion[:POSE_DIM]
    yield from sampler.render(motion)


def center_square(img_xHxWx3: np.ndarray) -> np.ndarray:
  """The central square of a portrait (or of every frame of `[T, H, W, 3]`): the model works
  on square, face-centred frames."""
  h, w = img_xHxWx3.shape[-3:-1]
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  return img_xHxWx3[..., top:top + side, left:left + side, :]


def generate(sampler: StreamingSampler, audio: np.ndarray, *, chunk_samples: int | None = None
             ) -> Iterator[np.ndarray]:
  """Offline (`chunk_samples=None`: the whole clip at once) or simulated streaming."""
  if chunk_samples is None:
    yield from sampler.push(audio)
  else:
    for start in range(0, audio.size, chunk_samples):
      yield from sampler.push(audio[start:start + chunk_samples])
  yield from sampler.flush()
