"""The stage-2 motion model: audio front end + diffusion transformer, for training and sampling.

`MotionModel` wraps the audio front end (`audio.features`: frame-aligned log-mel, or a
frozen wav2vec2), the learned audio encoder, the motion DiT and the noise schedule
behind pure functions of `params`:

  features(params, audio_BxS)                -> per-frame audio embeddings [B, L, A]
  denoise(params, x_t, t, ctx, drop)         -> x0 prediction (one forward pass)
  sample_window(params, ctx, noise, ...)     -> a clean window of W frames (DDIM + CFG)
  sample_sequence(params, audio, ...)        -> motion for a whole clip, window by window

`WindowLoop` is the one sliding-window loop (W new frames per window, K frames of
context): streaming (`stream.py`), `sample_sequence`, evaluation and the benchmark
all run it, so they generate the same motion for the same seed.

Audio features are computed inside the jitted step from the raw audio of each window
(K context + W frames), in training and in sampling alike. With wav2vec2 that is the
point: its transformer is bidirectional, so a frame's feature depends on all the audio
it is given; giving it exactly the window's audio in both places makes the features the
model trained on the features it samples with, and streaming (any chunking) equal to
offline (`WindowLoop` cuts the same windows). Each window needs its own K + W frames of
audio and nothing beyond (2.4 s at the defaults). The frozen wav2vec2 weights are not
part of the trained `params` nor of a bundle: `with_frozen(params)` adds them, loaded
from `audio.wav2vec2_path` (stage-2 training carries them in its state's `stats`).

Motion is normalised per dimension (`(m - mean) / std`) inside the model's world;
`sample_*` take and return normalised motion, callers (de)normalise with the
stats stored beside the weights.
"""

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vasa_jax import audio as audio_lib
from vasa_jax import diffusion
from vasa_jax.errors import UserError
from vasa_jax.models import audio_encoder, motion_dit, wav2vec2

EMOTION_DIM = 5  # One-hot over the synthetic corpus' EMOTIONS; real labellers map onto it.
# Guidance scales are given for these conditions, in this order (motion_dit.CONDITIONS).
GUIDED = ("audio", "gaze", "distance", "emotion", "prev")
FEATURES = ("logmel", "wav2vec2")  # audio.features


@dataclasses.dataclass(frozen=True)
class Controls:
  """Per-clip conditions; `None` means 'not given' (the learned null is used)."""
  gaze: tuple[float, float] | None = None
  distance: float | None = None
  emotion: int | Sequence[float] | None = None

  def arrays(self, batch: int):
    gaze = np.zeros((batch, 2), np.float32) if self.gaze is None else np.tile(
        np.asarray(self.gaze, np.float32), (batch, 1))
    dist = np.full((batch,), 0.0 if self.distance is None else self.distance, np.float32)
    if self.emotion is None:
      emo = np.zeros((batch, EMOTION_DIM), np.float32)
    elif np.ndim(self.emotion) == 0:
      emo = np.tile(np.eye(EMOTION_DIM, dtype=np.float32)[int(self.emotion)], (batch, 1))
    else:
      emo = np.tile(np.asarray(self.emotion, np.float32), (batch, 1))
    present = np.array([self.gaze is not None, self.distance is not None, self.emotion is not None])
    return gaze, dist, emo, np.tile(present, (batch, 1))


class MotionModel:
  """Stage 2 as pure functions; `cfg` is the whole run config."""

  def __init__(self, cfg: ml_collections.ConfigDict, motion_dim: int,
               wav2vec2_cfg: wav2vec2.Wav2Vec2Config | None = None):
    """`wav2vec2_cfg`: the wav2vec2 architecture, instead of reading it from `audio.wav2vec2_path`
    (for shape-only uses such as ahead-of-time compiles; `frozen_params` still needs the folder)."""
    self.cfg = cfg
    self.motion_dim = motion_dim
    self.window, self.context = cfg.data.window, cfg.data.context
    self.spec = audio_lib.LogMelSpec(fps=cfg.data.fps, sample_rate=cfg.media.sample_rate,
                                     n_mels=cfg.audio.n_mels, per_frame=cfg.audio.per_frame)
    self.feature_kind = cfg.audio.get("features", "logmel")
    if self.feature_kind not in FEATURES:
      raise UserError(f"config key audio.features is {self.feature_kind!r}; accepted: "
                      + ", ".join(repr(f) for f in FEATURES))
    self.w2v_cfg = self.w2v_layer = None
    if self.feature_kind == "wav2vec2":
      self.w2v_cfg = wav2vec2_cfg or wav2vec2.converted_config(cfg.audio.wav2vec2_path)
      self.w2v_per_frame = wav2vec2.check_frame_rate(self.w2v_cfg, cfg.data.fps, cfg.media.sample_rate)
      layer, top = int(cfg.audio.wav2vec2_layer), self.w2v_cfg.num_hidden_layers
      if not -1 <= layer <= top:
        raise UserError(f"config key audio.wav2vec2_layer is {layer}; accepted: -1 (the last hidden state) "
                        f"or 0..{top} (this wav2vec2 has {top} layers)")
      self.w2v_layer = None if layer == -1 else layer
    self.audio_enc = audio_encoder.AudioEncoder(cfg.audio.dim, hidden=cfg.audio.hidden,
                                                num_layers=cfg.audio.layers, lookahead=cfg.audio.lookahead)
    self.dit = motion_dit.MotionDiT(cfg.motion, motion_dim, max_window=self.window)
    self.alpha_bar = diffusion.make_schedule(cfg.diffusion.schedule, cfg.diffusion.train_steps)

  @property
  def samples_per_frame(self) -> int:
    return self.spec.samples_per_frame

  @property
  def feature_dim(self) -> int:
    """Per-frame feature size the audio encoder reads (flattened)."""
    return self.w2v_cfg.hidden_size if self.w2v_cfg else self.spec.feature_dim

  def init(self, rng) -> dict:
    """The trained parameters (audio encoder and DiT); never the frozen wav2vec2."""
    k_a, k_d = jax.random.split(rng)
    length = self.context + self.window
    feats = jnp.zeros((1, length, self.feature_dim), jnp.float32)
    a_params = self.audio_enc.init(k_a, feats)
    emb = self.audio_enc.apply(a_params, feats)
    z = jnp.zeros((1, self.window, self.motion_dim))
    d_params = self.dit.init(k_d, z, jnp.zeros((1,), jnp.int32), jnp.zeros((1, self.context, self.motion_dim)),
                             emb, jnp.zeros((1, 2)), jnp.zeros((1,)), jnp.zeros((1, EMOTION_DIM)),
                             jnp.zeros((1, len(motion_dit.CONDITIONS)), bool))
    return {"audio": a_params, "dit": d_params}

  def frozen_params(self) -> dict:
    """The frozen front end's weights: `{"wav2vec2": params}` loaded from `audio.wav2vec2_path`
    (once per model), or `{}` for log-mel."""
    if self.feature_kind != "wav2vec2":
      return {}
    if "_frozen" not in self.__dict__:
      w2v_cfg, params = wav2vec2.load_converted(self.cfg.audio.wav2vec2_path)
      if w2v_cfg != self.w2v_cfg:
        raise UserError(f"config key audio.wav2vec2_path={self.cfg.audio.wav2vec2_path!r} holds another "
                        "wav2vec2 architecture than this model was built for")
      self._frozen = {"wav2vec2": params}
    return self._frozen

  def frozen_shapes(self) -> dict:
    """Shapes of `frozen_params()` without reading the weights (ahead-of-time compiles)."""
    if self.feature_kind != "wav2vec2":
      return {}
    module = wav2vec2.Wav2Vec2(self.w2v_cfg)
    x = jnp.zeros((1, self.w2v_cfg.receptive_field))
    return {"wav2vec2": jax.eval_shape(lambda: module.init(jax.random.key(0), x))}

  def with_frozen(self, params) -> dict:
    """`params` (a bundle's or a run's trained weights) with the frozen wav2vec2 added, checked
    against the audio encoder they were trained with; `params` as they are for log-mel."""
    if self.feature_kind != "wav2vec2" or "wav2vec2" in params:
      return params
    want = int(params["audio"]["params"]["in_proj"]["kernel"].shape[0])
    if want != self.feature_dim:
      raise UserError(f"config key audio.wav2vec2_path={self.cfg.audio.wav2vec2_path!r} gives "
                      f"{self.feature_dim}-d features but this model's audio encoder was trained on {want}-d "
                      "ones; give the wav2vec2 it was trained with")
    return {**params, **self.frozen_params()}

  def features(self, params, audio_BxS, left_context_BxC=None):
    """Raw 16 kHz audio covering L whole frames -> [B, L, audio.dim]. With wav2vec2, `params`
    must hold the frozen weights (`with_frozen`); each row is one window, seen on its own."""
    if self.feature_kind == "wav2vec2":
      if left_context_BxC is not None:
        raise ValueError("wav2vec2 features take no left context: each window is computed on its own")
      frozen = jax.lax.stop_gradient(params["wav2vec2"])
      feats = wav2vec2.window_features(self.w2v_cfg, frozen, audio_BxS, self.w2v_per_frame, self.w2v_layer)
    else:
      feats = audio_lib.logmel_per_frame_jax(audio_BxS, self.spec, left_context_BxC)
    return self.audio_enc.apply(params["audio"], feats)

  def denoise(self, params, x_t, t_B, ctx: dict, drop_BxC, audio_valid_BxL=None):
    return self.dit.apply(params["dit"], x_t, t_B, ctx["prev"], ctx["audio"], ctx["gaze"], ctx["distance"],
                          ctx["emotion"], drop_BxC, audio_valid_BxL)

  def sample_window(self, params, ctx: dict, noise_BxWxM, *, steps: int, guidance: Sequence[float],
                    base_drop_BxC, audio_valid_BxL=None):
    """DDIM with multi-condition guidance. `base_drop` marks conditions that are absent
    for every variant (no context yet, a control not given)."""
    denoise = self.guided_denoiser(params, ctx, base_drop_BxC, audio_valid_BxL)
    return diffusion.ddim_sample(denoise, noise_BxWxM, self.alpha_bar, steps, guidance=guidance)

  def guided_denoiser(self, params, ctx: dict, base_drop_BxC, audio_valid_BxL=None):
    """`denoise(x_t, t, drop_mask_VxC) -> [V, B, W, M]`: all guidance variants as one batch."""

    def denoise(x_t, t_B, mask_VxC):
      b, v = x_t.shape[0], mask_VxC.shape[0]
      rep = lambda a: None if a is None else jnp.concatenate([a] * v)  # noqa: E731
      drop = jnp.repeat(mask_VxC, b, axis=0) | rep(base_drop_BxC)
      out = self.denoise(params, rep(x_t), rep(t_B), jax.tree.map(rep, ctx), drop, rep(audio_valid_BxL))
      return out.reshape((v,) + x_t.shape)

    return denoise

  def sample_sequence(self, params, audio_S, first_motion_M, controls: Controls, rng, *, steps: int,
                      guidance: Sequence[float], num_frames: int | None = None, seed_context: bool = True):
    """Motion for a whole clip (normalised, [T, M]): the `WindowLoop` that streaming runs, fed
    the whole clip at once. `num_frames` longer than the audio continues with the audio null."""
    loop = WindowLoop(self, params, first_motion_M, controls, rng, steps=steps, guidance=guidance,
                      seed_context=seed_context)
    loop.add_audio(audio_S)
    out = list(loop.windows(final=True, num_frames=num_frames))
    return np.concatenate(out)[:loop.consumed]

  def window_step_fn(self, steps: int, guidance: tuple, anchored_noise: bool = False, window: int | None = None):
    """A jitted `(params, wav, prev, audio_valid, gaze, distance, emotion, present, first, rng[, start])
    -> window`. `anchored_noise`: the starting noise of each frame is drawn from `fold_in(rng, its
    index in the clip)` (the window's first frame is `start`), so windows that overlap start their
    shared frames from the same noise (live mode slides a window a few frames at a time).
    `window`: frames per window, at most (and by default) the training window W; `wav` covers the
    K context frames and these."""
    window = self.window if window is None else int(window)
    if not 1 <= window <= self.window:
      raise ValueError(f"window {window}: accepted 1..{self.window} frames (the training window)")
    key = (steps, guidance, anchored_noise, window)
    cache = self.__dict__.setdefault("_window_steps", {})
    if key not in cache:
      def step(params, wav_BxS, prev_BxKxM, valid_BxL, gaze, dist, emo, present_Bx3, first_B, rng, start=0):
        feats = self.features(params, wav_BxS)
        ctx = {"prev": prev_BxKxM, "audio": feats, "gaze": gaze, "distance": dist, "emotion": emo}
        base = jnp.zeros((wav_BxS.shape[0], len(motion_dit.CONDITIONS)), bool)
        base = base.at[:, motion_dit.GAZE].set(~present_Bx3[:, 0])
        base = base.at[:, motion_dit.DISTANCE].set(~present_Bx3[:, 1])
        base = base.at[:, motion_dit.EMOTION].set(~present_Bx3[:, 2])
        base = base.at[:, motion_dit.PREV].set(first_B)
        if anchored_noise:
          noise = frame_noise(rng, start, wav_BxS.shape[0], window, self.motion_dim)
        else:
          noise = jax.random.normal(rng, (wav_BxS.shape[0], window, self.motion_dim))
        return self.sample_window(params, ctx, noise, steps=steps, guidance=guidance, base_drop_BxC=base,
                                  audio_valid_BxL=valid_BxL)
      cache[key] = jax.jit(step)
    return cache[key]


def frame_noise(rng, start, batch: int, window: int, dim: int):
  """Starting noise [batch, window, dim] for frames start .. start + window - 1 of a clip, each
  frame's drawn from `fold_in(rng, frame index)`: windows that overlap share their frames' noise."""
  rngs = jax.vmap(lambda t: jax.random.fold_in(rng, t))(start + jnp.arange(window))
  return jax.vmap(lambda r: jax.random.normal(r, (batch, dim)), out_axes=1)(rngs)


POSE_DIMS = 6  # Both motion layouts (stage-1 latents, label space) start with the six pose numbers.


def smooth_pose(prev_KxM: np.ndarray, window_WxM: np.ndarray, sigma: float) -> np.ndarray:
  """The window with its pose dims low-passed by a Gaussian of `sigma` frames.

  Each sampled window's pose carries frame-to-frame jitter that real heads do not
  have (dP several times the truth's). The K frames already shown extend the
  signal to the left, so windows join without a step; the right edge repeats.
  Dims past the pose (mouth, blinks, gaze) are left sharp: a blink lasts 4-6 frames.
  """
  if sigma <= 0:
    return window_WxM
  k, w = len(prev_KxM), len(window_WxM)
  radius = int(np.ceil(3 * sigma))
  taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  taps /= taps.sum()
  pose = np.concatenate([prev_KxM[:, :POSE_DIMS], window_WxM[:, :POSE_DIMS]])
  pose = np.pad(pose, ((radius, radius), (0, 0)), mode="edge")
  smooth = np.stack([np.convolve(pose[:, d], taps, mode="valid") for d in range(POSE_DIMS)], -1)
  out = np.array(window_WxM, copy=True)
  out[:, :POSE_DIMS] = smooth[k:k + w]
  return out


def audio_valid_mask(consumed: int, audio_frames: int, context: int, window: int) -> np.ndarray:
  """Which of a window's K + W frames have audio: [K + W] bool.

  The window covers frames `consumed - K .. consumed + W - 1` of the clip; the K
  frames before the clip starts are silence that counts as heard (training pads
  clip starts the same way). Frames from `audio_frames` on are past the end of the
  audio and see the audio null, as the last windows in training did.
  """
  return np.arange(consumed - context, consumed + window) < audio_frames


class WindowLoop:
  """The sliding-window loop of stage 2, for every caller: streaming, offline sampling,
  evaluation and the benchmark run this one loop.

  Audio arrives in any chunks (`add_audio`); `windows()` runs the jitted window step
  on each complete window of W frames (with the K frames before it as context) and
  yields its normalised motion. Only the last K motion frames and the unconsumed
  audio are kept. `windows(final=True)` then finishes the clip: the last, partial
  window, padded with silence that the audio-valid mask marks as absent.
  """

  def __init__(self, model: MotionModel, params, first_motion_M, controls: Controls, rng, *, steps: int,
               guidance: Sequence[float], seed_context: bool = True, live: bool = False,
               live_window: int | None = None):
    """`live`: for `live_windows`, whose windows overlap: noise anchored to frame indices.
    `live_window`: frames per live window (default: the training window W). Live windows only
    keep their first few, heard frames; a shorter window denoises fewer frames of null audio after
    them, which is most of a live step's cost."""
    self.model, self.params = model, model.with_frozen(params)
    k, self.spf = model.context, model.samples_per_frame
    self.controls = [jnp.asarray(a) for a in controls.arrays(1)]
    self.live = live
    self.live_window = int(live_window or model.window)
    self.step_fn = (model.window_step_fn(steps, tuple(guidance), anchored_noise=True, window=self.live_window)
                    if live else model.window_step_fn(steps, tuple(guidance)))
    self.pose_smooth = float(model.cfg.diffusion.pose_smooth)
    # The portrait's own (normalised) motion, repeated, is the first window's context, so the
    # video starts from its pose and expression; `seed_context=False` drops that context.
    self.prev_KxM = np.tile(np.asarray(first_motion_M, np.float32)[None], (k, 1))
    self.seed_context = seed_context
    self.rng = rng
    # Audio of the K context frames precedes the first window: silence, as in training.
    self.audio = np.zeros(k * self.spf, np.float32)
    self.received = 0     # samples of real audio received
    self.consumed = 0     # frames of motion generated

  def add_audio(self, chunk_S: np.ndarray) -> None:
    chunk_S = np.asarray(chunk_S, np.float32).reshape(-1)
    self.audio = np.concatenate([self.audio, chunk_S])
    self.received += chunk_S.size

  def windows(self, *, final: bool = False, num_frames: int | None = None):
    """Yields the normalised motion [n, M] of each window that can be generated now.

    Without `final`, only complete windows; with it, also the rest of the clip:
    up to `num_frames` frames (default: as many as the audio covers).
    """
    k, w, spf = self.model.context, self.model.window, self.spf
    audio_frames = -(-self.received // spf)
    total = audio_frames if num_frames is None else num_frames
    while True:
      if final:
        if self.consumed >= total:
          return
      elif self.audio.size < (k + w) * spf:
        return
      wav = np.zeros((k + w) * spf, np.float32)
      n = min(self.audio.size, wav.size)
      wav[:n] = self.audio[:n]
      valid = audio_valid_mask(self.consumed, audio_frames, k, w)
      first = np.array([self.consumed == 0 and not self.seed_context])
      self.rng, sub = jax.random.split(self.rng)
      window = self.step_fn(self.params, jnp.asarray(wav[None]), jnp.asarray(self.prev_KxM[None]),
                            jnp.asarray(valid[None]), *self.controls, jnp.asarray(first), sub)
      window = smooth_pose(self.prev_KxM, np.asarray(window[0]), self.pose_smooth)
      self.prev_KxM = window[-k:]
      self.audio = self.audio[w * spf:]
      n_out = min(w, total - self.consumed) if final else w
      self.consumed += n_out
      yield window[:n_out]

  def live_windows(self, *, hop: int, final: bool = False):
    """Live: yields the normalised motion [n, M] of the frames whose audio has been heard.

    Each window starts at the first frame not yet shown and spans W frames, of which only
    those with audio received so far (plus the encoder's lookahead) are marked valid; the rest
    see the audio null, as a clip cut short inside a window did in training
    (`diffusion.p_truncate`). Only the heard frames are kept (and become the next window's
    context); the window then slides on as more audio arrives, once at least `hop` new frames
    are ready. `final`: also the frames of the audio's last, partial frame.
    """
    if not self.live:
      raise ValueError("live_windows needs a WindowLoop made with live=True")
    k, w, spf = self.model.context, self.live_window, self.spf
    lookahead = int(self.model.cfg.audio.lookahead)
    heard = (-(-self.received // spf)) if final else self.received // spf
    while True:
      ready = heard - self.consumed if final else heard - lookahead - self.consumed
      if ready <= 0 or (not final and ready < hop):
        return
      n_out = min(ready, w)
      wav = np.zeros((k + w) * spf, np.float32)
      n = min(self.audio.size, wav.size)
      wav[:n] = self.audio[:n]
      valid = audio_valid_mask(self.consumed, heard, k, w)
      first = np.array([self.consumed == 0 and not self.seed_context])
      # Overlapping windows start each frame from the same noise (anchored to the frame's index),
      # so a frame's motion changes between steps only as its audio and context do.
      window = self.step_fn(self.params, jnp.asarray(wav[None]), jnp.asarray(self.prev_KxM[None]),
                            jnp.asarray(valid[None]), *self.controls, jnp.asarray(first), self.rng,
                            jnp.int32(self.consumed))
      window = smooth_pose(self.prev_KxM, np.asarray(window[0]), self.pose_smooth)[:n_out]
      self.prev_KxM = np.concatenate([self.prev_KxM, window])[-k:]
      self.audio = self.audio[n_out * spf:]
      self.consumed += n_out
      yield window
