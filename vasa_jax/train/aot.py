"""`python -m vasa_jax.train.aot`: compile the real train step ahead of time on a CPU.

Fakes N CPU devices (`--xla_force_host_platform_device_count`), builds the state and
batch shapes of a config with their shardings, and lowers + compiles the jitted
step for that topology without allocating the model: sharding mistakes and
oversized graphs show up here, on a laptop, before a pod is booked. `--run`
then materialises random weights and one random batch and runs the step once.
"""

import os
import sys
import time


def _force_devices(argv: list[str]) -> None:
  """XLA reads the fake device count once, at import: set it before jax loads."""
  count = None
  for i, arg in enumerate(argv):
    if arg.startswith("--devices="):
      count = arg.split("=", 1)[1]
    elif arg == "--devices" and i + 1 < len(argv):
      count = argv[i + 1]
  if count is not None and "jax" not in sys.modules:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={count}").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def main(args) -> int:
  # Imported here, not at the top: jax must load after `_force_devices` has set the device count.
  import jax
  import jax.numpy as jnp
  import numpy as np

  from vasa_jax import label_motion
  from vasa_jax.errors import UserError
  from vasa_jax.train import mesh as mesh_lib
  from vasa_jax.train import stage1
  from vasa_jax.train import state as state_lib

  cfg = args.config
  if jax.device_count() != args.devices:
    raise UserError(f"asked for {args.devices} devices but JAX sees {jax.device_count()} "
                    f"({jax.devices()[0].platform}); run this command in a fresh process")
  mesh = mesh_lib.make_mesh()
  mesh_lib.check_batch_size(cfg.train.batch_size)
  task = stage1.Stage1(cfg, cfg.idnet.num_classes)
  repl, data = mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)
  rng = jax.random.key(cfg.seed)
  state_in, state_shardings = state_lib.sharded_abstract(task.init, rng, repl)
  b, s = cfg.train.batch_size, cfg.face.image_size
  frames = jax.ShapeDtypeStruct((b, s, s, 3), jnp.uint8, sharding=data)
  ids = jax.ShapeDtypeStruct((b,), jnp.int32, sharding=data)
  # Labelled data (what the synthetic corpus gives): pose and expression targets per frame.
  n_pose, n_dyn = len(label_motion.POSE_LABELS), len(label_motion.DYN_LABELS)
  pose = jax.ShapeDtypeStruct((b, n_pose), jnp.float32, sharding=data)
  dyn = jax.ShapeDtypeStruct((b, n_dyn), jnp.float32, sharding=data)
  batch = {"src": frames, "drv": frames, "other": frames, "src_class": ids, "other_class": ids,
           "src_pose": pose, "drv_pose": pose, "src_dyn": dyn, "drv_dyn": dyn, "other_dyn": dyn}
  step = jax.jit(task.train_step, in_shardings=(state_shardings, data, repl),
                 out_shardings=(state_shardings, repl), donate_argnums=(0,))
  t0 = time.time()
  compiled = step.lower(state_in, batch, rng).compile()
  compile_s = time.time() - t0
  n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(state_in.params["gen"]))
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  mem = compiled.memory_analysis()
  print(f"config {cfg.name}: {args.devices} devices, global batch {b}, {s}x{s}, "
        f"generator {n_params / 1e6:.1f}M params")
  print(f"compiled train step in {compile_s:.1f} s; {cost.get('flops', 0) / 1e12:.2f} TFLOP per step "
        f"(per device: the step is data parallel)")
  if mem is not None:
    print(f"memory per device (as the CPU backend assigns buffers; TPU/GPU compilers schedule differently): arguments {mem.argument_size_in_bytes / 2**30:.2f} GiB, "
          f"temporaries {mem.temp_size_in_bytes / 2**30:.2f} GiB, output {mem.output_size_in_bytes / 2**30:.2f} GiB")
  if args.run:
    state = jax.jit(task.init, out_shardings=state_shardings)(rng)
    host = np.random.default_rng(0)
    real = {"src": host.integers(0, 256, frames.shape, dtype=np.uint8),
            "drv": host.integers(0, 256, frames.shape, dtype=np.uint8),
            "other": host.integers(0, 256, frames.shape, dtype=np.uint8),
            "src_class": np.arange(b, dtype=np.int32) % cfg.idnet.num_classes,
            "other_class": (np.arange(b, dtype=np.int32) + 1) % cfg.idnet.num_classes,
            **{k: np.zeros(v.shape, np.float32) for k, v in batch.items() if k.endswith(("_pose", "_dyn"))}}
    real = mesh_lib.put_batch(real, mesh)
    t0 = time.time()
    state, metrics = compiled(state, real, rng)
    jax.block_until_ready(state)
    finite = bool(metrics["finite"])
    print(f"ran one step in {time.time() - t0:.1f} s: loss {float(metrics['loss/gen']):.4f}, finite={finite}")
    if not finite:
      raise UserError("the step produced a non-finite loss")
  return 0


def parser():
  from vasa_jax import cli
  p = cli.make_parser("python -m vasa_jax.train.aot",
                      "Compile the stage-1 train step ahead of time for N (fake) devices and report "
                      "FLOPs and memory.", config=True)
  p.add_argument("--devices", type=int, default=8, help="number of data-parallel devices to fake on the CPU")
  p.add_argument("--run", action="store_true", help="also run one step on random weights and data")
  return p


if __name__ == "__main__":
  _force_devices(sys.argv[1:] if any(a.startswith("--devices") for a in sys.argv[1:]) else
                 ["--devices", "8"])
  from vasa_jax import cli
  cli.main_entry(main, parser())
