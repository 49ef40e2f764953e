"""The stage-2 motion model: audio front end + diffusion transformer, for training and sampling.

`MotionModel` wraps the learned audio encoder (over frame-aligned log-mel), the
motion DiT and the noise schedule behind pure functions of `params`:

  features(params, audio_BxS)                -> per-frame audio embeddings [B, L, A]
  denoise(params, x_t, t, ctx, drop)         -> x0 prediction (one forward pass)
  sample_window(params, ctx, noise, ...)     -> a clean window of W frames (DDIM + CFG)
  sample_sequence(params, audio, ...)        -> motion for a whole clip, window by window

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
from vasa_jax.models import audio_encoder, motion_dit

EMOTION_DIM = 5  # One-hot over the synthetic corpus' EMOTIONS; real labellers map onto it.
# Guidance scales are given for these conditions, in this order (motion_dit.CONDITIONS).
GUIDED = ("audio", "gaze", "distance", "emotion", "prev")


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

  def __init__(self, cfg: ml_collections.ConfigDict, motion_dim: int):
    self.cfg = cfg
    self.motion_dim = motion_dim
    self.window, self.context = cfg.data.window, cfg.data.context
    self.spec = audio_lib.LogMelSpec(fps=cfg.data.fps, sample_rate=cfg.media.sample_rate,
                                     n_mels=cfg.audio.n_mels, per_frame=cfg.audio.per_frame)
    self.audio_enc = audio_encoder.AudioEncoder(cfg.audio.dim, hidden=cfg.audio.hidden,
                                                num_layers=cfg.audio.layers, lookahead=cfg.audio.lookahead)
    self.dit = motion_dit.MotionDiT(cfg.motion, motion_dim)
    self.alpha_bar = diffusion.make_schedule(cfg.diffusion.schedule, cfg.diffusion.train_steps)

  @property
  def samples_per_frame(self) -> int:
    return self.spec.samples_per_frame

  def init(self, rng) -> dict:
    k_a, k_d = jax.random.split(rng)
    length = self.context + self.window
    wav = jnp.zeros((1, length * self.samples_per_frame), jnp.float32)
    feats = audio_lib.logmel_per_frame_jax(wav, self.spec)
    a_params = self.audio_enc.init(k_a, feats)
    emb = self.audio_enc.apply(a_params, feats)
    z = jnp.zeros((1, self.window, self.motion_dim))
    d_params = self.dit.init(k_d, z, jnp.zeros((1,), jnp.int32), jnp.zeros((1, self.context, self.motion_dim)),
                             emb, jnp.zeros((1, 2)), jnp.zeros((1,)), jnp.zeros((1, EMOTION_DIM)),
                             jnp.zeros((1, len(motion_dit.CONDITIONS)), bool))
    return {"audio": a_params, "dit": d_params}

  def features(self, params, audio_BxS, left_context_BxC=None):
    """Raw 16 kHz audio covering L whole frames -> [B, L, audio.dim]."""
    mel = audio_lib.logmel_per_frame_jax(audio_BxS, self.spec, left_context_BxC)
    return self.audio_enc.apply(params["audio"], mel)

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
    """Motion for a whole clip: windows of W frames, each conditioned on the K before it.

    The portrait's own (normalised) motion, repeated, is the first window's context
    (training pads clip starts the same way, with silence as their audio), so the
    video starts from the portrait's pose and expression; `seed_context=False`
    drops that context instead. Returns normalised motion [T, M]. One compiled
    window step serves every window.
    """
    spf, k, w = self.samples_per_frame, self.context, self.window
    audio_S = np.asarray(audio_S, np.float32)
    t_total = num_frames or -(-audio_S.size // spf)
    n_windows = -(-t_total // w)
    padded = np.zeros(((k + n_windows * w) * spf,), np.float32)
    padded[k * spf:k * spf + audio_S.size] = audio_S
    frames_with_audio = k + -(-audio_S.size // spf)
    gaze, dist, emo, present = controls.arrays(1)
    step_fn = self.window_step_fn(steps, tuple(guidance))
    prev = np.tile(np.asarray(first_motion_M, np.float32)[None], (k, 1))
    out = []
    for i in range(n_windows):
      lo = i * w  # In padded-frame units, the window's context starts here.
      wav = padded[lo * spf:(lo + k + w) * spf][None]
      valid = (np.arange(lo, lo + k + w) < frames_with_audio)[None]
      first = np.array([i == 0 and not seed_context])
      rng, sub = jax.random.split(rng)
      window = step_fn(params, jnp.asarray(wav), jnp.asarray(prev[None]), jnp.asarray(valid), jnp.asarray(gaze),
                       jnp.asarray(dist), jnp.asarray(emo), jnp.asarray(present), jnp.asarray(first), sub)
      window = np.asarray(window[0])
      out.append(window)
      prev = window[-k:]
    return np.concatenate(out)[:t_total]

  def window_step_fn(self, steps: int, guidance: tuple):
    """A jitted `(params, wav, prev, audio_valid, gaze, distance, emotion, present, first, rng) -> window`."""
    key = (steps, guidance)
    cache = self.__dict__.setdefault("_window_steps", {})
    if key not in cache:
      def step(params, wav_BxS, prev_BxKxM, valid_BxL, gaze, dist, emo, present_Bx3, first_B, rng):
        feats = self.features(params, wav_BxS)
        ctx = {"prev": prev_BxKxM, "audio": feats, "gaze": gaze, "distance": dist, "emotion": emo}
        base = jnp.zeros((wav_BxS.shape[0], len(motion_dit.CONDITIONS)), bool)
        base = base.at[:, motion_dit.GAZE].set(~present_Bx3[:, 0])
        base = base.at[:, motion_dit.DISTANCE].set(~present_Bx3[:, 1])
        base = base.at[:, motion_dit.EMOTION].set(~present_Bx3[:, 2])
        base = base.at[:, motion_dit.PREV].set(first_B)
        noise = jax.random.normal(rng, (wav_BxS.shape[0], self.window, self.motion_dim))
        return self.sample_window(params, ctx, noise, steps=steps, guidance=guidance, base_drop_BxC=base,
                                  audio_valid_BxL=valid_BxL)
      cache[key] = jax.jit(step)
    return cache[key]
