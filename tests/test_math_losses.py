"""Stage-1 losses on hand-made inputs: each term is zero exactly when its invariant holds, positive otherwise.

The generator is replaced by a fake whose latents are the images themselves, so which
image reaches which output is known exactly: `decode = ALPHA * appearance + (1 - ALPHA) * motion`,
where motion renders the pose latent's mean colour plus the dynamics latent's zero-mean pattern.
ALPHA = 0 is a perfectly disentangled generator (the output is the driver's motion,
whatever the appearance); ALPHA = 1 copies the appearance source.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vasa_jax import config
from vasa_jax.train import stage1

S = 64   # The tiny config's image size (discriminator and identity net are real modules).


def _imgs(seed, b=2):
  return jax.random.uniform(jax.random.key(seed), (b, S, S, 3))


class _FakeGen:
  """Latents that carry the whole image: appearance = pixels, dynamics = pixels, pose = mean colour."""

  def __init__(self, alpha):
    self.alpha = alpha

  @staticmethod
  def motion(gen_params, img):
    b = img.shape[0]
    pose = jnp.concatenate([img.mean((1, 2)), jnp.zeros((b, 3))], -1)
    return {"z_pose": pose, "z_dyn": img.reshape(b, -1)}

  def encode(self, gen_params, img, motion=None):
    own = self.motion(gen_params, img)
    if motion is not None:  # The step's batched motion: it must be these images' own.
      for k in own:
        np.testing.assert_array_equal(np.asarray(motion[k]), np.asarray(own[k]), err_msg=k)
    return {"v_app": img, "z_id": img.mean((1, 2)), **(own if motion is None else motion)}

  def decode(self, gen_params, app, z_pose, z_dyn):
    return self.alpha * app["v_app"] + (1.0 - self.alpha) * _mix(z_pose, z_dyn.reshape(app["v_app"].shape))


def _mix(z_pose, pattern):
  """What a pose (mean colour) and dynamics (pattern) render: the pattern moved to the pose's colour."""
  return pattern - pattern.mean((1, 2), keepdims=True) + z_pose[:, None, None, :3]


def _mixed(pose_img, dyn_img):
  return _mix(_FakeGen.motion(None, pose_img)["z_pose"], dyn_img)


@pytest.fixture(scope="module")
def task():
  cfg = config.load("tiny")
  t = stage1.Stage1(cfg, num_classes=4)
  img = jnp.zeros((1, S, S, 3))
  params = {"disc": t.disc.init(jax.random.key(1), img), "idnet": t.idnet.init(jax.random.key(2), img)}
  return t, params


def _terms(task, alpha, src, drv, other, gan_on=0.0, angles=None):
  t, params = task
  fake = _FakeGen(alpha)
  t.encode, t.encode_motion, t.decode = fake.encode, fake.motion, fake.decode
  batch = {"src": src, "drv": drv, "other": other}
  if angles is not None:
    batch.update(angles)
  total, (terms, out) = t.gen_loss(None, params, batch, jnp.float32(gan_on))
  return float(total), {k: float(v) for k, v in terms.items()}, out


def test_reconstruction_decodes_the_sources_appearance_with_the_drivers_motion(task):
  src, drv, other = _imgs(0), _imgs(1), _imgs(2)
  _, _, out = _terms(task, 1.0, src, drv, other)        # Decoder = appearance only.
  np.testing.assert_allclose(np.asarray(out["recon"]), np.asarray(src), atol=1e-6)
  np.testing.assert_allclose(np.asarray(out["cross"]), np.asarray(src), atol=1e-6)
  _, _, out = _terms(task, 0.0, src, drv, other)        # Decoder = motion only.
  np.testing.assert_allclose(np.asarray(out["recon"]), np.asarray(drv), atol=1e-6)
  np.testing.assert_allclose(np.asarray(out["cross"]), np.asarray(other), atol=1e-6)
  # The consistency pairs: V_j / V_i with pose_i (or pose_j) and the other's dynamics.
  _, _, out = _terms(task, 1.0, src, drv, other)
  for name, want in (("pose_j", drv), ("pose_i", src), ("dyn_j", drv), ("dyn_i", src)):
    np.testing.assert_allclose(np.asarray(out[name]), np.asarray(want), atol=1e-6, err_msg=name)
  _, _, out = _terms(task, 0.0, src, drv, other)
  for name, want in (("pose_j", _mixed(src, drv)), ("pose_i", _mixed(src, drv)), ("dyn_j", _mixed(drv, src)),
                     ("dyn_i", _mixed(drv, src))):
    np.testing.assert_allclose(np.asarray(out[name]), np.asarray(want), atol=1e-6, err_msg=name)


def test_a_perfectly_disentangled_generator_zeroes_every_reconstruction_term(task):
  src, drv, other = _imgs(0), _imgs(1), _imgs(2)
  _, terms, _ = _terms(task, 0.0, src, drv, other, gan_on=1.0)
  for k in ("l1", "ssim", "pose_cons", "dyn_cons", "fm"):
    assert terms[k] == pytest.approx(0.0, abs=1e-5), k
  # The same images with an appearance-copying generator: every term is positive.
  _, terms, _ = _terms(task, 1.0, src, drv, other, gan_on=1.0)
  for k in ("l1", "ssim", "pose_cons", "dyn_cons", "fm"):
    assert terms[k] > 0.01, (k, terms[k])
  expected = float(jnp.mean(jnp.abs(drv - src)))
  assert terms["pose_cons"] == pytest.approx(expected, rel=1e-5)
  assert terms["dyn_cons"] == pytest.approx(expected, rel=1e-5)


def test_consistency_terms_are_zero_when_source_and_driver_are_the_same_frame(task):
  src, other = _imgs(0), _imgs(2)
  _, terms, _ = _terms(task, 0.5, src, src, other)
  for k in ("l1", "ssim", "pose_cons", "dyn_cons"):
    assert terms[k] == pytest.approx(0.0, abs=1e-5), k


def test_identity_and_motion_terms_follow_who_reaches_the_cross_output(task):
  src, drv, other = _imgs(0), _imgs(1), _imgs(2)
  _, copy, _ = _terms(task, 1.0, src, drv, other)     # cross = src: identity kept, other's motion lost.
  _, drive, _ = _terms(task, 0.0, src, drv, other)    # cross = other: identity lost, motion followed.
  assert copy["cross_id"] == pytest.approx(0.0, abs=1e-5) and drive["cross_id"] > 1e-4
  assert drive["motion_cos"] < copy["motion_cos"]
  assert copy["gan"] == 0.0 and copy["fm"] == 0.0    # Before gan_start the GAN terms are off.


def test_pose_supervision_is_zero_on_the_labelled_angles(task):
  src, drv, other = _imgs(0), _imgs(1), _imgs(2)
  exact = {"src_pose": src.mean((1, 2)), "drv_pose": drv.mean((1, 2))}
  _, terms, _ = _terms(task, 0.0, src, drv, other, angles=exact)
  assert terms["pose_sup"] == pytest.approx(0.0, abs=1e-7)
  off = {"src_pose": exact["src_pose"] + 0.1, "drv_pose": exact["drv_pose"] - 0.1}
  total_off, terms, _ = _terms(task, 0.0, src, drv, other, angles=off)
  assert terms["pose_sup"] == pytest.approx(0.1, rel=1e-4)
  total_exact, _, _ = _terms(task, 0.0, src, drv, other, angles=exact)
  assert total_off - total_exact == pytest.approx(task[0].cfg.loss.pose_sup * 0.1, rel=1e-3)


def test_total_is_the_weighted_sum_of_the_terms(task):
  src, drv, other = _imgs(0), _imgs(1), _imgs(2)
  total, terms, _ = _terms(task, 0.7, src, drv, other, gan_on=1.0)
  c = task[0].cfg.loss
  assert total == pytest.approx(sum(getattr(c, k) * v for k, v in terms.items()), rel=1e-5)


# ---------------------------------------------------------------------- the image losses themselves


def test_multiscale_l1_is_the_mean_absolute_error_at_every_scale():
  x = _imgs(0)
  assert float(stage1.multiscale_l1(x, x + 0.1)) == pytest.approx(0.1, rel=1e-4)
  assert float(stage1.multiscale_l1(x + 0.1, x)) == pytest.approx(0.1, rel=1e-4)
  # Errors that cancel in a plain mean still count: +d on one half, -d on the other.
  sign = jnp.where(jnp.arange(S) < S // 2, 1.0, -1.0)[None, :, None, None]
  err = float(stage1.multiscale_l1(x, x + 0.2 * sign))
  assert err > 0.15
  assert float(stage1.multiscale_l1(x, x)) == 0.0
  # One scale: exactly mean |x - y|.
  y = _imgs(1)
  assert float(stage1.multiscale_l1(x, y, scales=1)) == pytest.approx(float(jnp.mean(jnp.abs(x - y))), rel=1e-6)


def test_ssim_is_one_only_for_equal_images():
  x = _imgs(0)
  assert float(stage1.ssim(x, x)) == pytest.approx(1.0, abs=1e-5)
  assert float(stage1.ssim(x, jnp.roll(x, 3, axis=2))) < 0.2          # Uncorrelated noise.
  assert 0.3 < float(stage1.ssim(x, 0.5 * x + 0.25)) < 0.99           # Same structure, other contrast.
  assert float(stage1.ssim(x, 1.0 - x)) < 0.0                         # Anti-correlated.


def test_psnr_of_known_errors():
  x = jnp.full((1, 8, 8, 3), 0.5)
  assert float(stage1.psnr(x + 0.1, x)) == pytest.approx(20.0, abs=1e-3)
  assert float(stage1.psnr(x + 0.01, x)) == pytest.approx(40.0, abs=1e-2)
  assert float(stage1.psnr(x + 1.0, x)) == pytest.approx(-10 * np.log10(0.25), abs=1e-3)  # Clipped to 1.


@pytest.mark.parametrize("n,scale,margin", [(4, 5.0, 0.2), (3, 2.0, 0.35)])
def test_batch_cosface_exact_value_on_orthonormal_descriptors(n, scale, margin):
  a = jnp.eye(n, 8)
  # cos = I: each row's logits are s (1 - m) on the diagonal and 0 elsewhere.
  want = np.log(1 + (n - 1) * np.exp(-scale * (1 - margin)))
  assert float(stage1.batch_cosface(a, 2.0 * a, scale=scale, margin=margin)) == pytest.approx(want, rel=1e-4)
  # A bigger margin asks for more: the loss grows with it.
  assert float(stage1.batch_cosface(a, a, scale=scale, margin=margin)) > float(
      stage1.batch_cosface(a, a, scale=scale, margin=0.0))
  # Matching the wrong partner costs more than matching the right one.
  assert float(stage1.batch_cosface(a, jnp.roll(a, 1, axis=0), scale=scale, margin=margin)) > want + 1.0


def test_multiscale_l1_averages_full_half_and_quarter_resolution():
  x, y = _imgs(3, b=1), _imgs(4, b=1)
  want, xs, ys = float(jnp.mean(jnp.abs(x - y))) / 3, x, y
  for side in (S // 2, S // 4):                 # Each scale halves the one before.
    xs = jax.image.resize(xs, (1, side, side, 3), "linear")
    ys = jax.image.resize(ys, (1, side, side, 3), "linear")
    want += float(jnp.mean(jnp.abs(xs - ys))) / 3
  assert float(stage1.multiscale_l1(x, y)) == pytest.approx(want, rel=1e-5)


def _ssim_reference(x, y, window):
  """SSIM (Wang et al. 2004, C1 = 0.01^2, C2 = 0.03^2) with a uniform window, every valid position, in float64."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  _, h, w, _ = x.shape
  out = []
  for i in range(h - window + 1):
    for j in range(w - window + 1):
      px, py = x[:, i:i + window, j:j + window], y[:, i:i + window, j:j + window]
      mx, my = px.mean((1, 2)), py.mean((1, 2))
      vx, vy = (px * px).mean((1, 2)) - mx * mx, (py * py).mean((1, 2)) - my * my
      cov = (px * py).mean((1, 2)) - mx * my
      out.append((2 * mx * my + 1e-4) * (2 * cov + 9e-4) / ((mx * mx + my * my + 1e-4) * (vx + vy + 9e-4)))
  return float(np.mean(out))


def test_ssim_matches_the_formula_window_by_window():
  x = jax.random.uniform(jax.random.key(5), (2, 10, 9, 2))
  y = 0.3 * x + 0.5 * jax.random.uniform(jax.random.key(6), (2, 10, 9, 2))
  assert float(stage1.ssim(x, y)) == pytest.approx(_ssim_reference(x, y, 7), rel=1e-4)
  assert float(stage1.ssim(x, y, window=3)) == pytest.approx(_ssim_reference(x, y, 3), rel=1e-4)
  # Flat images: only the luminance term is left, (2ab + C1) / (a^2 + b^2 + C1); dark ones show C1.
  a, b = 0.0, 2.0 ** -6
  flat = float(stage1.ssim(jnp.full((1, 8, 8, 1), a), jnp.full((1, 8, 8, 1), b)))
  assert flat == pytest.approx((2 * a * b + 1e-4) / (a * a + b * b + 1e-4), rel=1e-4)


def test_psnr_of_equal_images_is_capped_at_100_db():
  x = jnp.full((1, 4, 4, 3), 0.25)
  assert float(stage1.psnr(x, x)) == pytest.approx(100.0, abs=1e-3)


def test_batch_cosface_matches_the_formula_on_unnormalised_descriptors():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(5, 6)) * rng.uniform(0.5, 3, (5, 1)), rng.normal(size=(5, 6))
  na, nb = a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
  logits = 4.0 * (na @ nb.T - 0.3 * np.eye(5))
  logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))       # Softmax over each a_i's candidates b_j.
  want = -np.mean(np.diag(logp))
  got = float(stage1.batch_cosface(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), scale=4.0, margin=0.3))
  assert got == pytest.approx(want, rel=1e-4)


def test_teacher_labels_drive_the_recon_and_cross_decodes():
  # A motion-only fake renders the pose latent's first three numbers as the mean colour, so the
  # output's mean colour says which pose reached the decode: the labels, or what the encoder read.
  cfg = config.load("tiny", (("loss.teacher_labels", "1.0"), ("loss.dyn_free_from_src", "0.0")))
  t = stage1.Stage1(cfg, num_classes=4)
  img = jnp.zeros((1, S, S, 3))
  params = {"disc": t.disc.init(jax.random.key(1), img), "idnet": t.idnet.init(jax.random.key(2), img)}
  src, drv, other = _imgs(0), _imgs(1), _imgs(2)
  pose = lambda v: jnp.full((2, 6), v, jnp.float32)  # noqa: E731
  dyn = jnp.zeros((2, 8), jnp.float32)
  batch = {"src": src, "drv": drv, "other": other, "src_pose": pose(0.1), "drv_pose": pose(0.3),
           "other_pose": pose(0.7), "src_dyn": dyn, "drv_dyn": dyn, "other_dyn": dyn}
  fake = _FakeGen(0.0)
  t.encode, t.encode_motion, t.decode = fake.encode, fake.motion, fake.decode
  _, (_, out) = t.gen_loss(None, params, batch, jnp.float32(0.0), jax.random.key(0))
  np.testing.assert_allclose(np.asarray(out["recon"].mean((1, 2))), 0.3, atol=1e-5)
  np.testing.assert_allclose(np.asarray(out["cross"].mean((1, 2))), 0.7, atol=1e-5)
  # Without teacher labels the same decodes follow the encoders: the driver's own colours.
  t.cfg = config.load("tiny", (("loss.teacher_labels", "0.0"), ("loss.dyn_free_from_src", "0.0")))
  _, (_, out) = t.gen_loss(None, params, batch, jnp.float32(0.0), jax.random.key(0))
  np.testing.assert_allclose(np.asarray(out["recon"].mean((1, 2))), np.asarray(drv.mean((1, 2))), atol=1e-5)


def test_changed_region_l1_counts_only_where_driver_and_source_differ():
  src = jnp.full((1, 8, 8, 3), 0.3)
  drv = src.at[:, 2:4, 2:4].add(0.5)                 # 4 changed pixels: the "mouth".
  inside = drv.at[:, 2:4, 2:4].add(0.2)              # Error only where the driver changed.
  outside = drv + 0.2 - inside + drv                 # Error only where it did not.
  # sum |x - y| over the 4 pixels' 3 channels / (3 * 4 + 1).
  assert float(stage1.changed_region_l1(inside, drv, src)) == pytest.approx(0.2 * 12 / 13, rel=1e-5)
  assert float(stage1.changed_region_l1(outside, drv, src)) == pytest.approx(0.0, abs=1e-6)
  assert float(stage1.changed_region_l1(inside, src, src)) == 0.0   # Nothing changed: nothing counted.


def test_without_cross_losses_there_is_no_cross_decode_and_dynamics_are_read_back_from_the_recon():
  cfg = config.load("tiny", (("loss.cross_id", "0.0"), ("loss.motion_cos", "0.0"), ("loss.dyn_sup", "1.0"),
                             ("loss.pose_cons", "0.0"), ("loss.dyn_cons", "0.0"), ("loss.region_l1", "1.0"),
                             ("train.gan_start", "100")))
  t = stage1.Stage1(cfg, num_classes=4)
  assert not t.cross_used
  fake = _FakeGen(0.0)   # recon = the driver exactly.
  t.encode, t.encode_motion, t.decode = fake.encode, fake.motion, fake.decode
  src, drv, other = _imgs(0), _imgs(1), _imgs(2)
  n = 8
  dyn = {w: fake.motion(None, img)["z_dyn"][:, :n] for w, img in (("src", src), ("drv", drv), ("other", other))}
  batch = {"src": src, "drv": drv, "other": other, **{f"{w}_dyn": v for w, v in dyn.items()}}
  _, (terms, out) = t.gen_loss(None, {}, batch, jnp.float32(0.0))
  assert "cross" not in out and "cross_id" not in terms and "motion_cos" not in terms
  # Read back from the reconstruction (= drv), the dynamics match the driver's labels: zero.
  assert float(terms["dyn_sup"]) == pytest.approx(0.0, abs=1e-6)
  assert float(terms["region_l1"]) == pytest.approx(0.0, abs=1e-6)
  # Labels that disagree with what the reconstruction shows make it positive.
  batch["drv_dyn"] = dyn["other"]
  _, (terms, _) = t.gen_loss(None, {}, batch, jnp.float32(0.0))
  assert float(terms["dyn_sup"]) > 0.01


def test_sup_error_is_mean_absolute_or_mean_squared():
  pred, target = jnp.array([[0.0, 0.0], [0.0, 0.0]]), jnp.array([[1.0, 0.0], [0.0, -3.0]])
  assert float(stage1.sup_error(pred, target, False)) == pytest.approx(1.0)
  assert float(stage1.sup_error(pred, target, True)) == pytest.approx(2.5)
  # A rare event (a blink in 1 frame of 20): the absolute error is lowest at the median (0),
  # the squared error at the mean, so only the latter moves the prediction towards it.
  t = jnp.zeros((20, 1)).at[0].set(1.0)
  for squared, best in ((False, 0.0), (True, 0.05)):
    grid = [float(stage1.sup_error(jnp.full((20, 1), v), t, squared)) for v in (0.0, 0.05, 0.1)]
    assert np.argmin(grid) == [0.0, 0.05, 0.1].index(best)
