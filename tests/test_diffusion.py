"""Diffusion: DDIM reproduces a Gaussian in closed form; guidance with zero scales is conditional."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vasa_jax import config, diffusion
from vasa_jax.models import motion_dit

MU, SIGMA = 1.5, 0.5


def _gaussian_denoiser(alpha_bar):
  """The exact E[x0 | x_t] when x0 ~ N(MU, SIGMA^2) independently per element."""
  ab_all = jnp.asarray(alpha_bar)

  def denoise(x_t, t_idx, drop_mask):
    ab = ab_all[t_idx].reshape((-1,) + (1,) * (x_t.ndim - 1))
    gain = jnp.sqrt(ab) * SIGMA ** 2 / (ab * SIGMA ** 2 + 1.0 - ab)
    x0 = MU + gain * (x_t - jnp.sqrt(ab) * MU)
    return jnp.broadcast_to(x0, (drop_mask.shape[0],) + x0.shape)

  return denoise


def _ddim_moments(alpha_bar, steps, eta):
  """Mean and std of DDIM's output with the exact Gaussian denoiser, in closed form.

  Every DDIM step is affine in x_t when the denoiser is, so the moments of
  x_T ~ N(0, 1) can be pushed through the same schedule exactly.
  """
  ts = diffusion.ddim_timesteps(len(alpha_bar), steps)
  m, v = 0.0, 1.0
  for i, t in enumerate(ts):
    ab = float(alpha_bar[t])
    g = np.sqrt(ab) * SIGMA ** 2 / (ab * SIGMA ** 2 + 1 - ab)
    a1, b1 = g, MU * (1 - g * np.sqrt(ab))              # x0_hat = a1 x + b1
    if i + 1 == len(ts):
      return a1 * m + b1, np.sqrt(a1 ** 2 * v)
    ab_s = float(alpha_bar[ts[i + 1]])
    sig = eta * np.sqrt((1 - ab_s) / (1 - ab) * (1 - ab / ab_s))
    c = np.sqrt(max(1 - ab_s - sig ** 2, 0.0))
    # eps_hat = (x - sqrt(ab) x0_hat) / sqrt(1 - ab)
    ea, eb = (1 - np.sqrt(ab) * a1) / np.sqrt(1 - ab), -np.sqrt(ab) * b1 / np.sqrt(1 - ab)
    a, b = np.sqrt(ab_s) * a1 + c * ea, np.sqrt(ab_s) * b1 + c * eb
    m, v = a * m + b, a ** 2 * v + sig ** 2


@pytest.mark.parametrize("kind,steps,eta", [("cosine", 50, 0.0), ("cosine", 10, 0.0), ("linear", 50, 1.0)])
def test_ddim_matches_the_closed_form_for_a_gaussian_target(kind, steps, eta):
  ab = diffusion.make_schedule(kind, 1000)
  noise = jax.random.normal(jax.random.key(0), (40000, 4))
  x0 = jax.jit(lambda n: diffusion.ddim_sample(_gaussian_denoiser(ab), n, ab, steps, eta=eta,
                                               rng=jax.random.key(1)))(noise)
  mean, std = _ddim_moments(ab, steps, eta)
  assert abs(float(x0.mean()) - mean) < 0.01
  assert abs(float(x0.std()) / std - 1.0) < 0.015


def test_ddim_converges_to_the_target_distribution_with_steps():
  ab = diffusion.make_schedule("cosine", 1000)
  stds = [_ddim_moments(ab, n, 0.0)[1] for n in (10, 50, 250, 1000)]
  assert stds == sorted(stds)                      # Finer steps: less of DDIM's contraction.
  assert abs(stds[-1] - SIGMA) < 0.01 * SIGMA
  assert all(abs(_ddim_moments(ab, n, 0.0)[0] - MU) < 0.01 for n in (10, 1000))


def test_forward_process_marginals():
  ab = diffusion.make_schedule("cosine", 1000)
  x0 = jnp.full((50000,), 2.0)
  t = jnp.full((50000,), 500)
  x_t = diffusion.q_sample(x0, t, jax.random.normal(jax.random.key(0), x0.shape), ab)
  np.testing.assert_allclose(float(x_t.mean()), 2.0 * np.sqrt(ab[500]), atol=0.02)
  np.testing.assert_allclose(float(x_t.std()), np.sqrt(1 - ab[500]), atol=0.02)


def _tiny_model():
  cfg = config.load("tiny")
  model = motion_dit.MotionDiT(cfg.motion, motion_dim=8)
  b, w, k, a = 3, cfg.data.window, cfg.data.context, 16
  rng = jax.random.key(0)
  inputs = dict(x_t_BxWxM=jax.random.normal(rng, (b, w, 8)), t_B=jnp.array([10, 500, 900]),
                prev_BxKxM=jax.random.normal(jax.random.key(1), (b, k, 8)),
                audio_BxLxA=jax.random.normal(jax.random.key(2), (b, k + w, a)),
                gaze_Bx2=jnp.ones((b, 2)) * 0.1, distance_B=jnp.ones((b,)),
                emotion_BxE=jax.nn.one_hot(jnp.array([0, 1, 2]), 5),
                drop_BxC=jnp.zeros((b, len(motion_dit.CONDITIONS)), bool))
  params = model.init(jax.random.key(3), **inputs)
  # Give the zero-initialised head and gates weights so outputs depend on the inputs.
  params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(4), p.shape), params)
  return model, params, inputs


def test_guidance_with_zero_scales_equals_the_conditional_prediction():
  model, params, inputs = _tiny_model()

  def denoise(x_t, t_idx, drop_mask):
    v = drop_mask.shape[0]
    rep = lambda a: jnp.concatenate([a] * v)  # noqa: E731
    drop = jnp.repeat(drop_mask, x_t.shape[0], axis=0)
    args = {k: rep(val) for k, val in inputs.items() if k not in ("x_t_BxWxM", "t_B", "drop_BxC")}
    out = model.apply(params, rep(x_t), rep(t_idx), drop_BxC=drop, **args)
    return out.reshape((v,) + x_t.shape)

  cond = model.apply(params, **inputs)
  zero = diffusion.guided_x0(denoise, inputs["x_t_BxWxM"], inputs["t_B"], (0.0,) * 5)
  np.testing.assert_allclose(zero, cond, atol=1e-5)
  guided = diffusion.guided_x0(denoise, inputs["x_t_BxWxM"], inputs["t_B"], (0.5, 1.0, 0.0, 0.0, 0.0))
  assert float(jnp.abs(guided - cond).max()) > 1e-4


def test_each_condition_changes_the_prediction_when_present():
  model, params, inputs = _tiny_model()
  base = model.apply(params, **inputs)
  for c, name in enumerate(motion_dit.CONDITIONS):
    drop = inputs["drop_BxC"].at[:, c].set(True)
    out = model.apply(params, **{**inputs, "drop_BxC": drop})
    assert float(jnp.abs(out - base).max()) > 1e-5, name


def test_a_window_shorter_than_the_training_window_reads_its_first_positions():
  """`max_window`: the position table keeps the training window's size (old checkpoints load), a
  shorter window (live mode) takes its first positions, and a longer one is refused."""
  cfg = config.load("tiny")
  w, k = cfg.data.window, cfg.data.context
  model = motion_dit.MotionDiT(cfg.motion, motion_dim=8, max_window=w)
  _, params, inputs = _tiny_model()  # made without max_window: the same parameter shapes
  assert params["params"]["pos"].shape == (1, 3 + k + w, cfg.motion.width)
  np.testing.assert_allclose(model.apply(params, **inputs), _tiny_model()[0].apply(params, **inputs), atol=1e-6)
  short = dict(inputs, x_t_BxWxM=inputs["x_t_BxWxM"][:, :3], audio_BxLxA=inputs["audio_BxLxA"][:, :k + 3])
  assert model.apply(params, **short).shape == (3, 3, 8)
  # Every position the short window reads is the long one's: zeroing the table past them changes nothing.
  cut = jax.tree.map(lambda p: p, params)
  cut["params"]["pos"] = params["params"]["pos"].at[:, 3 + k + 3:].set(0.0)
  np.testing.assert_allclose(model.apply(cut, **short), model.apply(params, **short), atol=1e-6)
  assert float(jnp.abs(model.apply(cut, **inputs) - model.apply(params, **inputs)).max()) > 1e-4
  long = dict(inputs, x_t_BxWxM=jnp.concatenate([inputs["x_t_BxWxM"]] * 2, 1),
              audio_BxLxA=jnp.concatenate([inputs["audio_BxLxA"], inputs["audio_BxLxA"][:, k:]], 1))
  with pytest.raises(ValueError, match="longer than"):
    model.apply(params, **long)
