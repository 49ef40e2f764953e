"""Multi-scale patch discriminator (hinge GAN + feature matching) for stage 1."""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class PatchDiscriminator(nn.Module):
  """One scale: strided convs to a map of real/fake logits; also returns its features."""
  widths: Sequence[int]

  @nn.compact
  def __call__(self, img):
    x = img * 2.0 - 1.0
    feats = []
    for i, w in enumerate(self.widths):
      x = nn.Conv(w, (4, 4), strides=(2, 2) if i < len(self.widths) - 1 else (1, 1))(x)
      if i:
        x = nn.GroupNorm(min(8, w))(x)
      x = nn.leaky_relu(x, 0.2)
      feats.append(x)
    return nn.Conv(1, (3, 3))(x), feats


class MultiScaleDiscriminator(nn.Module):
  """Patch discriminators on the image and on 2x, 4x, ... downsampled copies."""
  widths: Sequence[int]
  num_scales: int = 2

  @nn.compact
  def __call__(self, img):
    outs = []
    for s in range(self.num_scales):
      if s:
        b, h, w, c = img.shape
        img = jax.image.resize(img, (b, h // 2, w // 2, c), "linear")
      outs.append(PatchDiscriminator(self.widths, name=f"scale{s}")(img))
    return outs


def hinge_d_loss(real_outs, fake_outs) -> jax.Array:
  """Discriminator hinge loss summed over scales."""
  loss = 0.0
  for (real, _), (fake, _) in zip(real_outs, fake_outs):
    loss = loss + jnp.mean(nn.relu(1.0 - real)) + jnp.mean(nn.relu(1.0 + fake))
  return loss


def hinge_g_loss(fake_outs) -> jax.Array:
  """Generator side of the hinge loss."""
  return sum(-jnp.mean(fake) for fake, _ in fake_outs)


def feature_matching_loss(real_outs, fake_outs) -> jax.Array:
  """L1 between discriminator features of real and generated images (real side fixed)."""
  loss, n = 0.0, 0
  for (_, real_feats), (_, fake_feats) in zip(real_outs, fake_outs):
    for r, f in zip(real_feats, fake_feats):
      loss = loss + jnp.mean(jnp.abs(jax.lax.stop_gradient(r) - f))
      n += 1
  return loss / max(n, 1)
