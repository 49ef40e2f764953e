"""Training step time with asynchronous, blocking and no checkpoint saves.

    python benchmarks/checkpoint_speed.py --json /tmp/checkpoint_speed.json

Trains the stage-1 step of a config (default: demo) through the real loop (`train/loop.py`)
on a small synthetic corpus at the config's resolution, saving every `--checkpoint-every`
steps, once per mode and round (the modes interleave, so a busy machine slows them alike).
The first `--warmup` steps of each run (compilation) are left out. A step's time is the
wall time from one step's log to the next; "after save" rows are the steps whose interval
holds a save (its blocking part, and for async saves the writing that overlaps it).
"""

import argparse
import json
import os
import platform
import tempfile
import time

import jax
import numpy as np

from vasa_jax import config
from vasa_jax.data import synthetic
from vasa_jax.train import __main__ as train_main
from vasa_jax.train import loop

MODES = ("none", "blocking", "async")


def run_once(cfg, task, dataset, workdir: str, mode: str, steps: int, every: int) -> list[float]:
  """Seconds per step (from the loop's own rate) of one run."""
  with cfg.unlocked():
    cfg.train.update({"steps": steps, "log_every": 1, "preview_every": 0,
                      "checkpoint_every": steps + 1 if mode == "none" else every,
                      "async_checkpoints": mode == "async"})
  times = []
  loop.run(task, cfg, workdir, dataset, on_log=lambda step, m: times.append(1.0 / m["perf/steps_per_s"]))
  return times


def summarise(times: list[list[float]], warmup: int, every: int, mode: str) -> dict:
  steady = [t for run in times for t in run[warmup:]]
  # Step s (1-based) follows the save at s - 1 when (s - 1) % every == 0.
  after = [t for run in times for s, t in enumerate(run, 1) if s > warmup and (s - 1) % every == 0]
  other = [t for run in times for s, t in enumerate(run, 1) if s > warmup and (s - 1) % every != 0]
  row = {"mode": mode, "steps": len(steady), "mean_s": float(np.mean(steady)),
         "median_s": float(np.median(steady)), "other_steps_s": float(np.mean(other))}
  row["after_save_s"] = float(np.mean(after)) if mode != "none" and after else None
  return row


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="demo", help="run config (its stage-1 step is timed)")
  p.add_argument("--steps", type=int, default=14, help="steps per run")
  p.add_argument("--checkpoint-every", type=int, default=3)
  p.add_argument("--warmup", type=int, default=2, help="first steps of each run left out (compiling)")
  p.add_argument("--rounds", type=int, default=2, help="runs per mode, interleaved")
  p.add_argument("--data", help="a clip corpus at the config's resolution (default: a small one is written)")
  p.add_argument("--json", help="write the results here as JSON")
  args = p.parse_args()

  cfg = config.load(args.config)
  with tempfile.TemporaryDirectory() as tmp:
    jax.config.update("jax_compilation_cache_dir", os.path.join(tmp, "xla"))  # compile once for all runs
    data = args.data
    if data is None:
      data = os.path.join(tmp, "corpus")
      synthetic.write_corpus(data, num_identities=8, clips_per_identity=1, num_frames=24,
                             resolution=cfg.face.image_size, seed=0, workers=1, progress=False)
    task, dataset = train_main.build_stage1(cfg, data)
    size = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(jax.eval_shape(task.init, jax.random.key(0))))
    times = {m: [] for m in MODES}
    for r in range(args.rounds):
      for mode in MODES:
        t0 = time.perf_counter()
        times[mode].append(run_once(cfg, task, dataset, os.path.join(tmp, f"{mode}{r}"), mode,
                                    args.steps, args.checkpoint_every))
        print(f"round {r} {mode}: {time.perf_counter() - t0:.1f} s", flush=True)
  rows = [summarise(times[m], args.warmup, args.checkpoint_every, m) for m in MODES]
  base = rows[0]["mean_s"]
  print(f"\n{args.config} stage 1, state {size / 2**20:.1f} MiB, a save every {args.checkpoint_every} steps")
  print(f"{'saves':>9} {'steps':>6} {'mean s/step':>12} {'median':>8} {'after a save':>13} {'others':>8} {'vs none':>8}")
  for r in rows:
    after = f"{r['after_save_s']:.3f}" if r["after_save_s"] is not None else "-"
    print(f"{r['mode']:>9} {r['steps']:>6} {r['mean_s']:>12.3f} {r['median_s']:>8.3f} {after:>13} "
          f"{r['other_steps_s']:>8.3f} {r['mean_s'] / base:>8.2f}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"benchmark": "checkpoint_speed", "config": args.config, "state_bytes": int(size),
                 "checkpoint_every": args.checkpoint_every, "machine": platform.platform(),
                 "processor": platform.processor(), "cpus": os.cpu_count(), "results": rows,
                 "step_times": times}, f, indent=2)


if __name__ == "__main__":
  main()
