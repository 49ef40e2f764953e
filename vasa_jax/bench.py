"""`python -m vasa_jax.bench`: speed of the real code paths, as a table and JSON.

Every figure times the jitted function the product runs (after compilation, best
of several repeats, inputs already on device) and reports FLOPs from XLA's cost
analysis of that same compiled function, so achieved FLOP/s can be compared with
this machine's measured matmul peak (a 2048^3 float32 matmul).
"""

import json
import os
import platform
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vasa_jax import config


def _best_time(fn: Callable, *args, repeats: int = 3, min_time: float = 0.5) -> float:
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


def _flops(fn, *args) -> float:
  cost = fn.lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0))


def matmul_peak(n: int = 2048) -> float:
  """FLOP/s of a float32 n^3 matmul: the yardstick for 'fraction of peak'."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  return 2.0 * n ** 3 / _best_time(f, a, repeats=5)


def bench_face(config_name: str, batch: int, peak: float, repeats: int = 3) -> dict:
  """Stage-1 encode (once per portrait) and decode (every frame) at a config."""
  from vasa_jax.models import face_latent
  cfg = config.load(config_name)
  model = face_latent.FaceLatent(cfg.face)
  s = cfg.face.image_size
  img1 = jax.random.uniform(jax.random.key(0), (1, s, s, 3))
  params = jax.jit(model.init)(jax.random.key(1), img1, img1)
  encode = jax.jit(lambda p, x: model.apply(p, x, method=model.encode))
  lat1 = encode(params, img1)
  lat = jax.tree.map(lambda x: jnp.repeat(x, batch, 0), lat1)
  decode = jax.jit(lambda p, l: model.apply(p, l["v_app"], l["z_id"], l["z_pose"], l["z_dyn"],
                                            method=model.decode))
  t_enc = _best_time(encode, params, img1, repeats=repeats, min_time=0.2)
  t_dec = _best_time(decode, params, lat, repeats=repeats, min_time=0.2)
  f_enc = _flops(encode, params, img1)
  f_dec = _flops(decode, params, lat) / batch
  return {"config": config_name, "resolution": s, "decode_batch": batch,
          "encode_ms": t_enc * 1e3, "encode_gflop": f_enc / 1e9,
          "decode_ms_per_frame": t_dec / batch * 1e3, "decode_gflop_per_frame": f_dec / 1e9,
          "decode_fps": batch / t_dec,
          "decode_peak_fraction": (f_dec * batch / t_dec) / peak,
          "encode_peak_fraction": (f_enc / t_enc) / peak}


def main(args) -> int:
  peak = matmul_peak()
  device = jax.devices()[0]
  results = {"device": f"{device.platform}:{device.device_kind}", "cpu_count": os.cpu_count(),
             "machine": platform.machine(), "jax": jax.__version__, "matmul_peak_gflops": peak / 1e9,
             "face": []}
  print(f"device {results['device']} ({os.cpu_count()} cores), float32 matmul peak {peak / 1e9:.0f} GFLOP/s")
  sizes = {"demo": args.demo_batch, "paper": args.paper_batch}
  for name in args.configs:
    results["face"].append(bench_face(name, sizes.get(name, 1), peak, repeats=args.repeats))
  print("\nstage 1 (face latent): encode once per portrait, decode every frame")
  print(f"{'config':8s} {'res':>5s} {'enc ms':>8s} {'enc GFLOP':>10s} {'dec ms/frame':>13s} "
        f"{'dec GFLOP/frame':>16s} {'dec fps':>8s} {'% peak':>7s}")
  for r in results["face"]:
    print(f"{r['config']:8s} {r['resolution']:5d} {r['encode_ms']:8.1f} {r['encode_gflop']:10.2f} "
          f"{r['decode_ms_per_frame']:13.1f} {r['decode_gflop_per_frame']:16.2f} {r['decode_fps']:8.2f} "
          f"{100 * r['decode_peak_fraction']:6.1f}%")
  if args.json:
    from vasa_jax import media
    with media.atomic_output(args.json) as tmp:
      with open(tmp, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nwrote {args.json}")
  return 0


def parser():
  from vasa_jax import cli
  p = cli.make_parser("python -m vasa_jax.bench", "Benchmark the real code paths and print a table.")
  p.add_argument("--configs", nargs="+", default=["demo", "paper"], help="configs to measure")
  p.add_argument("--demo-batch", type=int, default=8, help="frames decoded per call at the demo config")
  p.add_argument("--paper-batch", type=int, default=1, help="frames decoded per call at the paper config")
  p.add_argument("--repeats", type=int, default=3, help="timing repeats (best is reported)")
  p.add_argument("--json", help="write the results to this JSON file")
  return p


if __name__ == "__main__":
  from vasa_jax import cli
  cli.main_entry(main, parser())
