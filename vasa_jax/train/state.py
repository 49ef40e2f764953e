"""What both stages' train states share: born-sharded init, the non-finite guard and the EMA.

  sharded_abstract(init, rng, sharding) -> (abstract state with shardings, state shardings)
                                          (`sharding`: one for every leaf, or a rule leaf -> sharding)
  if_finite(finite, update, old)        -> `update()` where the step's loss was finite, else `old`
  ema_update(ema, params, step, decay)  -> the EMA of the weights sampling uses
  accumulate(fn, batch, rng, m)         -> the mean of `fn` over m microbatches, run one after another

Pure functions over pytrees, used inside the jitted steps (`stage1.py`, `stage2.py`)
and by the loop and the AOT compiler, which build the state the same way.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp


def sharded_abstract(init_fn: Callable[..., Any], rng: jax.Array, sharding, *inputs) -> tuple[Any, Any]:
  """Shapes of `init_fn(rng, *inputs)` with their shardings, and the matching shardings tree.

  `inputs`: arrays or their shapes (`jax.ShapeDtypeStruct`), such as stage 2's frozen wav2vec2.

  `sharding`: a sharding for every leaf, or a rule `abstract leaf -> sharding`
  (`mesh.state_sharding`: params and optimizer state split over the `fsdp` axis).

  Born sharded: callers compile or restore into these shapes, or run
  `jax.jit(init_fn, out_shardings=shardings)(rng)`, and the state never exists unsharded.
  """
  abstract = jax.eval_shape(init_fn, rng, *inputs)
  rule = sharding if callable(sharding) else (lambda _: sharding)
  shardings = jax.tree.map(rule, abstract)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
  return abstract, shardings


def if_finite(finite: jax.Array, update: Callable[[], Any], old: Any) -> Any:
  """A non-finite loss never reaches the weights: `update()` (the new weights, optimiser state and
  EMA) where `finite`, else `old` unchanged; the step is skipped and the loop reports it.

  One conditional around the whole update rather than a select per array: the tiny stage-1 step
  (~320 weights, each with two optimiser moments and an EMA copy) compiled in 80 s this way against
  95 s with the selects, on a slow 2-core machine (2026-12-07); a skipped step also skips the
  optimiser's work.
  """
  return jax.lax.cond(finite, update, lambda: old)


def ema_decay(max_decay: float, step: jax.Array) -> jax.Array:
  """Warm-up (1 + n) / (10 + n): early EMA weights follow training instead of staying at init."""
  return jnp.minimum(max_decay, (1.0 + step) / (10.0 + step))


def ema_update(ema: Any, params: Any, step: jax.Array, max_decay: float) -> Any:
  decay = ema_decay(max_decay, step)
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def accumulate(fn: Callable[[Any, jax.Array], Any], batch: Any, rng: jax.Array, microbatches: int) -> Any:
  """Gradient accumulation: the mean of `fn(microbatch, rng_i)` (gradients and scalar metrics, all
  floating point) over `microbatches` equal slices of `batch`, computed one after another in a loop,
  so only one slice's activations are alive at a time. With 1, `fn(batch, rng)` itself.

  Slice i holds rows i, i + m, i + 2m, ...: with the batch split over devices in contiguous blocks
  whose size m divides, every slice keeps that split and no example moves between devices.
  Per-example losses averaged over equal slices give the whole batch's gradient; a term that couples
  the examples of a batch (a contrastive one) sees one slice at a time. Slice i draws from
  `fold_in(rng, i)`.
  """
  m = int(microbatches)
  if m == 1:
    return fn(batch, rng)

  def split(x):
    if x.shape[0] % m:
      raise ValueError(f"a batch of {x.shape[0]} does not split into {m} microbatches")
    return x.reshape(x.shape[0] // m, m, *x.shape[1:]).swapaxes(0, 1)

  parts = jax.tree.map(split, batch)
  shapes = jax.eval_shape(fn, jax.tree.map(lambda x: x[0], parts), rng)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

  def body(total, xs):
    i, part = xs
    return jax.tree.map(jnp.add, total, fn(part, jax.random.fold_in(rng, i))), None

  total, _ = jax.lax.scan(body, zeros, (jnp.arange(m), parts))
  return jax.tree.map(lambda t: t / m, total)
