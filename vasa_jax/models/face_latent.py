"""Stage 1: the face latent space — encoders and the 3D-warping decoder.

A face image is taken apart by independent encoders into
  `V_app`  canonical appearance volume  [B, D, S, S, Cv]
  `z_id`   identity code                [B, Zi]
  `z_pose` head pose                    [B, 6]  (yaw, pitch, roll, tx, ty, log_scale)
  `z_dyn`  holistic facial dynamics     [B, Zd] (lips, expression, gaze, blinks)
and put back together by one decoder `D(V_app, z_id, z_pose, z_dyn)`, which warps
the canonical volume into the target pose and expression (rigid transform plus a
learned 3D flow), refines it with 3D convolutions, projects it to 2D and renders
the image with a residual 2D generator modulated by `z_id`.

All modules are Flax linen, applied purely: `params = m.init(...)`,
`out = m.apply(params, ...)`. Images are float32 `[B, H, W, 3]` in [0, 1].
"""

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vasa_jax.models import warp

POSE_DIM = 6
# The canonical square the rectified face covers (`FaceLatent.rectified`), in [-1, 1] frame units at
# pose zero, y down: eyes (y ~ -0.2) to chin (mouth y ~ 0.35), cheek to cheek, for the synthetic heads.
RECT_CENTER, RECT_HALF = (0.0, 0.07), 0.5
# Bounds keep an untrained pose head in a sane range: +-90 degrees of rotation,
# half the frame of translation, a factor e^+-0.4 of scale.
_POSE_LIMITS = (math.pi / 2, math.pi / 2, math.pi / 2, 0.5, 0.5, 0.4)


def norm_groups(channels: int) -> int:
  for g in (8, 4, 2):
    if channels % g == 0:
      return g
  return 1


class ResBlock2D(nn.Module):
  """Pre-activation residual block, optionally FiLM-modulated by a code."""
  channels: int

  @nn.compact
  def __call__(self, x, cond=None):
    h = nn.GroupNorm(norm_groups(x.shape[-1]))(x)
    if cond is not None:
      gamma_beta = nn.Dense(2 * x.shape[-1], kernel_init=nn.initializers.zeros)(cond)
      gamma, beta = jnp.split(gamma_beta[:, None, None, :], 2, axis=-1)
      h = h * (1.0 + gamma) + beta
    h = nn.Conv(self.channels, (3, 3))(nn.silu(h))
    h = nn.GroupNorm(norm_groups(self.channels))(h)
    h = nn.Conv(self.channels, (3, 3), kernel_init=nn.initializers.zeros)(nn.silu(h))
    if x.shape[-1] != self.channels:
      x = nn.Conv(self.channels, (1, 1))(x)
    return x + h


class ResBlock3D(nn.Module):
  """Residual block over a feature volume `[B, D, H, W, C]`."""
  channels: int

  @nn.compact
  def __call__(self, x):
    h = nn.Conv(self.channels, (3, 3, 3))(nn.silu(nn.GroupNorm(norm_groups(x.shape[-1]))(x)))
    h = nn.Conv(self.channels, (3, 3, 3), kernel_init=nn.initializers.zeros)(
        nn.silu(nn.GroupNorm(norm_groups(self.channels))(h)))
    if x.shape[-1] != self.channels:
      x = nn.Conv(self.channels, (1, 1, 1))(x)
    return x + h


def _blocks(remat: bool):
  """Residual block classes, rematerialised in the backward pass when `remat`.

  Recomputing block activations instead of storing them is what lets the paper
  config (512x512, six decodes per example) fit in accelerator memory.
  """
  if remat:
    return nn.remat(ResBlock2D), nn.remat(ResBlock3D)
  return ResBlock2D, ResBlock3D


class Downsampler(nn.Module):
  """Conv stem and strided stages; returns the last feature map.

  With `tap_size`, returns `(last, tapped)`: also the features at that resolution,
  before its stage halves them.
  """
  widths: Sequence[int]
  remat: bool = False
  tap_size: int = 0

  @nn.compact
  def __call__(self, img, extra=None):
    """`extra`: a second image at the same size (e.g. the rectified face), added after the stem
    through its own zero-initialised conv, so weights trained without it start unchanged."""
    block2d, _ = _blocks(self.remat)
    x = nn.Conv(self.widths[0], (3, 3))(img * 2.0 - 1.0)
    if extra is not None:
      x = x + nn.Conv(self.widths[0], (3, 3), kernel_init=nn.initializers.zeros, name="extra_in")(extra * 2.0 - 1.0)
    tapped = None
    for w in self.widths:
      x = block2d(w)(x)
      if self.tap_size and x.shape[1] == self.tap_size:
        tapped = x
      x = nn.Conv(w, (3, 3), strides=(2, 2))(nn.silu(x))
    if not self.tap_size:
      return x
    if tapped is None:
      raise ValueError(f"no encoder stage runs at {self.tap_size}px (image {img.shape[1]}px, "
                       f"{len(self.widths)} halvings)")
    return x, tapped


def space_to_depth(img_BxHxWxC, f: int):
  """[B, H, W, C] -> [B, H/f, W/f, f*f*C]: a lossless downscale (every pixel is kept)."""
  b, h, w, c = img_BxHxWxC.shape
  x = img_BxHxWxC.reshape(b, h // f, f, w // f, f, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // f, w // f, f * f * c)


def depth_to_space(x_BxhxwxF, f: int):
  """[B, h, w, f*f*C] -> [B, h*f, w*f, C]: the inverse of `space_to_depth` (sub-pixel output)."""
  if f == 1:
    return x_BxhxwxF
  b, h, w, c = x_BxhxwxF.shape
  c //= f * f
  return x_BxhxwxF.reshape(b, h, w, f, f, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h * f, w * f, c)


class VectorEncoder(nn.Module):
  """Image -> vector (identity, pose and dynamics each have their own).

  The encoder's convolutions run at `input_size`. A larger image is brought there
  by resizing, or, with `s2d`, by folding f x f pixel blocks into channels: the
  same cost after the first layer, but a mouth or an eye a few pixels wide stays
  visible instead of being averaged away.
  """
  widths: Sequence[int]
  out_dim: int
  input_size: int
  remat: bool = False
  s2d: bool = False

  @nn.compact
  def __call__(self, img, extra=None):
    """`extra`: an `input_size`^2 image read beside `img` (`Downsampler`)."""
    size = img.shape[1]
    if size != self.input_size:
      if self.s2d and size > self.input_size and size % self.input_size == 0:
        img = space_to_depth(img, size // self.input_size)
      else:
        img = jax.image.resize(img, (img.shape[0], self.input_size, self.input_size, 3), "linear")
    x = Downsampler(self.widths, self.remat)(img, extra)
    x = nn.silu(nn.GroupNorm(norm_groups(x.shape[-1]))(x))
    x = jnp.concatenate([x.mean(axis=(1, 2)), x.max(axis=(1, 2))], axis=-1)
    x = nn.silu(nn.Dense(2 * self.out_dim)(x))
    return nn.Dense(self.out_dim)(x)


class PoseEncoder(nn.Module):
  widths: Sequence[int]
  input_size: int
  remat: bool = False
  s2d: bool = False

  @nn.compact
  def __call__(self, img):
    raw = VectorEncoder(self.widths, POSE_DIM, self.input_size, self.remat, self.s2d)(img)
    return jnp.tanh(raw) * jnp.array(_POSE_LIMITS, raw.dtype)


def pose_to_transform(z_pose_Bx6):
  """(yaw, pitch, roll, tx, ty, log_scale) -> rotation [B,3,3], translation [B,3], scale [B]."""
  rot = warp.rotation_matrix(z_pose_Bx6[:, 0], z_pose_Bx6[:, 1], z_pose_Bx6[:, 2])
  trans = jnp.stack([z_pose_Bx6[:, 3], z_pose_Bx6[:, 4], jnp.zeros_like(z_pose_Bx6[:, 3])], -1)
  return rot, trans, jnp.exp(z_pose_Bx6[:, 5])


class FlowGenerator(nn.Module):
  """Codes -> a smooth 3D flow field at half the volume's resolution, upsampled.

  The coarse grid keeps the non-rigid deformation low-frequency (faces deform
  smoothly) and the generator cheap; `max_flow` bounds it in grid units.
  """
  shape_dhw: tuple[int, int, int]
  channels: int
  max_flow: float = 0.25
  remat: bool = False

  @nn.compact
  def __call__(self, *codes):
    _, block3d = _blocks(self.remat)
    d, h, w = (max(1, s // 2) for s in self.shape_dhw)
    d0, h0, w0 = max(1, d // 2), max(1, h // 2), max(1, w // 2)
    x = nn.silu(nn.Dense(256)(jnp.concatenate(codes, axis=-1)))
    x = nn.Dense(d0 * h0 * w0 * self.channels)(x).reshape(-1, d0, h0, w0, self.channels)
    x = block3d(self.channels)(x)
    x = jax.image.resize(x, (x.shape[0], d, h, w, self.channels), "linear")
    x = block3d(self.channels)(x)
    flow = nn.Conv(3, (3, 3, 3), kernel_init=nn.initializers.zeros)(nn.silu(x))
    flow = self.max_flow * jnp.tanh(flow)
    return warp.resize_flow(flow, self.shape_dhw)


class AppearanceEncoder(nn.Module):
  """Image -> posed feature volume `[B, D, S, S, Cv]` (warped to canonical by FaceLatent).

  With `skip_channels`, also a 2D feature map of the source at twice the volume's
  resolution, `[B, 2S, 2S, Cs]`: the detail (eyes, lips, teeth) that a volume of
  S^2 voxels averages away. The decoder brings it to the target pose in one
  resample (`warp.plane_grid`) and feeds it to the renderer at that resolution.
  """
  widths: Sequence[int]
  vol_channels: int
  vol_depth: int
  vol_size: int
  remat: bool = False
  skip_channels: int = 0
  vol_blocks: int = 1       # 3D residual blocks on the posed volume (slow on CPUs)

  @nn.compact
  def __call__(self, img):
    _, block3d = _blocks(self.remat)
    skip = None
    if self.skip_channels:
      x, tapped = Downsampler(self.widths, self.remat, tap_size=2 * self.vol_size)(img)
      skip = nn.Conv(self.skip_channels, (1, 1))(nn.silu(tapped))
    else:
      x = Downsampler(self.widths, self.remat)(img)
    if x.shape[1] != self.vol_size:
      x = jax.image.resize(x, (x.shape[0], self.vol_size, self.vol_size, x.shape[-1]), "linear")
    x = nn.silu(nn.GroupNorm(norm_groups(x.shape[-1]))(x))
    x = nn.Conv(self.vol_channels * self.vol_depth, (1, 1))(x)
    b, s = x.shape[0], self.vol_size
    # [B, S, S, D*Cv] -> [B, D, S, S, Cv]
    vol = x.reshape(b, s, s, self.vol_depth, self.vol_channels).transpose(0, 3, 1, 2, 4)
    for _ in range(self.vol_blocks):
      vol = block3d(self.vol_channels)(vol)
    return vol, skip


class Renderer(nn.Module):
  """Warped volume -> image: 3D refinement, projection to 2D, modulated 2D generator."""
  vol_blocks: int
  widths: Sequence[int]          # 2D widths from the volume's resolution upwards
  image_size: int
  remat: bool = False
  # >1: the last conv predicts shuffle^2 sub-pixels per location (depth-to-space), so no
  # layer runs at full resolution. On CPUs, where wide convs are far more efficient than
  # full-resolution thin ones, this is what makes the demo config real time.
  out_shuffle: int = 1

  @nn.compact
  def __call__(self, vol_BxDxSxSxC, cond, skip_Bx2Sx2SxC=None):
    """`cond` modulates every 2D block (FiLM): z_id, or z_id with z_dyn (`render_dyn`).

    `skip_Bx2Sx2SxC`, the source's warped 2D features, joins at twice the volume's resolution.
    """
    block2d, block3d = _blocks(self.remat)
    x = vol_BxDxSxSxC
    for _ in range(self.vol_blocks):
      x = block3d(x.shape[-1])(x)
    b, d, s, _, c = x.shape
    x = x.transpose(0, 2, 3, 1, 4).reshape(b, s, s, d * c)  # Depth folded into channels.
    x = nn.Conv(self.widths[0], (1, 1))(x)
    x = block2d(self.widths[0])(x, cond)
    x = block2d(self.widths[0])(x, cond)
    for w in self.widths[1:]:
      x = jax.image.resize(x, (b, x.shape[1] * 2, x.shape[2] * 2, x.shape[3]), "nearest")
      if skip_Bx2Sx2SxC is not None and x.shape[1] == skip_Bx2Sx2SxC.shape[1]:
        x = jnp.concatenate([x, skip_Bx2Sx2SxC], -1)
      x = block2d(w)(x, cond)
    f = self.out_shuffle
    if x.shape[1] * f != self.image_size:
      raise ValueError(f"renderer reaches {x.shape[1] * f}px, config asks for {self.image_size}px: "
                       "vol_size * 2^(len(gen_widths) - 1) * out_shuffle must equal image_size")
    x = nn.silu(nn.GroupNorm(norm_groups(x.shape[-1]))(x))
    x = nn.Conv(3 * f * f, (3, 3))(x)
    return nn.sigmoid(depth_to_space(x, f))


class FiLMBlock(nn.Module):
  """Norm-free residual block: conv, FiLM by a code, conv (zero-initialised, so it starts as identity).

  No normalisation layers: on a CPU their reductions and extra passes over the
  activations cost more than the convolutions they surround.
  """
  channels: int

  @nn.compact
  def __call__(self, x, cond):
    if x.shape[-1] != self.channels:
      x = nn.Conv(self.channels, (1, 1))(x)
    h = nn.Conv(self.channels, (3, 3))(nn.silu(x))
    gamma, beta = jnp.split(nn.Dense(2 * self.channels, kernel_init=nn.initializers.zeros)(cond)[:, None, None, :],
                            2, axis=-1)
    h = nn.silu(h * (1.0 + gamma) + beta)
    return x + nn.Conv(self.channels, (3, 3), kernel_init=nn.initializers.zeros)(h)


class CanonicalDynMap(nn.Module):
  """Codes -> a feature map drawn in canonical face coordinates: `count` learned templates
  `[2S, 2S, channels]`, mixed by weights the codes choose.

  FiLM modulation is the same at every pixel, so the renderer can only find where to paint
  closed eyelids or a turned iris through the source's features. A template lives at fixed
  canonical coordinates, where every face's eyes are at about the same place; `decode` brings
  the mix to the target pose with the face plane's warp, so the renderer receives "what the
  dynamics ask for, here" as a spatial input.
  """
  count: int
  channels: int
  size: int

  @nn.compact
  def __call__(self, *codes):
    w = nn.Dense(self.count)(nn.silu(nn.Dense(128)(jnp.concatenate(codes, axis=-1))))
    templates = self.param("templates", nn.initializers.normal(0.5),
                           (self.count, self.size, self.size, self.channels))
    return jnp.einsum("bk,khwc->bhwc", w, templates)


class UNetRenderer(nn.Module):
  """Warped volume + the source's warped 2D skip -> image, through a small U-Net.

  The skip (source features and pixels brought to the target pose, plus the
  source's own pixels for what does not move with the head) enters at 2S; the
  projected volume joins at S; a bottleneck at S/2 sees the whole face, which is
  what it takes to paint a mouth or closed eyelids where the code asks for them.
  Widths are `(at 2S, at S, at S/2)`; the last conv predicts `out_shuffle`^2
  sub-pixels per location.
  """
  widths: Sequence[int]
  image_size: int
  out_shuffle: int = 2

  @nn.compact
  def __call__(self, vol_BxDxSxSxC, cond, skip_Bx2Sx2SxC, pixels_BxHxWx3=None, dyn_map_Bx2Sx2SxC=None):
    """`pixels_BxHxWx3`: the source's pixels warped to the target pose (`FaceLatent.decode`); when
    given, a predicted per-pixel share of each output pixel is copied from them (`pixel_blend`).
    `dyn_map_Bx2Sx2SxC`: `CanonicalDynMap`'s output at the target pose (`face.dyn_templates`)."""
    w2, w1, w0 = self.widths
    b, d, s, _, c = vol_BxDxSxSxC.shape
    vol = vol_BxDxSxSxC.transpose(0, 2, 3, 1, 4).reshape(b, s, s, d * c)  # Depth folded into channels.
    x2 = nn.Conv(w2, (3, 3))(skip_Bx2Sx2SxC)
    if dyn_map_Bx2Sx2SxC is not None:
      # Zero-initialised: a renderer trained without the map starts exactly as it was.
      x2 = x2 + nn.Conv(w2, (3, 3), kernel_init=nn.initializers.zeros, name="dyn_map_in")(dyn_map_Bx2Sx2SxC)
    x2 = FiLMBlock(w2)(x2, cond)                                                        # 2S
    x1 = nn.Conv(w1, (3, 3), strides=(2, 2))(nn.silu(x2))
    x1 = FiLMBlock(w1)(jnp.concatenate([x1, nn.Conv(w1, (1, 1))(vol)], -1), cond)      # S
    x0 = nn.Conv(w0, (3, 3), strides=(2, 2))(nn.silu(x1))
    x0 = FiLMBlock(w0)(FiLMBlock(w0)(x0, cond), cond)                                   # S/2
    up = lambda x: jax.image.resize(x, (b, x.shape[1] * 2, x.shape[2] * 2, x.shape[3]), "nearest")  # noqa: E731
    x1 = FiLMBlock(w1)(jnp.concatenate([x1, up(x0)], -1), cond)
    x2 = FiLMBlock(w2)(jnp.concatenate([x2, up(x1)], -1), cond)
    f = self.out_shuffle
    if x2.shape[1] * f != self.image_size:
      raise ValueError(f"U-Net renderer reaches {x2.shape[1] * f}px, config asks for {self.image_size}px: "
                       "2 * vol_size * out_shuffle must equal image_size")
    rgb = nn.sigmoid(depth_to_space(nn.Conv(3 * f * f, (3, 3))(nn.silu(x2)), f))
    if pixels_BxHxWx3 is None:
      return rgb
    # Copy what the motion leaves unchanged at full resolution (skin, hair, the eyes' own detail)
    # and paint only what changed: a convolution is a poor copier of sharp 1-pixel detail. The
    # share starts small (sigmoid(-2) = 0.12) so a renderer trained without it starts near itself.
    share = nn.Conv(f * f, (3, 3), kernel_init=nn.initializers.zeros,
                    bias_init=nn.initializers.constant(-2.0), name="blend")(nn.silu(x2))
    share = nn.sigmoid(depth_to_space(share, f))
    return share * pixels_BxHxWx3 + (1.0 - share) * rgb


class FaceLatent(nn.Module):
  """The whole stage-1 model: `encode` a face, `decode` any pose/dynamics onto it."""
  cfg: ml_collections.ConfigDict

  def setup(self):
    c = self.cfg
    shape = (c.vol_depth, c.vol_size, c.vol_size)
    r = c.remat
    self.appearance = AppearanceEncoder(c.enc_widths, c.vol_channels, c.vol_depth, c.vol_size, remat=r,
                                        skip_channels=c.skip_channels, vol_blocks=c.enc_vol_blocks)
    self.identity = VectorEncoder(c.motion_widths, c.z_id, c.motion_input, remat=r)
    self.pose = PoseEncoder(c.motion_widths, c.motion_input, remat=r, s2d=c.motion_s2d)
    self.dynamics = VectorEncoder(c.motion_widths, c.z_dyn, c.motion_input, remat=r, s2d=c.motion_s2d)
    self.to_canonical = FlowGenerator(shape, c.flow_channels, remat=r)
    self.from_canonical = FlowGenerator(shape, c.flow_channels, remat=r)
    if c.render_unet:
      self.renderer = UNetRenderer(c.unet_widths, c.image_size, c.out_shuffle)
    else:
      self.renderer = Renderer(c.render_vol_blocks, c.gen_widths, c.image_size, remat=r, out_shuffle=c.out_shuffle)
    if c.get("dyn_templates", 0):
      if not (c.render_unet and c.skip_channels):
        raise ValueError("face.dyn_templates needs face.render_unet and face.skip_channels")
      self.dyn_map = CanonicalDynMap(c.dyn_templates, c.dyn_template_channels, 2 * c.vol_size)

  def __call__(self, src, drv):
    """Reconstructs `drv` from `src`'s appearance (used for init and the plain loss)."""
    app = self.encode(src)
    motion = self.encode_motion(drv)
    return self.decode(app, motion["z_pose"], motion["z_dyn"])

  def encode_motion(self, img):
    z_pose = self.pose(img)
    return {"z_pose": z_pose, "z_dyn": self.dynamics(img, self.rectified(img, z_pose))}

  def rectified(self, img, z_pose):
    """With `motion_rectify`: the face as seen frontally, `motion_input`^2 pixels of the canonical
    square around eyes and mouth (`RECT_CENTER +- RECT_HALF`), the head's rotation, position and
    scale undone by the pose encoder's own reading (no gradient flows back into it). Else None."""
    if not self.cfg.get("motion_rectify", False):
      return None
    rot, trans, scale = pose_to_transform(jax.lax.stop_gradient(z_pose))
    n = self.cfg.motion_input
    grid = warp.canonical_crop_grid(rot, trans, scale, (n, n), self.cfg.skip_depth, RECT_CENTER, RECT_HALF)
    return warp.sample_volume(img[:, None], grid)[:, 0]

  def encode(self, img, motion=None):
    """All latents of `img`; `v_app` is already in canonical space, `f_app` (skip) stays posed.

    `motion`: `encode_motion(img)` when the caller already ran it on a larger batch that holds
    `img` (one copy of the motion encoders in a compiled step instead of two).
    """
    z_id = self.identity(img)
    if motion is None:
      motion = self.encode_motion(img)
    posed, skip = self.appearance(img)
    rot, trans, scale = pose_to_transform(motion["z_pose"])
    # Canonical point q is seen at p = sR q + t in the source: sample the posed volume there.
    flow = self.to_canonical(motion["z_dyn"], z_id)
    grid = warp.rigid_grid(rot, trans, scale, posed.shape[1:4], inverse=False) + flow
    v_app = warp.sample_volume(posed, grid)
    out = {"v_app": v_app, "z_id": z_id, **motion}
    if skip is not None:
      out["f_app"] = skip
    if self.cfg.skip_pixels:
      out["src_img"] = img
    if self.cfg.render_unet:
      out["src_dyn"] = motion["z_dyn"]
    return out

  def decode(self, app, z_pose, z_dyn):
    """D(V_app, z_id, z_pose, z_dyn) -> image [B, H, W, 3].

    `app` holds `v_app` and `z_id`; with the 2D skip also `f_app` and the source's
    own `z_pose`, which places it (`app_keys` lists what decode reads).
    """
    rot, trans, scale = pose_to_transform(z_pose)
    flow = self.from_canonical(z_dyn, app["z_id"])
    vol = warp.warp_volume(app["v_app"], rot, trans, scale, flow, inverse=True)
    skip = pix = None
    if self.cfg.skip_channels:
      rot_s, trans_s, scale_s = pose_to_transform(app["z_pose"])
      f = app["f_app"]
      grid = warp.plane_grid(rot, trans, scale, rot_s, trans_s, scale_s, f.shape[1:3], self.cfg.skip_depth)
      skip = warp.sample_volume(f[:, None], grid)[:, 0]
      if self.cfg.skip_pixels:
        # The source's own pixels, warped at full resolution by the same plane and folded 2x2
        # into channels: copying what is unchanged (skin, hair, eyes' colours) is then a linear
        # map to the 2x2 sub-pixel output, and the network's work is what the motion changes.
        img = app["src_img"]
        grid = warp.plane_grid(rot, trans, scale, rot_s, trans_s, scale_s, img.shape[1:3], self.cfg.skip_depth)
        pix = warp.sample_volume(img[:, None], grid)[:, 0]
        fold = img.shape[1] // f.shape[1]
        skip = jnp.concatenate([skip, space_to_depth(pix * 2.0 - 1.0, fold)], -1)
        if self.cfg.render_unet:
          # The unwarped source too: background and shoulders do not move with the head.
          skip = jnp.concatenate([skip, space_to_depth(img * 2.0 - 1.0, fold)], -1)
    # A warp only moves features that exist: a mouth closed in the source has no
    # interior to move. With `render_dyn` the renderer also sees z_dyn, so it can
    # paint what the dynamics ask for (an open mouth, closed eyelids).
    cond = jnp.concatenate([app["z_id"], z_dyn], -1) if self.cfg.render_dyn else app["z_id"]
    if self.cfg.render_unet:
      # What changes from source to target (pose and dynamics) is what the renderer must draw.
      cond = jnp.concatenate([cond, app["src_dyn"], z_pose, app["z_pose"]], -1)
    extra = {}
    if self.cfg.get("dyn_templates", 0):
      # Drawn in canonical coordinates (pose zero), brought to the target pose by the face plane.
      dmap = self.dyn_map(z_dyn, app["src_dyn"], app["z_id"])
      eye = jnp.broadcast_to(jnp.eye(3, dtype=rot.dtype), rot.shape)
      grid = warp.plane_grid(rot, trans, scale, eye, jnp.zeros_like(trans), jnp.ones_like(scale),
                             dmap.shape[1:3], self.cfg.skip_depth)
      extra["dyn_map_Bx2Sx2SxC"] = warp.sample_volume(dmap[:, None], grid)[:, 0]
    if self.cfg.pixel_blend:
      if not (self.cfg.render_unet and pix is not None):
        raise ValueError("face.pixel_blend needs face.render_unet, face.skip_channels and face.skip_pixels")
      return self.renderer(vol, cond, skip, pix, **extra)
    return self.renderer(vol, cond, skip, **extra)


def app_keys(face_cfg) -> tuple[str, ...]:
  """The entries of `encode`'s output that `decode` reads as the portrait's appearance."""
  keys = ("v_app", "z_id")
  if face_cfg.skip_channels:
    keys += ("f_app", "z_pose") + (("src_img",) if face_cfg.skip_pixels else ())
  if face_cfg.render_unet:
    keys += ("src_dyn",)
  return keys
