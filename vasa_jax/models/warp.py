"""3D warps of feature volumes: rotations, rigid and flow grids, trilinear sampling.

Volumes are channels-last, `vol_BxDxHxWxC`, the layout Flax convolutions use and
the one that makes each trilinear corner a contiguous C-vector gather. Sampling
grids hold normalised coordinates `(x, y, z)` in [-1, 1]: -1 is the centre of the
first voxel and +1 the centre of the last along W, H and D respectively; points
outside the volume read zeros.

Rotation convention (shared with the synthetic corpus): x right, y up, z towards
the viewer; `R = Rz(roll) @ Rx(-pitch) @ Ry(-yaw)`, so positive yaw turns the face
to the viewer's left and positive pitch tilts it up. Volumes index rows top to
bottom like images, so grids flip y before and after rotating: a pose means the
same thing in the volume as in the picture. Translations are in the same y-up
frame, in units of the volume's half-extent.
"""

import jax
import jax.numpy as jnp


def rotation_matrix(yaw: jax.Array, pitch: jax.Array, roll: jax.Array) -> jax.Array:
  """Rotation matrices `[..., 3, 3]` from yaw/pitch/roll angles in radians."""
  cy, sy = jnp.cos(-yaw), jnp.sin(-yaw)
  cp, sp = jnp.cos(-pitch), jnp.sin(-pitch)
  cr, sr = jnp.cos(roll), jnp.sin(roll)
  one, zero = jnp.ones_like(cy), jnp.zeros_like(cy)
  ry = jnp.stack([jnp.stack([cy, zero, sy], -1),
                  jnp.stack([zero, one, zero], -1),
                  jnp.stack([-sy, zero, cy], -1)], -2)
  rx = jnp.stack([jnp.stack([one, zero, zero], -1),
                  jnp.stack([zero, cp, -sp], -1),
                  jnp.stack([zero, sp, cp], -1)], -2)
  rz = jnp.stack([jnp.stack([cr, -sr, zero], -1),
                  jnp.stack([sr, cr, zero], -1),
                  jnp.stack([zero, zero, one], -1)], -2)
  return rz @ rx @ ry


def identity_grid(depth: int, height: int, width: int, dtype=jnp.float32) -> jax.Array:
  """Grid `[D, H, W, 3]` whose samples reproduce the volume exactly."""
  z = jnp.linspace(-1.0, 1.0, depth, dtype=dtype)
  y = jnp.linspace(-1.0, 1.0, height, dtype=dtype)
  x = jnp.linspace(-1.0, 1.0, width, dtype=dtype)
  zz, yy, xx = jnp.meshgrid(z, y, x, indexing="ij")
  return jnp.stack([xx, yy, zz], axis=-1)


def rigid_grid(rot_Bx3x3: jax.Array, trans_Bx3: jax.Array, scale_B: jax.Array,
               shape_dhw: tuple[int, int, int], *, inverse: bool = False) -> jax.Array:
  """Where each output voxel reads from under `p -> s R p + t` (or its inverse).

  To render a canonical volume in a target pose, sample the canonical volume at
  the inverse transform of the output coordinates: `inverse=True`. To bring a
  posed volume back to canonical space, sample it at the forward transform.
  Returns `[B, D, H, W, 3]`.
  """
  flip = jnp.array([1.0, -1.0, 1.0], rot_Bx3x3.dtype)  # Volume rows run downwards.
  rot_Bx3x3 = rot_Bx3x3 * flip[:, None] * flip[None, :]
  trans_Bx3 = trans_Bx3 * flip
  base_N3 = identity_grid(*shape_dhw).reshape(-1, 3)
  scale_B = scale_B.reshape(-1, 1, 1)
  if inverse:
    # p = s R q + t  =>  q = R^T (p - t) / s. Row vectors: (p - t) @ R / s.
    pts = ((base_N3[None] - trans_Bx3[:, None, :]) @ rot_Bx3x3) / scale_B
  else:
    pts = scale_B * (base_N3[None] @ jnp.swapaxes(rot_Bx3x3, -1, -2)) + trans_Bx3[:, None, :]
  return pts.reshape((-1,) + tuple(shape_dhw) + (3,))


def sample_volume(vol_BxDxHxWxC: jax.Array, grid_BxdxhxwX3: jax.Array) -> jax.Array:
  """Trilinear sampling of a volume at normalised grid points; zeros outside.

  Returns `[B, d, h, w, C]` for a grid of shape `[B, d, h, w, 3]`. Eight gathers
  of C-vectors from the flattened volume, weighted and summed: memory-bound and
  cheap in FLOPs, with exact gradients for both the volume and the grid.
  """
  b, d, h, w, c = vol_BxDxHxWxC.shape
  out_shape = grid_BxdxhxwX3.shape[:-1]
  g = grid_BxdxhxwX3.reshape(b, -1, 3).astype(vol_BxDxHxWxC.dtype)
  # Normalised -> voxel coordinates (centre of the first voxel at -1).
  x = (g[..., 0] + 1.0) * 0.5 * (w - 1)
  y = (g[..., 1] + 1.0) * 0.5 * (h - 1)
  z = (g[..., 2] + 1.0) * 0.5 * (d - 1)
  x0, y0, z0 = jnp.floor(x), jnp.floor(y), jnp.floor(z)
  fx, fy, fz = x - x0, y - y0, z - z0
  x0, y0, z0 = x0.astype(jnp.int32), y0.astype(jnp.int32), z0.astype(jnp.int32)
  flat_BxNxC = vol_BxDxHxWxC.reshape(b, d * h * w, c)

  out = jnp.zeros(g.shape[:2] + (c,), vol_BxDxHxWxC.dtype)
  for dz in (0, 1):
    zi, wz = z0 + dz, fz if dz else 1.0 - fz
    for dy in (0, 1):
      yi, wy = y0 + dy, fy if dy else 1.0 - fy
      for dx in (0, 1):
        xi, wx = x0 + dx, fx if dx else 1.0 - fx
        inside = ((xi >= 0) & (xi < w) & (yi >= 0) & (yi < h) & (zi >= 0) & (zi < d))
        idx = (jnp.clip(zi, 0, d - 1) * h + jnp.clip(yi, 0, h - 1)) * w + jnp.clip(xi, 0, w - 1)
        corner = jnp.take_along_axis(flat_BxNxC, idx[..., None], axis=1)
        weight = jnp.where(inside, wx * wy * wz, 0.0)
        out = out + corner * weight[..., None]
  return out.reshape(out_shape + (c,))


def warp_volume(vol_BxDxHxWxC: jax.Array, rot_Bx3x3: jax.Array, trans_Bx3: jax.Array, scale_B: jax.Array,
                flow_BxDxHxWx3: jax.Array | None = None, *, inverse: bool = True) -> jax.Array:
  """Rigid transform plus an optional dense 3D flow (added to the sampling grid)."""
  grid = rigid_grid(rot_Bx3x3, trans_Bx3, scale_B, vol_BxDxHxWxC.shape[1:4], inverse=inverse)
  if flow_BxDxHxWx3 is not None:
    grid = grid + flow_BxDxHxWx3
  return sample_volume(vol_BxDxHxWxC, grid)


def resize_flow(flow_BxdxhxwX3: jax.Array, shape_dhw: tuple[int, int, int]) -> jax.Array:
  """Trilinearly upsamples a coarse flow field to the volume's resolution."""
  b = flow_BxdxhxwX3.shape[0]
  grid = jnp.broadcast_to(identity_grid(*shape_dhw), (b,) + tuple(shape_dhw) + (3,))
  return sample_volume(flow_BxdxhxwX3, grid)


def plane_grid(rot_t, trans_t, scale_t, rot_s, trans_s, scale_s, hw: tuple[int, int],
               depth: float) -> jax.Array:
  """Where each target pixel reads from in the source image, through a plane of the face.

  A 2D feature map of the source (posed by `s_s R_s q + t_s`) is brought to the
  target pose (`s_t R_t q + t_t`) in one resample, not two: every target pixel
  is taken back to the canonical point q on the plane `q_z = depth` that it
  shows, and that point is projected forward into the source. Orthographic, so
  the map is affine per example. Returns `[B, 1, H, W, 3]` (z = 0) for
  `sample_volume` on a `[B, 1, H, W, C]` map.
  """
  flip = jnp.array([1.0, -1.0, 1.0], rot_t.dtype)  # Image rows run downwards.
  a_t = (scale_t.reshape(-1, 1, 1) * rot_t) * flip[:, None] * flip[None, :]
  a_s = (scale_s.reshape(-1, 1, 1) * rot_s) * flip[:, None] * flip[None, :]
  t_t, t_s = trans_t * flip, trans_s * flip
  h, w = hw
  y = jnp.linspace(-1.0, 1.0, h, dtype=rot_t.dtype)
  x = jnp.linspace(-1.0, 1.0, w, dtype=rot_t.dtype)
  yy, xx = jnp.meshgrid(y, x, indexing="ij")
  p_N2 = jnp.stack([xx, yy], -1).reshape(-1, 2)
  # p_xy = A[:2, :2] q_xy + A[:2, 2] depth + t_xy, solved for q_xy (row vectors).
  rhs_BxNx2 = p_N2[None] - (t_t[:, None, :2] + depth * a_t[:, None, :2, 2])
  q_BxNx2 = rhs_BxNx2 @ jnp.swapaxes(jnp.linalg.inv(a_t[:, :2, :2]), -1, -2)
  src_BxNx2 = q_BxNx2 @ jnp.swapaxes(a_s[:, :2, :2], -1, -2) + depth * a_s[:, None, :2, 2] + t_s[:, None, :2]
  grid = jnp.concatenate([src_BxNx2, jnp.zeros_like(src_BxNx2[..., :1])], -1)
  return grid.reshape(-1, 1, h, w, 3)


def canonical_crop_grid(rot_s, trans_s, scale_s, hw: tuple[int, int], depth: float,
                        center_xy: tuple[float, float], half: float) -> jax.Array:
  """Where each pixel of a frontal view of the face plane lies in an image posed by `s_s R_s q + t_s`.

  The view covers the canonical square `center_xy +- half` (image orientation: x right, y down,
  [-1, 1] across the frame at pose zero), so a crop around eyes and mouth, undone of the head's
  rotation, position and scale. `plane_grid` with a virtual frontal target that zooms by `1 / half`.
  Returns `[B, 1, H, W, 3]` for `sample_volume` on a `[B, 1, H, W, C]` image.
  """
  b = rot_s.shape[0]
  eye = jnp.broadcast_to(jnp.eye(3, dtype=rot_s.dtype), (b, 3, 3))
  cx, cy = center_xy
  trans_v = jnp.broadcast_to(jnp.array([-cx / half, cy / half, 0.0], rot_s.dtype), (b, 3))
  scale_v = jnp.full((b,), 1.0 / half, rot_s.dtype)
  return plane_grid(eye, trans_v, scale_v, rot_s, trans_s, scale_s, hw, depth)
