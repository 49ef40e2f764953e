"""Perturbing every weight of a freshly initialised model.

Zero-initialised heads (adaLN-Zero gates, FiLM and flow heads) make a new model's output, or part
of its gradient, exactly zero, which would let a test pass whatever the inputs were.
"""

import jax


def jitter(params, scale: float, seed: int = 5):
  """`params` with independent N(0, scale^2) noise added to every leaf."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
