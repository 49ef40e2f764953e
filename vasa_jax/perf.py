"""Timing and FLOP counting shared by the benchmark (`bench.py`) and the train loop.

`best_time` times a jitted function after compiling it; `flops` reads XLA's cost
analysis of that function; `matmul_peak` is the yardstick for "share of peak": a
float32 matmul timed on the device in the same run, so the figure reflects this
machine (and, on TPU, the precision its default matmuls really use).
"""

import time
from typing import Callable

import jax
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
  """FLOPs of one call of the jitted `fn`, from XLA's cost analysis.

  compile=False reads the analysis of the lowered program (no compilation; the whole
  global computation, before it is split across devices).
  """
  lowered = fn.lower(*args)
  cost = lowered.compile().cost_analysis() if compile else lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", 0.0))


def matmul_peak(n: int = 2048, repeats: int = 5, min_time: float = 0.5) -> float:
  """FLOP/s of a float32 n^3 matmul on the default device."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  return 2.0 * n ** 3 / best_time(f, a, repeats=repeats, min_time=min_time)
