"""Stage 2: a diffusion transformer over windows of motion latents.

Input tokens, in time order: one token per control (gaze, distance, emotion),
then the K previous frames (their motion and audio: the context that stitches
windows together), then the W frames being denoised (noisy motion plus their
audio). The diffusion time modulates every block (adaLN-Zero, as in DiT). The
head predicts the clean window X0 (VASA-1's x0 objective).

Each condition can be replaced by a learned "null" (classifier-free guidance):
`drop` is `[B, N_CONDITIONS]` booleans in the order of `CONDITIONS`. Dropping
`prev` removes both the previous motion and the previous audio, as VASA-1 does
so that a first window can be generated without context. `audio_valid` marks
frames that have audio; the others read the audio null (the end of a clip).
"""

import math

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

CONDITIONS = ("audio", "gaze", "distance", "emotion", "prev")
AUDIO, GAZE, DISTANCE, EMOTION, PREV = range(len(CONDITIONS))
# With `motion.control_norm`, the gaze (radians) and distance controls enter their embeddings
# centred and scaled to about unit spread. Raw, a distance of 0.85..1.2 is a near-constant input
# (a spread of 0.1 on a value of 1): the demo's stage 2 learned to ignore it (its distance followed
# requests from 0.85 to 1.2 with a slope of 0.09 when no context gave it away).
GAZE_SCALE = 0.2
DISTANCE_CENTRE, DISTANCE_SCALE = 1.0, 0.1


def control_inputs(cfg: ml_collections.ConfigDict, gaze_Bx2, distance_B):
  """What the gaze and distance embeddings read: the raw controls, or centred and scaled
  (`control_norm`; configs saved before it existed read raw, as they were trained)."""
  if cfg.get("control_norm", False):
    return gaze_Bx2 / GAZE_SCALE, (distance_B - DISTANCE_CENTRE) / DISTANCE_SCALE
  return gaze_Bx2, distance_B


def timestep_embedding(t_B, dim: int, max_period: float = 10000.0):
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = t_B.astype(jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class Block(nn.Module):
  """Pre-LN transformer block with adaLN-Zero modulation by the diffusion time."""
  width: int
  heads: int
  mlp_ratio: int

  @nn.compact
  def __call__(self, x_BxNxD, cond_BxD):
    mod = nn.Dense(6 * self.width, kernel_init=nn.initializers.zeros)(nn.silu(cond_BxD))
    shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(mod[:, None, :], 6, axis=-1)
    h = nn.LayerNorm(use_bias=False, use_scale=False)(x_BxNxD) * (1 + scale1) + shift1
    h = nn.MultiHeadDotProductAttention(num_heads=self.heads, qkv_features=self.width)(h, h)
    x_BxNxD = x_BxNxD + gate1 * h
    h = nn.LayerNorm(use_bias=False, use_scale=False)(x_BxNxD) * (1 + scale2) + shift2
    h = nn.Dense(self.width)(nn.gelu(nn.Dense(self.mlp_ratio * self.width)(h)))
    return x_BxNxD + gate2 * h


class MotionDiT(nn.Module):
  """H(X_t, t, C) -> X0 for a window of W motion frames."""
  cfg: ml_collections.ConfigDict
  motion_dim: int
  # The longest window the position table is made for (the training window, W). A window may be
  # shorter: its tokens take the table's first positions, so a live window of a few frames reads
  # the same positions the first frames of a training window did. 0: the window given at init.
  max_window: int = 0

  @nn.compact
  def __call__(self, x_t_BxWxM, t_B, prev_BxKxM, audio_BxLxA, gaze_Bx2, distance_B, emotion_BxE, drop_BxC,
               audio_valid_BxL=None):
    c = self.cfg
    b, w, _ = x_t_BxWxM.shape
    k = prev_BxKxM.shape[1]
    d = c.width

    def null(name, shape):
      return self.param(name, nn.initializers.normal(0.02), shape)

    def pick(flag_B, value, null_value):
      return jnp.where(flag_B.reshape((-1,) + (1,) * (value.ndim - 1)), null_value, value)

    # Per-frame audio for the K context frames and the W window frames.
    audio = nn.Dense(d, name="audio_in")(audio_BxLxA)
    audio_null = null("audio_null", (d,))
    audio = pick(drop_BxC[:, AUDIO], audio, audio_null)
    if audio_valid_BxL is not None:
      # Frames past the end of the audio (a clip's last window) read the null, as in training.
      audio = jnp.where(audio_valid_BxL[..., None], audio, audio_null)
    audio_prev, audio_cur = audio[:, :k], audio[:, k:]
    prev_tokens = nn.Dense(d, name="prev_in")(prev_BxKxM) + audio_prev
    drop_prev = drop_BxC[:, PREV]
    # Dropping the context removes its motion and audio together.
    prev_tokens = pick(drop_prev, prev_tokens, null("prev_null", (k, d)))
    cur_tokens = nn.Dense(d, name="motion_in")(x_t_BxWxM) + audio_cur

    gaze_Bx2, distance_B = control_inputs(c, gaze_Bx2, distance_B)
    gaze = pick(drop_BxC[:, GAZE], nn.Dense(d, name="gaze_in")(gaze_Bx2), null("gaze_null", (d,)))
    dist = pick(drop_BxC[:, DISTANCE], nn.Dense(d, name="distance_in")(distance_B[:, None]),
                null("distance_null", (d,)))
    emo = pick(drop_BxC[:, EMOTION], nn.Dense(d, name="emotion_in")(emotion_BxE), null("emotion_null", (d,)))
    control = jnp.stack([gaze, dist, emo], axis=1)

    x = jnp.concatenate([control, prev_tokens, cur_tokens], axis=1)
    n = x.shape[1]
    if self.max_window and w > self.max_window:
      raise ValueError(f"a window of {w} frames is longer than the {self.max_window} the model was made for")
    table = n - w + self.max_window if self.max_window else n
    x = x + self.param("pos", nn.initializers.normal(0.02), (1, table, d))[:, :n]
    t_emb = timestep_embedding(t_B, d)
    t_emb = nn.Dense(d)(nn.silu(nn.Dense(d)(t_emb)))
    for i in range(c.layers):
      x = Block(d, c.heads, c.mlp_ratio, name=f"block{i}")(x, t_emb)
    x = nn.LayerNorm()(x[:, -w:])
    return nn.Dense(self.motion_dim, kernel_init=nn.initializers.zeros, name="head")(x)
