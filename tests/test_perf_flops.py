"""FLOP counting for steps with loops: XLA's cost analysis counts a loop body once, `perf.flops`
adds the other trips, so a rolled loop counts as its unrolled twin does."""

import jax
import jax.numpy as jnp
import pytest

from vasa_jax import perf


def _weights():
  k1, k2 = jax.random.split(jax.random.key(0))
  return jax.random.normal(k1, (64, 64)), jax.random.normal(k2, (3, 3, 4, 8))


def _layer(w, k, x):
  """A matmul and a convolution: what a decode does, in small."""
  y = jnp.tanh(x @ w)
  img = y.reshape(y.shape[0], 8, 8, 1).repeat(4, -1)
  out = jax.lax.conv_general_dilated(img, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return out.mean()


def _loss(params, xs, unroll, remat):
  w, k = params
  one = jax.checkpoint(lambda x: _layer(w, k, x)) if remat else (lambda x: _layer(w, k, x))
  _, outs = jax.lax.scan(lambda c, x: (c, one(x)), None, xs, unroll=unroll)
  return outs.sum()


def _accumulated(params, xs, unroll):
  """Gradient accumulation over 2 microbatches, each running the 5-trip remat scan."""
  def body(total, part):
    g = jax.grad(_loss)(params, part, unroll, True)
    return jax.tree.map(jnp.add, total, g), None
  zeros = jax.tree.map(jnp.zeros_like, params)
  total, _ = jax.lax.scan(body, zeros, xs.reshape(2, 5, *xs.shape[1:]), unroll=2 if unroll is True else 1)
  return total


def test_a_program_without_loops_is_xla_s_own_count():
  w, k = _weights()
  fn = jax.jit(lambda x: _layer(w, k, x))
  x = jnp.ones((16, 64))
  assert perf.loop_flops(fn.trace(x).jaxpr) == 0.0
  assert perf.flops(fn, x, compile=False) == fn.lower(x).cost_analysis()["flops"] > 2 * 16 * 64 * 64


@pytest.mark.parametrize("remat", [False, True])
def test_a_rolled_scan_counts_as_its_unrolled_twin(remat):
  params = _weights()
  xs = jnp.ones((5, 16, 64))
  grad = lambda unroll: jax.jit(jax.grad(lambda p: _loss(p, xs, unroll, remat)))  # noqa: E731
  rolled, unrolled = perf.flops(grad(1), params, compile=False), perf.flops(grad(True), params, compile=False)
  xla_rolled = grad(1).lower(params).cost_analysis()["flops"]
  assert xla_rolled < 0.5 * unrolled  # What XLA alone says: about one trip of five.
  assert rolled == pytest.approx(unrolled, rel=0.03)


def test_nested_loops_microbatches_over_rematerialised_decodes():
  params = _weights()
  xs = jnp.ones((10, 16, 64))
  fn = lambda unroll: jax.jit(lambda p: _accumulated(p, xs, unroll))  # noqa: E731
  rolled, unrolled = perf.flops(fn(1), params, compile=False), perf.flops(fn(True), params, compile=False)
  assert rolled == pytest.approx(unrolled, rel=0.03)
  xla_rolled = fn(1).lower(params).cost_analysis()["flops"]
  assert rolled > 5 * xla_rolled  # 10 decodes, forward and recomputed, where XLA sees 1
