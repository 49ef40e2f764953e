"""Identity embedding for VASA's cross-identity loss (stands in for ArcFace).

Our own small network is trained beside stage 1 with a margin cosine (CosFace)
loss on identity labels, then used frozen to score generated faces. The loss
only needs `embed(params, images) -> unit vectors [B, E]`, so converted ArcFace
weights could stand in for it.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vasa_jax.models.face_latent import Downsampler, norm_groups


class IdentityNet(nn.Module):
  """Face -> unit-norm identity embedding."""
  widths: Sequence[int]
  embed_dim: int
  input_size: int

  @nn.compact
  def __call__(self, img):
    if img.shape[1] != self.input_size:
      img = jax.image.resize(img, (img.shape[0], self.input_size, self.input_size, 3), "linear")
    x = Downsampler(self.widths)(img)
    x = nn.silu(nn.GroupNorm(norm_groups(x.shape[-1]))(x))
    x = jnp.concatenate([x.mean(axis=(1, 2)), x.max(axis=(1, 2))], axis=-1)
    x = nn.Dense(self.embed_dim)(nn.silu(nn.Dense(2 * self.embed_dim)(x)))
    return x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + 1e-6)


def cosface_logits(emb_BxE, class_weights_ExN, labels_B, *, scale: float, margin: float):
  """CosFace: cosine logits with the margin subtracted from the true class, times `scale`."""
  w = class_weights_ExN / (jnp.linalg.norm(class_weights_ExN, axis=0, keepdims=True) + 1e-6)
  cos = emb_BxE @ w
  cos = cos - margin * jax.nn.one_hot(labels_B, w.shape[1], dtype=cos.dtype)
  return scale * cos


def cosface_loss(emb_BxE, class_weights_ExN, labels_B, *, scale: float = 30.0, margin: float = 0.2):
  logits = cosface_logits(emb_BxE, class_weights_ExN, labels_B, scale=scale, margin=margin)
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels_B[:, None], axis=1))
