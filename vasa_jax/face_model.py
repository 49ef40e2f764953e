"""The stage-1 face model: encode a face, decode any motion onto it, as pure functions of `params`.

`FaceModel` is stage 1's one entry point, as `MotionModel` is stage 2's. Sampling,
streaming, evaluation, the benchmark, motion extraction and the trainer all call
it, so the motion layout and the fixed-batch padding are written here once:

  init(rng)                              -> params
  encode(params, img_BxHxWx3)            -> {"v_app", "z_id", "z_pose", "z_dyn"} (+ "f_app": 2D skip)
  encode_motion(params, img_BxHxWx3)     -> {"z_pose", "z_dyn"}
  decode(params, app, z_pose, z_dyn)     -> images [B, H, W, 3]
  decode_motion(params, app_1, motion_BxM) one portrait's latents, a batch of motion vectors
  motion_of_frames(params, frames_TxHxWx3, batch) -> motion [T, M], in fixed batches

A motion vector is `z_pose` (POSE_DIM numbers: yaw, pitch, roll, translation,
scale) followed by `z_dyn`; stage 2 generates exactly these vectors.
`encode_jit` / `encode_motion_jit` are the compiled forms, cached per model.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vasa_jax.label_motion import DYN_LABELS
from vasa_jax.models import face_latent

POSE_DIM = face_latent.POSE_DIM


def pad_batch(x_NxD: np.ndarray, size: int) -> tuple[np.ndarray, int]:
  """Pads a batch to `size` rows by repeating its last row; returns (padded, rows of padding).

  Every compiled stage-1 call sees a fixed batch shape, so a clip of any length
  compiles once.
  """
  pad = size - len(x_NxD)
  if pad > 0:
    x_NxD = np.concatenate([x_NxD, np.repeat(x_NxD[-1:], pad, 0)])
  return x_NxD, max(pad, 0)


def join_motion(latents: dict) -> jax.Array:
  """{"z_pose", "z_dyn"} -> motion vectors [B, POSE_DIM + Zd]."""
  return jnp.concatenate([latents["z_pose"], latents["z_dyn"]], -1)


def split_motion(motion_BxM):
  """Motion vectors -> (z_pose [B, POSE_DIM], z_dyn [B, Zd])."""
  return motion_BxM[:, :POSE_DIM], motion_BxM[:, POSE_DIM:]


class FaceModel:
  """Stage 1 as pure functions; `face_cfg` is the run config's `face` section."""

  def __init__(self, face_cfg: ml_collections.ConfigDict):
    self.cfg = face_cfg
    self.net = face_latent.FaceLatent(face_cfg)
    self.image_size = face_cfg.image_size
    self.motion_dim = POSE_DIM + face_cfg.z_dyn
    self.app_keys = face_latent.app_keys(face_cfg)
    self.encode_jit = jax.jit(self.encode)
    self.encode_motion_jit = jax.jit(self.encode_motion)

  def init(self, rng) -> dict:
    img = jnp.zeros((1, self.image_size, self.image_size, 3), jnp.float32)
    return self.net.init(rng, img, img)

  def encode(self, params, img_BxHxWx3, motion: dict | None = None) -> dict:
    return self.net.apply(params, img_BxHxWx3, motion, method=self.net.encode)

  def encode_motion(self, params, img_BxHxWx3) -> dict:
    return self.net.apply(params, img_BxHxWx3, method=self.net.encode_motion)

  def decode(self, params, app: dict, z_pose_Bx6, z_dyn_BxZ):
    app = {k: app[k] for k in self.app_keys}
    return self.net.apply(params, app, z_pose_Bx6, z_dyn_BxZ, method=self.net.decode)

  def decode_motion(self, params, app_1: dict, motion_BxM):
    """One portrait's latents (batch 1) rendered with each of a batch of motion vectors.

    With `face.free_dyn_from_portrait`, the free (unlabelled) z_dyn dims always come from the
    portrait, whoever drives it: such a decoder was trained to render motion from the labelled
    dims alone (`loss.dyn_free_from_src`), and a driver's free dims would carry its identity.
    """
    b = motion_BxM.shape[0]
    if self.cfg.free_dyn_from_portrait:
      n = POSE_DIM + len(DYN_LABELS)
      free = jnp.broadcast_to(app_1["z_dyn"][:, len(DYN_LABELS):], (b, motion_BxM.shape[1] - n))
      motion_BxM = jnp.concatenate([motion_BxM[:, :n], free], -1)
    app = {k: jnp.broadcast_to(app_1[k], (b,) + app_1[k].shape[1:]) for k in self.app_keys}
    return self.decode(params, app, *split_motion(motion_BxM))

  def to_input(self, frames_BxHxWx3):
    """Float frames of any square size -> the model's input size (a no-op at that size)."""
    frames_BxHxWx3 = jnp.asarray(frames_BxHxWx3)
    shape = (frames_BxHxWx3.shape[0], self.image_size, self.image_size, 3)
    return frames_BxHxWx3 if frames_BxHxWx3.shape == shape else jax.image.resize(frames_BxHxWx3, shape, "linear")

  def motion_of_frames(self, params, frames_TxHxWx3: np.ndarray, batch: int) -> np.ndarray:
    """Motion vectors [T, M] of float frames in [0, 1], encoded `batch` frames per call."""
    parts = []
    for start in range(0, len(frames_TxHxWx3), batch):
      chunk, pad = pad_batch(frames_TxHxWx3[start:start + batch], batch)
      latents = self.encode_motion_jit(params, self.to_input(chunk))
      parts.append(np.asarray(join_motion(latents))[:batch - pad])
    return np.concatenate(parts).astype(np.float32)
