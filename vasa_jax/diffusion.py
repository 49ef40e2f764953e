"""Diffusion over motion windows: noise schedule, x0 training target, DDIM, multi-condition CFG.

VASA-1 trains its motion transformer H to predict the clean signal:
`E || X0 - H(X_t, t, C) ||^2` with the DDPM forward process
`X_t = sqrt(abar_t) X0 + sqrt(1 - abar_t) eps`. Sampling uses DDIM with any
number of steps. Classifier-free guidance over several conditions at once
(paper Eq. 2):

  X0_hat = (1 + sum_c l_c) H(X_t, t, C) - sum_c l_c H(X_t, t, C | c = null)

The conditional pass and one pass per guided condition run as one batch.
"""

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def cosine_alpha_bar(num_steps: int, s: float = 0.008) -> np.ndarray:
  """abar_t for t = 1..T (index t-1), Nichol & Dhariwal's cosine schedule, clipped away from 0."""
  t = np.arange(num_steps + 1, dtype=np.float64) / num_steps
  f = np.cos((t + s) / (1 + s) * np.pi / 2) ** 2
  abar = f[1:] / f[0]
  return np.clip(abar, 1e-5, 1.0 - 1e-5).astype(np.float32)


def linear_alpha_bar(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
  betas = np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)
  return np.cumprod(1.0 - betas).astype(np.float32)


def make_schedule(kind: str, num_steps: int) -> np.ndarray:
  if kind == "cosine":
    return cosine_alpha_bar(num_steps)
  if kind == "linear":
    return linear_alpha_bar(num_steps)
  raise ValueError(f"unknown noise schedule {kind!r}; expected 'cosine' or 'linear'")


def q_sample(x0, t_idx, noise, alpha_bar):
  """Forward process: noisy `x_t` for integer steps `t_idx` in [0, T) (one per batch row)."""
  ab = jnp.asarray(alpha_bar)[t_idx].reshape((-1,) + (1,) * (x0.ndim - 1))
  return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * noise


def x0_loss(pred_x0, x0, weight=None):
  """Mean squared error of the clean-signal prediction (optionally masked per element)."""
  err = (pred_x0 - x0) ** 2
  if weight is None:
    return jnp.mean(err)
  weight = jnp.broadcast_to(weight, err.shape)
  return jnp.sum(err * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def ddim_timesteps(num_train_steps: int, num_sample_steps: int) -> np.ndarray:
  """Descending integer steps used by a `num_sample_steps` DDIM run."""
  if not 1 <= num_sample_steps <= num_train_steps:
    raise ValueError(f"sampling steps must be in 1..{num_train_steps}, got {num_sample_steps}")
  steps = np.linspace(num_train_steps - 1, 0, num_sample_steps).round().astype(np.int32)
  return steps


def guided_x0(denoise: Callable, x_t, t_idx, guidance: Sequence[float]):
  """Eq. 2 of VASA-1. `denoise(x_t_rep, t_rep, drop_mask)` runs the model on a batch.

  `drop_mask` is `[n_variants, n_conditions]` booleans: row 0 keeps every
  condition, row 1 + c drops condition c only. Variants whose scale is zero are
  not run at all (static shapes: `guidance` is a Python sequence).
  """
  guided = [c for c, scale in enumerate(guidance) if scale != 0.0]
  n_cond = len(guidance)
  masks = np.zeros((1 + len(guided), n_cond), bool)
  for row, c in enumerate(guided, start=1):
    masks[row, c] = True
  outs = denoise(x_t, t_idx, jnp.asarray(masks))           # [n_variants, B, ...]
  total = sum(guidance[c] for c in guided)
  x0 = (1.0 + total) * outs[0]
  for row, c in enumerate(guided, start=1):
    x0 = x0 - guidance[c] * outs[row]
  return x0


def ddim_sample(denoise: Callable, noise, alpha_bar, num_steps: int, guidance: Sequence[float] = (),
                eta: float = 0.0, rng=None, clip: float | None = None):
  """DDIM from `noise` (= x_T) to x0 in `num_steps` steps with multi-condition guidance.

  `denoise(x_t, t_idx_B, drop_mask_VxC) -> x0 predictions [V, B, ...]`. With
  `eta=0` the sampler is deterministic given the noise; `eta>0` adds the DDPM
  noise fraction (needs `rng`). The loop is a `lax.fori_loop`: one compiled body
  for any number of steps.
  """
  alpha_bar = jnp.asarray(alpha_bar)
  steps = jnp.asarray(ddim_timesteps(alpha_bar.shape[0], num_steps))
  b = noise.shape[0]

  def body(i, carry):
    x, key = carry
    t = steps[i]
    ab_t = alpha_bar[t]
    ab_prev = jnp.where(i + 1 < num_steps, alpha_bar[steps[jnp.minimum(i + 1, num_steps - 1)]], 1.0)
    x0 = guided_x0(denoise, x, jnp.full((b,), t, jnp.int32), guidance)
    if clip is not None:
      x0 = jnp.clip(x0, -clip, clip)
    eps = (x - jnp.sqrt(ab_t) * x0) / jnp.sqrt(1.0 - ab_t)
    sigma = eta * jnp.sqrt((1.0 - ab_prev) / (1.0 - ab_t) * (1.0 - ab_t / ab_prev))
    dir_coef = jnp.sqrt(jnp.maximum(1.0 - ab_prev - sigma ** 2, 0.0))
    x_next = jnp.sqrt(ab_prev) * x0 + dir_coef * eps
    if eta > 0.0:
      key, sub = jax.random.split(key)
      x_next = x_next + sigma * jax.random.normal(sub, x.shape, x.dtype)
    # The last step returns the clean prediction itself.
    x_next = jnp.where(i + 1 < num_steps, x_next, x0)
    return x_next, key

  key = rng if rng is not None else jax.random.key(0)
  x, _ = jax.lax.fori_loop(0, num_steps, body, (noise, key))
  return x
