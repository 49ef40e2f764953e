"""Identity embedding for VASA's cross-identity loss (stands in for ArcFace).

Our own small network is trained beside stage 1 with a margin cosine (CosFace)
loss on identity labels, then used frozen to score generated faces. The loss
only needs `embed(params, images) -> unit vectors [B, E]`, so a user can plug in
converted ArcFace weights instead (see `load_embedder`).
"""

import os
from typing import Callable, Sequence

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp

from vasa_jax.errors import UserError
from vasa_jax.models.face_latent import Downsampler, norm_groups

Embedder = Callable[[dict, jax.Array], jax.Array]


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


def load_embedder(path: str, module: nn.Module, sample_input: jax.Array):
  """Loads identity-net params saved with `flax.serialization.to_bytes` from a local file.

  `module` gives the architecture of the converted network (ours by default);
  returns `(embed_fn, params)`. Nothing is downloaded.
  """
  if not os.path.isfile(path):
    raise UserError(f"identity network weights {path!r} not found; give a local .msgpack file written by "
                    "flax.serialization.to_bytes")
  target = jax.eval_shape(module.init, jax.random.key(0), sample_input)
  with open(path, "rb") as f:
    data = f.read()
  try:
    params = flax.serialization.from_bytes(target, data)
  except Exception as e:
    raise UserError(f"identity network weights {path!r} do not match the architecture: {e}") from None
  return (lambda p, img: module.apply(p, img)), params
