"""3D warps: identity is a no-op, rotations match the analytic result, gradients are right."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

from vasa_jax.models import warp


def _rand(shape, seed=0):
  return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def test_identity_warp_is_a_no_op():
  vol = _rand((2, 5, 7, 6, 3))
  rot = jnp.broadcast_to(jnp.eye(3), (2, 3, 3))
  out = warp.warp_volume(vol, rot, jnp.zeros((2, 3)), jnp.ones((2,)))
  np.testing.assert_allclose(out, vol, atol=1e-5)
  np.testing.assert_allclose(warp.rotation_matrix(*jnp.zeros((3,))), jnp.eye(3), atol=1e-7)


def test_rotation_matrices_are_orthonormal_and_compose_the_documented_way():
  ang = _rand((4, 3), seed=1)
  r = warp.rotation_matrix(ang[:, 0], ang[:, 1], ang[:, 2])
  np.testing.assert_allclose(r @ jnp.swapaxes(r, -1, -2), jnp.broadcast_to(jnp.eye(3), (4, 3, 3)), atol=1e-5)
  np.testing.assert_allclose(jnp.linalg.det(r), 1.0, atol=1e-5)
  nose = jnp.array([0.0, 0.0, 1.0])
  assert (warp.rotation_matrix(0.3, 0.0, 0.0) @ nose)[0] < -0.2   # Yaw > 0: to the viewer's left.
  assert (warp.rotation_matrix(0.0, 0.3, 0.0) @ nose)[1] > 0.2    # Pitch > 0: up.
  top = jnp.array([0.0, 1.0, 0.0])
  assert (warp.rotation_matrix(0.0, 0.0, 0.3) @ top)[0] < -0.2    # Roll > 0: top of head to the left.


def test_known_rotation_matches_analytic_coordinates():
  # A volume whose channels hold each voxel's own (x, y, z): trilinear sampling of a
  # linear field is exact, so the warped volume must hold the analytic source points.
  d, h, w = 9, 11, 13
  vol = warp.identity_grid(d, h, w)[None]
  yaw, pitch, roll = 0.4, -0.2, 0.25
  rot = warp.rotation_matrix(jnp.array([yaw]), jnp.array([pitch]), jnp.array([roll]))
  trans = jnp.array([[0.1, -0.05, 0.0]])
  scale = jnp.array([1.1])
  out = warp.warp_volume(vol, rot, trans, scale)[0]
  flip = np.array([1.0, -1.0, 1.0])
  p = np.asarray(warp.identity_grid(d, h, w)).reshape(-1, 3)
  r = np.asarray(rot[0])
  # In the y-up frame: q = R^T (p - t) / s.
  q = (((p * flip) - np.asarray(trans[0])) @ r / 1.1) * flip
  inside = np.all(np.abs(q) <= 1.0, axis=1)
  assert inside.mean() > 0.3
  np.testing.assert_allclose(np.asarray(out).reshape(-1, 3)[inside], q[inside], atol=1e-4)


def test_positive_yaw_moves_a_front_feature_to_the_image_left():
  d, h, w = 9, 9, 9
  vol = np.zeros((1, d, h, w, 1), np.float32)
  vol[0, d - 2, h // 2, w // 2] = 1.0  # A "nose" near the front (z towards the viewer).
  rot = warp.rotation_matrix(jnp.array([0.6]), jnp.array([0.0]), jnp.array([0.0]))
  out = warp.warp_volume(jnp.asarray(vol), rot, jnp.zeros((1, 3)), jnp.ones((1,)))
  image_HxW = np.asarray(out[0, ..., 0].sum(axis=0))
  cols = np.arange(w)
  centre_x = (image_HxW.sum(axis=0) * cols).sum() / image_HxW.sum()
  assert centre_x < w // 2 - 1


def test_gradients_match_finite_differences():
  vol = _rand((1, 4, 5, 6, 2), seed=3)
  # Points away from voxel boundaries, where trilinear interpolation is smooth.
  grid = jax.random.uniform(jax.random.key(4), (1, 3, 4, 2, 3), minval=-0.9, maxval=0.9)
  check_grads(warp.sample_volume, (vol, grid), order=1, modes=("rev",), atol=2e-2, rtol=2e-2, eps=1e-3)


def test_resize_flow_keeps_a_constant_field():
  flow = jnp.full((2, 3, 4, 4, 3), 0.25)
  up = warp.resize_flow(flow, (6, 8, 8))
  assert up.shape == (2, 6, 8, 8, 3)
  np.testing.assert_allclose(up, 0.25, atol=1e-6)
