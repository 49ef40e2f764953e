"""Synthetic-head render speed: frames per second on one core.

    python benchmarks/synthetic_speed.py --json /tmp/synthetic_speed.json

Times `render_frames` (the real corpus render path) in this single process on a
talking clip's motion, several repeats, and reports the median.
"""

import argparse
import json
import platform
import time

import numpy as np

from vasa_jax.data import synthetic as syn


def bench(resolution: int, frames: int, repeats: int) -> dict:
  clip = syn.make_clip(3, 11, frames, resolution, render=False)
  ident = syn.identity_params(3)
  syn.render_frames(ident, {k: v[:2] for k, v in clip["labels"].items()}, resolution)  # warm caches
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    syn.render_frames(ident, clip["labels"], resolution)
    times.append(time.perf_counter() - t0)
  med = float(np.median(times))
  return {"resolution": resolution, "frames": frames, "repeats": repeats,
          "median_s": med, "fps_per_core": frames / med, "ms_per_frame": 1000 * med / frames}


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
  p.add_argument("--json", help="write the results here as JSON")
  p.add_argument("--repeats", type=int, default=5, help="timed repeats per resolution (median reported)")
  p.add_argument("--resolutions", type=int, nargs="+", default=[128, 512], help="square frame sizes")
  args = p.parse_args()
  rows = [bench(r, 25 if r <= 256 else 8, args.repeats) for r in args.resolutions]
  print(f"{'resolution':>10} {'frames':>6} {'ms/frame':>9} {'frames/s/core':>14}")
  for r in rows:
    print(f"{r['resolution']:>10} {r['frames']:>6} {r['ms_per_frame']:>9.1f} {r['fps_per_core']:>14.1f}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"benchmark": "synthetic_speed", "machine": platform.platform(),
                 "processor": platform.processor(), "results": rows}, f, indent=2)


if __name__ == "__main__":
  main()
