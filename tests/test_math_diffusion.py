"""Guidance and DDIM against hand-computed values: a fake denoiser whose output per variant is known."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vasa_jax import diffusion

# Per condition c, dropping c alone adds OFFSETS[c] to the conditional prediction.
COND = 1.0
OFFSETS = np.array([10.0, 200.0, 3000.0, 40000.0, 500000.0], np.float32)


def _fake_denoiser(calls=None):
  """Prediction = COND + sum of OFFSETS of the dropped conditions (so any mix of drops is visible)."""

  def denoise(x_t, t_idx, drop_mask):
    if calls is not None:
      calls.append(np.asarray(drop_mask))
    per_variant = COND + jnp.asarray(drop_mask, jnp.float32) @ jnp.asarray(OFFSETS)  # [V]
    return jnp.broadcast_to(per_variant.reshape((-1,) + (1,) * x_t.ndim), (drop_mask.shape[0],) + x_t.shape)

  return denoise


@pytest.mark.parametrize("guidance", [(0.5, 1.0, 0.0, 0.0, 0.0), (2.0, 0.0, 0.25, 0.0, 1.5), (0.0,) * 5,
                                      (1.0, 1.0, 1.0, 1.0, 1.0)])
def test_guidance_is_eq2_of_the_paper(guidance):
  calls = []
  x_t = jnp.zeros((2, 3, 4))
  out = diffusion.guided_x0(_fake_denoiser(calls), x_t, jnp.array([5, 7]), guidance)
  lam = np.asarray(guidance, np.float32)
  uncond = COND + OFFSETS                         # H(X | c = null) for each c, others kept.
  expected = (1.0 + lam.sum()) * COND - (lam * uncond).sum()
  np.testing.assert_allclose(np.asarray(out), np.full(x_t.shape, expected), rtol=1e-6)
  # One conditional pass and one pass per guided condition, each dropping that condition only.
  (mask,) = calls
  guided = [c for c, s in enumerate(guidance) if s]
  assert mask.shape == (1 + len(guided), 5) and not mask[0].any()
  for row, c in enumerate(guided, start=1):
    assert mask[row].sum() == 1 and mask[row, c]


def test_guidance_pushes_away_from_the_unconditional_prediction():
  # H = 1 with the condition, 11 without: guidance 2 gives 3 * 1 - 2 * 11 = -19.
  out = diffusion.guided_x0(_fake_denoiser(), jnp.zeros((1, 1)), jnp.array([0]), (2.0, 0.0, 0.0, 0.0, 0.0))
  np.testing.assert_allclose(float(out[0, 0]), -19.0)


@pytest.mark.parametrize("train,sample", [(1000, 10), (1000, 50), (1000, 1000), (20, 7), (5, 1), (1000, 3)])
def test_ddim_timesteps_descend_strictly_and_end_at_zero(train, sample):
  ts = diffusion.ddim_timesteps(train, sample)
  assert ts.shape == (sample,) and ts.dtype == np.int32
  assert ts[0] == train - 1
  if sample > 1:   # One step starts (and ends) at T - 1; more steps end exactly at 0.
    assert ts[-1] == 0
    assert np.all(np.diff(ts) < 0)
  for bad in (0, train + 1):
    with pytest.raises(ValueError):
      diffusion.ddim_timesteps(train, bad)


def test_one_ddim_step_is_the_clean_prediction_and_two_steps_follow_the_formula():
  ab = diffusion.make_schedule("linear", 10)
  x0_target = 0.7

  def denoise(x_t, t_idx, drop_mask):   # Knows x0 exactly, whatever x_t is.
    return jnp.full((drop_mask.shape[0],) + x_t.shape, x0_target)

  noise = jnp.array([[0.3, -1.2]])
  one = diffusion.ddim_sample(denoise, noise, ab, 1)
  np.testing.assert_allclose(np.asarray(one), x0_target, rtol=1e-6)

  # A denoiser that returns 0.5 * x_t: the first step lands on sqrt(ab_prev) x0 + sqrt(1 - ab_prev) eps.
  def half(x_t, t_idx, drop_mask):
    return jnp.broadcast_to(0.5 * x_t, (drop_mask.shape[0],) + x_t.shape)

  ts = diffusion.ddim_timesteps(10, 2)
  a_t, a_s = float(ab[ts[0]]), float(ab[ts[1]])
  x = np.asarray(noise, np.float64)
  x0 = 0.5 * x
  eps = (x - np.sqrt(a_t) * x0) / np.sqrt(1 - a_t)
  x1 = np.sqrt(a_s) * x0 + np.sqrt(1 - a_s) * eps
  two = diffusion.ddim_sample(half, noise, ab, 2)
  np.testing.assert_allclose(np.asarray(two), 0.5 * x1, rtol=1e-5)


def test_schedules_decrease_and_stay_inside_zero_one():
  for kind in ("cosine", "linear"):
    ab = diffusion.make_schedule(kind, 1000)
    assert ab.shape == (1000,) and np.all(np.diff(ab) <= 0) and np.all(np.diff(ab[:990]) < 0)
    assert 0.0 < ab[-1] < 1e-4 and 0.999 < ab[0] < 1.0   # Cosine is clipped at 1e-5 at the very end.
  np.testing.assert_allclose(diffusion.linear_alpha_bar(3, 0.1, 0.3), [0.9, 0.9 * 0.8, 0.9 * 0.8 * 0.7], rtol=1e-6)
  with pytest.raises(ValueError):
    diffusion.make_schedule("quadratic", 10)


def test_q_sample_and_x0_loss_exact_values():
  ab = np.array([0.25, 0.64], np.float32)
  x0 = jnp.array([[2.0], [2.0]])
  noise = jnp.array([[1.0], [1.0]])
  xt = diffusion.q_sample(x0, jnp.array([0, 1]), noise, ab)
  np.testing.assert_allclose(np.asarray(xt)[:, 0], [0.5 * 2 + np.sqrt(0.75), 0.8 * 2 + 0.6], rtol=1e-6)
  pred, target = jnp.array([1.5, 3.0]), jnp.array([0.5, 1.0])
  assert float(diffusion.x0_loss(pred, target)) == pytest.approx(2.5)
  assert float(diffusion.x0_loss(pred, target, jnp.array([1.0, 0.0]))) == pytest.approx(1.0)
  assert float(diffusion.x0_loss(pred, target, jnp.array([0.5, 0.0]))) == pytest.approx(0.5)   # Divides by at least 1.
  assert float(diffusion.x0_loss(pred, target, jnp.array([2.0, 2.0]))) == pytest.approx(2.5)
  assert float(diffusion.x0_loss(pred, target, jnp.array([0.0, 0.0]))) == pytest.approx(0.0)


def test_eta_adds_noise_and_zero_eta_is_deterministic():
  ab = diffusion.make_schedule("cosine", 100)

  def denoise(x_t, t_idx, drop_mask):
    return jnp.broadcast_to(0.5 * x_t, (drop_mask.shape[0],) + x_t.shape)

  noise = jax.random.normal(jax.random.key(0), (4, 3))
  a = diffusion.ddim_sample(denoise, noise, ab, 5, rng=jax.random.key(1))
  b = diffusion.ddim_sample(denoise, noise, ab, 5, rng=jax.random.key(2))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  c = diffusion.ddim_sample(denoise, noise, ab, 5, eta=1.0, rng=jax.random.key(1))
  d = diffusion.ddim_sample(denoise, noise, ab, 5, eta=1.0, rng=jax.random.key(2))
  assert float(jnp.abs(c - d).max()) > 1e-3
  clipped = diffusion.ddim_sample(lambda x, t, m: jnp.full((m.shape[0],) + x.shape, 5.0), noise, ab, 3, clip=1.0)
  np.testing.assert_allclose(np.asarray(clipped), 1.0)
  low = diffusion.ddim_sample(lambda x, t, m: jnp.full((m.shape[0],) + x.shape, -5.0), noise, ab, 3, clip=1.0)
  np.testing.assert_allclose(np.asarray(low), -1.0)


def test_schedules_match_their_closed_forms():
  s, n = 0.008, 1000
  f = lambda t: np.cos((t / n + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731
  ab = diffusion.cosine_alpha_bar(n)
  for t in (1, 10, 500, 900):
    assert ab[t - 1] == pytest.approx(f(t) / f(0), rel=1e-6), t
  assert ab[-1] == np.float32(1e-5)                               # Clipped away from 0 at t = T...
  assert diffusion.cosine_alpha_bar(100000)[0] == np.float32(1.0 - 1e-5)   # ...and from 1 at tiny steps.
  betas = np.linspace(1e-4, 0.02, n)
  np.testing.assert_allclose(diffusion.linear_alpha_bar(n), np.cumprod(1 - betas), rtol=1e-5)
  np.testing.assert_allclose(diffusion.make_schedule("cosine", 50), diffusion.cosine_alpha_bar(50))
  np.testing.assert_allclose(diffusion.make_schedule("linear", 50), diffusion.linear_alpha_bar(50))
