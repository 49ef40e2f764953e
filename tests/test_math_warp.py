"""Rigid warps against analytic grids, both directions, and as a round trip."""

import jax.numpy as jnp
import numpy as np
import pytest

from vasa_jax.models import warp

FLIP = np.array([1.0, -1.0, 1.0])   # Volume rows run downwards; poses live in a y-up frame.
D, H, W = 9, 11, 13


def _pose(yaw, pitch, roll, trans, scale):
  rot = warp.rotation_matrix(jnp.array([yaw]), jnp.array([pitch]), jnp.array([roll]))
  return rot, jnp.array([trans], jnp.float32), jnp.array([scale], jnp.float32)


def _coords():
  return np.asarray(warp.identity_grid(D, H, W)).reshape(-1, 3)


@pytest.mark.parametrize("pose", [(0.4, -0.2, 0.25, (0.1, -0.05, 0.08), 1.1), (0.0, 0.0, 0.0, (0.2, 0.1, -0.1), 1.0),
                                  (-0.3, 0.5, 0.0, (0.0, 0.0, 0.0), 0.9)])
def test_forward_grid_reads_from_s_r_p_plus_t(pose):
  rot, trans, scale = _pose(*pose)
  grid = np.asarray(warp.rigid_grid(rot, trans, scale, (D, H, W), inverse=False)).reshape(-1, 3)
  r, t, s = np.asarray(rot[0]), np.asarray(trans[0]), float(scale[0])
  p = _coords() * FLIP
  np.testing.assert_allclose(grid, (s * p @ r.T + t) * FLIP, atol=1e-5)
  default = np.asarray(warp.rigid_grid(rot, trans, scale, (D, H, W))).reshape(-1, 3)   # inverse=False.
  np.testing.assert_array_equal(default, grid)
  inv = np.asarray(warp.rigid_grid(rot, trans, scale, (D, H, W), inverse=True)).reshape(-1, 3)
  np.testing.assert_allclose(inv, ((p - t) @ r / s) * FLIP, atol=1e-5)


def test_known_voxel_moves_where_the_pose_says():
  # Roll +90 degrees maps the y-up axis onto -x: the voxel at the top centre of the
  # canonical volume shows up at the left centre after rendering (inverse warp), and a
  # translation of +0.5 in x then shifts it right by a quarter of the width.
  d, h, w = 5, 9, 9
  vol = np.zeros((1, d, h, w, 1), np.float32)
  vol[0, d // 2, 0, w // 2] = 1.0                       # Top row (y = +1 in the y-up frame).
  rot, _, scale = _pose(0.0, 0.0, np.pi / 2, (0, 0, 0), 1.0)
  out = np.asarray(warp.warp_volume(jnp.asarray(vol), rot, jnp.zeros((1, 3)), scale, inverse=True))[0, ..., 0]
  assert out[d // 2, h // 2, 0] == pytest.approx(1.0, abs=1e-4) and out.sum() == pytest.approx(1.0, abs=1e-4)
  out = np.asarray(warp.warp_volume(jnp.asarray(vol), rot, jnp.array([[0.5, 0.0, 0.0]]), scale))[0, ..., 0]
  assert out[d // 2, h // 2, 2] == pytest.approx(1.0, abs=1e-4)
  # The forward warp brings the posed volume back: the left-centre voxel returns to the top.
  posed = np.zeros_like(vol)
  posed[0, d // 2, h // 2, 0] = 1.0
  back = np.asarray(warp.warp_volume(jnp.asarray(posed), rot, jnp.zeros((1, 3)), scale, inverse=False))[0, ..., 0]
  assert back[d // 2, 0, w // 2] == pytest.approx(1.0, abs=1e-4)
  # Translation +y (up) in the forward direction: the sample comes from one row higher.
  rot0, _, _ = _pose(0.0, 0.0, 0.0, (0, 0, 0), 1.0)
  shifted = np.asarray(warp.warp_volume(jnp.asarray(posed), rot0, jnp.array([[0.0, 0.25, 0.0]]), scale,
                                        inverse=False))[0, ..., 0]
  assert shifted[d // 2, h // 2 + 1, 0] == pytest.approx(1.0, abs=1e-4)


def test_forward_then_inverse_is_the_identity_inside_the_volume():
  # A linear field (each voxel holds its own coordinates) is sampled exactly by
  # trilinear interpolation, so forward-then-inverse must give the field back wherever
  # both warps stay inside the volume.
  vol = warp.identity_grid(D, H, W)[None]
  rot, trans, scale = _pose(0.3, -0.2, 0.15, (0.05, -0.04, 0.03), 0.8)
  canon = warp.warp_volume(vol, rot, trans, scale, inverse=False)
  back = np.asarray(warp.warp_volume(canon, rot, trans, scale, inverse=True)).reshape(-1, 3)
  inv = np.asarray(warp.rigid_grid(rot, trans, scale, (D, H, W), inverse=True)).reshape(-1, 3)
  fwd_of_inv = ((inv * FLIP) * 0.8 @ np.asarray(rot[0]).T + np.asarray(trans[0])) * FLIP
  inside = np.all(np.abs(inv) <= 0.999, axis=1) & np.all(np.abs(fwd_of_inv) <= 0.999, axis=1)
  assert inside.mean() > 0.2
  np.testing.assert_allclose(back[inside], _coords()[inside], atol=1e-4)
  # The grids themselves compose to the identity everywhere.
  np.testing.assert_allclose(fwd_of_inv, _coords(), atol=1e-5)


def test_sampling_outside_reads_zero_and_between_voxels_interpolates():
  vol = jnp.arange(2 * 2 * 2, dtype=jnp.float32).reshape(1, 2, 2, 2, 1)
  grid = jnp.array([[[[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [-1.0, -1.0, -1.0], [3.0, 0.0, 0.0]]]]])
  out = np.asarray(warp.sample_volume(vol, grid)).reshape(-1)
  np.testing.assert_allclose(out, [3.5, 7.0, 0.0, 0.0], atol=1e-6)
  # Half a voxel beyond the last centre: half the weight is outside and reads zero.
  pts = jnp.array([[[[[1.5, -1.0, -1.0], [-1.0, 1.5, -1.0], [-1.0, -1.0, 1.5]]]]])   # Along x, y and z.
  edge = np.asarray(warp.sample_volume(jnp.ones((1, 3, 3, 3, 1)), pts))
  np.testing.assert_allclose(edge.reshape(-1), [0.5, 0.5, 0.5], atol=1e-6)


def test_flow_is_added_to_the_sampling_grid():
  vol = warp.identity_grid(D, H, W)[None]
  rot, trans, scale = _pose(0.0, 0.0, 0.0, (0, 0, 0), 1.0)
  flow = jnp.broadcast_to(jnp.array([0.1, -0.2, 0.05]), (1, D, H, W, 3))
  out = np.asarray(warp.warp_volume(vol, rot, trans, scale, flow)).reshape(-1, 3)
  want = _coords() + np.array([0.1, -0.2, 0.05])
  inside = np.all(np.abs(want) <= 1.0, axis=1)
  np.testing.assert_allclose(out[inside], want[inside], atol=1e-5)
  # A linear flow field keeps its values when upsampled.
  coarse = warp.identity_grid(3, 5, 5)[None]
  up = np.asarray(warp.resize_flow(coarse, (D, H, W)))[0]
  np.testing.assert_allclose(up, np.asarray(warp.identity_grid(D, H, W)), atol=1e-5)


@pytest.mark.parametrize("depth", [0.0, 0.5])
def test_plane_grid_is_the_composed_rigid_map_on_the_face_plane(depth):
  # A canonical point q on the plane q_z = depth appears at p_t = s_t R_t q + t_t in the
  # target and at p_s = s_s R_s q + t_s in the source: the grid at p_t must read p_s.
  tgt = _pose(0.3, -0.15, 0.2, (0.1, -0.05, 0.0), 1.1)
  src = _pose(-0.2, 0.1, -0.1, (-0.05, 0.1, 0.0), 0.9)
  h, w = 7, 9
  grid = np.asarray(warp.plane_grid(*tgt, *src, (h, w), depth))
  assert grid.shape == (1, 1, h, w, 3) and np.all(grid[..., 2] == 0.0)
  rt, tt, st = (np.asarray(a[0]) for a in tgt)
  rs, ts, ss = (np.asarray(a[0]) for a in src)
  rng = np.random.default_rng(0)
  for _ in range(5):
    q = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), depth])
    p_t, p_s = st * rt @ q + tt, ss * rs @ q + ts
    # Pixel (row, col) of p_t on the grid; rows run downwards (y flipped).
    col, row = (p_t[0] + 1) / 2 * (w - 1), (-p_t[1] + 1) / 2 * (h - 1)
    r0, c0 = int(np.floor(row)), int(np.floor(col))
    fr, fc = row - r0, col - c0
    g = grid[0, 0, ..., :2]
    at = ((1 - fr) * (1 - fc) * g[r0, c0] + (1 - fr) * fc * g[r0, c0 + 1]
          + fr * (1 - fc) * g[r0 + 1, c0] + fr * fc * g[r0 + 1, c0 + 1])   # The map is affine: exact.
    np.testing.assert_allclose(at, p_s[:2] * FLIP[:2], atol=1e-5)


def test_plane_grid_of_equal_poses_reproduces_the_map():
  pose = _pose(0.25, 0.1, -0.3, (0.1, 0.2, 0.0), 1.2)
  img = np.random.default_rng(1).normal(size=(1, 1, 6, 8, 3)).astype(np.float32)
  grid = warp.plane_grid(*pose, *pose, (6, 8), 0.5)
  np.testing.assert_allclose(np.asarray(warp.sample_volume(jnp.asarray(img), grid)), img, atol=1e-5)
