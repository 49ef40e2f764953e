"""Learned audio encoder: per-video-frame audio features -> d_model embeddings.

Input is whatever per-frame features the config picks (log-mel `[B, T, P, M]`
from `vasa_jax.audio`, or wav2vec2 `[B, T, D]`). A pointwise projection is
followed by residual 1D convolutions over time. Temporal context is bounded
and known: only the first conv looks ahead (`lookahead` frames), the rest are
causal, so output frame t depends on input frames
[t - past_frames, t + lookahead] (`AudioEncoder.context`). Frames outside the
given sequence read as zeros. Trained with the motion diffusion model.
"""

import flax.linen as nn
import jax

from vasa_jax.errors import UserError


class AudioEncoder(nn.Module):
  """`[B, T, ...]` per-frame features -> `[B, T, d_model]`."""
  d_model: int
  hidden: int = 256
  num_layers: int = 3
  kernel_size: int = 3
  lookahead: int = 1

  def context(self) -> tuple[int, int]:
    """(past, future) input frames that one output frame depends on."""
    return self.num_layers * (self.kernel_size - 1) - self.lookahead, self.lookahead

  @nn.compact
  def __call__(self, feats_BxTx_: jax.Array) -> jax.Array:
    if not 0 <= self.lookahead < self.kernel_size:
      raise UserError(f"audio encoder: lookahead {self.lookahead} must be in [0, kernel_size={self.kernel_size})")
    if self.num_layers < 1:
      raise UserError(f"audio encoder: num_layers must be at least 1, got {self.num_layers}")
    b, t = feats_BxTx_.shape[:2]
    x_BxTxH = nn.Dense(self.hidden, name="in_proj")(feats_BxTx_.reshape(b, t, -1))
    for i in range(self.num_layers):
      future = self.lookahead if i == 0 else 0
      y = nn.LayerNorm(name=f"norm_{i}")(x_BxTxH)
      y = nn.Conv(self.hidden, (self.kernel_size,), padding=[(self.kernel_size - 1 - future, future)],
                  name=f"conv_{i}")(y)
      y = nn.Dense(self.hidden, name=f"mix_{i}")(nn.gelu(y))
      x_BxTxH = x_BxTxH + y
    x_BxTxH = nn.LayerNorm(name="out_norm")(x_BxTxH)
    return nn.Dense(self.d_model, name="out_proj")(x_BxTxH)

