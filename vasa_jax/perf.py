"""Timing and FLOP counting shared by the benchmark (`bench.py`) and the train loop.

`best_time` times a jitted function after compiling it; `flops` reads XLA's cost
analysis of that function, completed for loops (`loop_flops`); `matmul_peak` is the
yardstick for "share of peak": a float32 matmul timed on the device in the same run, so
the figure reflects this machine (and, on TPU, the precision its default matmuls really use).

XLA's cost analysis counts a loop's body once, whatever its trip count. Where a step runs
part of its work in a `lax.scan` (decodes one job at a time, gradient accumulation over
microbatches, each rematerialised in the backward pass) that would undercount it, so
`loop_flops` walks the traced program and adds, for every scan, XLA's own count of its
body for the trips it did not count. (Loops whose trip count is not known when tracing,
`while`, stay counted once.)
"""

import time
from typing import Callable

import jax
import jax.extend.core
import jax.numpy as jnp


def best_time(fn: Callable, *args, repeats: int = 3, min_time: float = 0.5) -> float:
  """Seconds per call: the best over `repeats` rounds of back-to-back calls (at least `min_time` each)."""
  jax.block_until_ready(fn(*args))  # Compile and warm up.
  best = float("inf")
  for _ in range(repeats):
    n, t0 = 0, time.perf_counter()
    while True:
      jax.block_until_ready(fn(*args))
      n += 1
      if time.perf_counter() - t0 >= min_time or n >= 50:
        break
    best = min(best, (time.perf_counter() - t0) / n)
  return best


def flops(fn, *args, compile: bool = True) -> float:
  """FLOPs of one call of the jitted `fn`: XLA's cost analysis plus the loop trips it does not
  count (`loop_flops`).

  compile=False reads the analysis of the lowered program (no compilation; the whole
  global computation, before it is split across devices).
  """
  traced = fn.trace(*args)
  lowered = traced.lower()
  cost = lowered.compile().cost_analysis() if compile else lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", 0.0)) + missed_flops(traced)


def missed_flops(traced) -> float:
  """FLOPs of a traced jitted call (`fn.trace(...)`) that XLA's cost analysis of its lowering
  misses because they run in loops (`loop_flops` on the program without its dead code)."""
  return loop_flops(_without_dead_code(traced.jaxpr))


def _xla_flops(closed) -> float:
  """XLA's FLOP count of a traced (sub)program, lowered on its own."""
  fn = jax.jit(jax.extend.core.jaxpr_as_fun(closed))
  args = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in closed.jaxpr.invars]
  cost = fn.lower(*args).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", 0.0))


def _sub_jaxprs(value):
  if isinstance(value, jax.extend.core.ClosedJaxpr):
    yield value
  elif isinstance(value, jax.extend.core.Jaxpr):
    yield jax.extend.core.ClosedJaxpr(value, ())
  elif isinstance(value, (tuple, list)):
    for v in value:
      yield from _sub_jaxprs(v)


def _without_dead_code(closed):
  """The program with what no output needs removed, inside loop bodies too, as lowering does: a
  loop body lowered on its own would otherwise count work that the step drops (the forward pass's
  outputs that a gradient does not read)."""
  from jax._src.interpreters import partial_eval as pe  # pylint: disable=import-outside-toplevel
  jaxpr, _ = pe.dce_jaxpr(closed.jaxpr, [True] * len(closed.jaxpr.outvars), instantiate=True)
  return jax.extend.core.ClosedJaxpr(jaxpr, closed.consts)


def loop_flops(jaxpr) -> float:
  """FLOPs that XLA's cost analysis of a traced program misses in its loops.

  A scan of L trips whose body XLA counts c times (once; u times when unrolled by u; every
  trip when fully unrolled) misses L * (body + what the body's own loops miss) - c * body,
  each body counted by XLA on its own. Loops inside other sub-programs (a jit, a
  rematerialised block, a branch) are found wherever they are.
  """
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  missed = 0.0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "scan":
      body = eqn.params["jaxpr"]
      length = int(eqn.params["length"])
      unroll = eqn.params.get("unroll", 1)
      counted = length if unroll is True or int(unroll) >= length else max(int(unroll), 1)
      inner = loop_flops(body)
      if counted < length or inner:
        per_trip = _xla_flops(body)
        missed += length * (per_trip + inner) - counted * per_trip
      continue
    for v in eqn.params.values():
      for sub in _sub_jaxprs(v):
        missed += loop_flops(sub)
  return missed


def matmul_peak(n: int = 2048, repeats: int = 5, min_time: float = 0.5) -> float:
  """FLOP/s of a float32 n^3 matmul on the default device."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  return 2.0 * n ** 3 / best_time(f, a, repeats=repeats, min_time=min_time)
