"""The streaming sampler: audio chunks in, video frames out, bounded latency and memory.

    portrait -> encode once (V_app, z_id, starting pose/dynamics)
    audio chunks -> window of W frames ready? -> motion diffusion (K frames of context)
                 -> decode the window's frames in small batches -> watermark -> yield

One jitted window step (audio features + DDIM with guidance) serves every window,
and one jitted decode step every frame batch: shapes never change, so nothing
recompiles after the first window (`compiled_steps()` says so). Memory is
constant in the audio length: only the last K motion frames and the unconsumed
audio are kept. The offline mode runs the same steps over a whole clip, so both
modes give identical frames for the same seed.
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
from vasa_jax import label_motion
from vasa_jax.data.synthetic import LABEL_NAMES
from vasa_jax.motion import Controls, MotionModel
from vasa_jax.models import face_latent

POSE_DIMS = 6


class StreamingSampler:
  """Generate frames for one portrait from audio that arrives in pieces."""

  def __init__(self, bundle: bundle_lib.Bundle, portrait_HxWx3: np.ndarray, *, controls: Controls = Controls(),
               steps: int | None = None, guidance: Sequence[float] | None = None, seed: int = 0,
               still: bool = False, decode_batch: int = 10, watermark=True, label: bool = False):
    """`watermark`: True (default: a fresh payload for this bundle), a `watermark.Watermarker`,
    or False to turn the invisible watermark off (callers must then say so in their output)."""
    if watermark is True:
      from vasa_jax import watermark as watermark_lib
      watermark = watermark_lib.Watermarker(watermark_lib.make_payload(bundle.digest))
    elif watermark is None:
      raise ValueError("watermark=None is ambiguous: pass False to turn the watermark off explicitly")
    watermark = watermark or None
    self.bundle = bundle
    fcfg, mcfg = bundle.face_cfg, bundle.motion_cfg
    self.window, self.context = mcfg.data.window, mcfg.data.context
    self.fps = mcfg.data.fps
    self.steps = steps or mcfg.diffusion.sample_steps
    d = mcfg.diffusion
    self.guidance = tuple(float(g) for g in (guidance if guidance is not None else (d.cfg_audio, d.cfg_gaze, 0, 0, 0)))
    self.controls, self.still = controls, still
    self.decode_batch = decode_batch
    self.watermark = watermark
    self.mean, self.std = jnp.asarray(bundle.mean), jnp.asarray(bundle.std)
    self._rng = jax.random.key(seed)
    wm_cfg = None if watermark is None else (watermark.strength, watermark.host_rejection)
    self.face, self.motion, self._window_step, self._decode, self._encode = _compiled(
        fcfg.to_json(), mcfg.to_json(), int(bundle.mean.size), self.steps, self.guidance, wm_cfg, label)
    self._signs = (jnp.zeros((0,)) if watermark is None else watermark.signs_K)
    self.spf = self.motion.samples_per_frame
    size = fcfg.face.image_size
    img = jax.image.resize(jnp.asarray(center_square(portrait_HxWx3), jnp.float32), (size, size, 3), "linear")[None]
    self.app = self._encode(bundle.face_params, img)
    # Stage 2 generates stage-1 latents, or (motion_source "labels") motion in label space,
    # which `label_motion` writes into the portrait's own latents.
    self.label_space = mcfg.motion_train.motion_source == "labels"
    self._z_dyn_portrait = np.asarray(self.app["z_dyn"][0])
    if self.label_space:
      first = label_motion.from_latents(np.asarray(self.app["z_pose"][0]), self._z_dyn_portrait, LABEL_NAMES)
      self._pose_cols = [LABEL_NAMES.index(n) for n in label_motion.POSE_LABELS]
    else:
      first = np.asarray(jnp.concatenate([self.app["z_pose"], self.app["z_dyn"]], -1)[0])
      self._pose_cols = list(range(POSE_DIMS))
    self.first_motion = (first - np.asarray(self.mean)) / np.asarray(self.std)
    self._prev = np.tile(self.first_motion[None], (self.context, 1))
    # Audio of the K context frames precedes the first window: silence, as in training.
    self._audio = np.zeros(self.context * self.spf, np.float32)
    self._consumed = 0          # Frames of real audio already turned into video.
    self._received = 0          # Samples of real audio received.
    self.frames_out = 0
    self.timings: dict[str, list[float]] = {"diffusion": [], "decode": []}
    # Seconds from the first window's audio being complete to the first frame out (compute only:
    # add W / fps of audio buffering for a live microphone).
    self.first_frame_latency: float | None = None

  # ------------------------------------------------------------------ streaming API

  def push(self, chunk: np.ndarray) -> Iterator[np.ndarray]:
    """Adds audio samples (16 kHz mono float32); yields every frame that is now ready."""
    chunk = np.asarray(chunk, np.float32).reshape(-1)
    self._audio = np.concatenate([self._audio, chunk])
    self._received += chunk.size
    need = (self.context + self.window) * self.spf
    while self._audio.size >= need:
      yield from self._run_window(self._audio[:need], valid_frames=self.window)
      self._audio = self._audio[self.window * self.spf:]

  def flush(self) -> Iterator[np.ndarray]:
    """Generates the frames of the audio still buffered (the clip's last, partial window)."""
    k, w, spf = self.context, self.window, self.spf
    total_frames = -(-self._received // spf)
    remaining = total_frames - self._consumed
    if remaining <= 0:
      return
    wav = np.zeros((k + w) * spf, np.float32)
    wav[:min(self._audio.size, wav.size)] = self._audio[:wav.size]
    yield from self._run_window(wav, valid_frames=remaining)
    self._audio = np.zeros(0, np.float32)

  def compiled_steps(self) -> dict[str, int]:
    """How many times each jitted step has been compiled: 1 window step; 2 decodes (the first
    frame alone, then full batches) once running, for any length of audio."""
    return {"window": self._window_step._cache_size(), "decode": self._decode._cache_size()}

  # ------------------------------------------------------------------ internals

  def _run_window(self, wav: np.ndarray, valid_frames: int) -> Iterator[np.ndarray]:
    k, w = self.context, self.window
    gaze, dist, emo, present = self.controls.arrays(1)
    # Frames past the end of the audio see the audio null, as the last windows in training did.
    valid = np.ones((1, k + w), bool)
    valid[0, k + valid_frames:] = False
    self._rng, sub = jax.random.split(self._rng)
    t_start = t0 = time.perf_counter()
    window = self._window_step(self.bundle.motion_params, jnp.asarray(wav[None]), jnp.asarray(self._prev[None]),
                               jnp.asarray(valid), jnp.asarray(gaze), jnp.asarray(dist), jnp.asarray(emo),
                               jnp.asarray(present), jnp.asarray([False]), sub)
    window = np.asarray(window[0])
    self.timings["diffusion"].append(time.perf_counter() - t0)
    self._prev = window[-k:]
    motion = window * np.asarray(self.std) + np.asarray(self.mean)
    if self.still:  # Keep the portrait's head pose; lips, eyes and expression still move.
      first = self.first_motion * np.asarray(self.std) + np.asarray(self.mean)
      motion[:, self._pose_cols] = first[self._pose_cols]
    if self.label_space:
      motion = label_motion.to_latents(motion, LABEL_NAMES, self._z_dyn_portrait)
    n = valid_frames
    # Fixed batch sizes, one compiled decode each: the stream's very first frame is decoded
    # alone so that it comes out as early as possible, then `decode_batch` frames per call.
    alone = int(self.frames_out == 0 and self.decode_batch > 1)
    bounds = sorted({0, alone, *range(alone + self.decode_batch, n, self.decode_batch), n})
    for start, end in zip(bounds[:-1], bounds[1:]):
      t0 = time.perf_counter()
      chunk = motion[start:end]
      size = 1 if alone and start == 0 else self.decode_batch
      pad = size - len(chunk)
      if pad:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)])
      frames = np.asarray(self._decode(self.bundle.face_params, self.app, jnp.asarray(chunk), self._signs))
      frames = frames[:len(chunk) - pad]
      self.timings["decode"].append(time.perf_counter() - t0)
      if self.first_frame_latency is None:
        self.first_frame_latency = time.perf_counter() - t_start
      for frame in frames:
        self.frames_out += 1
        yield frame
    self._consumed += n


@functools.lru_cache(maxsize=8)
def _compiled(face_json: str, motion_json: str, motion_dim: int, steps: int, guidance: tuple, wm_cfg, label: bool):
  """Models and jitted steps per (configs, sampling settings): later samplers reuse the compiled code."""
  face = face_latent.FaceLatent(ml_collections.ConfigDict(json.loads(face_json)).face)
  motion = MotionModel(ml_collections.ConfigDict(json.loads(motion_json)), motion_dim=motion_dim)
  window_step = motion.window_step_fn(steps, guidance)

  @jax.jit
  def encode(params, img):
    return face.apply(params, img, method=face.encode)

  @jax.jit
  def decode(params, app, motion_BxM, signs_K):
    """Motion -> uint8 frames. The watermark (payload bits `signs_K`) and the optional visible
    label are applied in the same compiled step, on the same device, before quantisation."""
    b = motion_BxM.shape[0]
    v_app = jnp.broadcast_to(app["v_app"], (b,) + app["v_app"].shape[1:])
    z_id = jnp.broadcast_to(app["z_id"], (b,) + app["z_id"].shape[1:])
    img = face.apply(params, v_app, z_id, motion_BxM[:, :POSE_DIMS], motion_BxM[:, POSE_DIMS:],
                     method=face.decode)
    if label:
      from vasa_jax import provenance
      img = provenance.add_label(img)
    if wm_cfg is not None:
      from vasa_jax import watermark
      img = watermark.embed(img, signs_K, *wm_cfg)
    return jnp.clip(jnp.round(img * 255.0), 0, 255).astype(jnp.uint8)

  return face, motion, window_step, decode, encode


def drive_from_video(sampler: "StreamingSampler", frames_TxHxWx3: np.ndarray) -> Iterator[np.ndarray]:
  """Video-driven reenactment: pose and dynamics read from each driving frame."""
  face = sampler.face
  size = sampler.bundle.face_cfg.face.image_size
  encode_motion = jax.jit(lambda p, x: face.apply(p, x, method=face.encode_motion))
  b = sampler.decode_batch
  frames_TxHxWx3 = center_square(frames_TxHxWx3)
  for start in range(0, len(frames_TxHxWx3), b):
    chunk = frames_TxHxWx3[start:start + b].astype(np.float32) / 255.0
    pad = b - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)])
    chunk = jax.image.resize(jnp.asarray(chunk), (b, size, size, 3), "linear")
    m = encode_motion(sampler.bundle.face_params, chunk)
    motion = jnp.concatenate([m["z_pose"], m["z_dyn"]], -1)
    if sampler.still:
      motion = motion.at[:, :POSE_DIMS].set(sampler.app["z_pose"][0])
    out = np.asarray(sampler._decode(sampler.bundle.face_params, sampler.app, motion, sampler._signs))[:b - pad]
    for frame in out:
      sampler.frames_out += 1
      yield frame


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
