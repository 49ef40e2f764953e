"""`python -m vasa_jax.train.aot`: compile the real steps ahead of time, for TPUs or fake CPU devices.

    python -m vasa_jax.train.aot --config paper --topology v5e:4x4     # 16 TPU v5e chips, no TPU needed
    python -m vasa_jax.train.aot --config paper --devices 8 --run      # 8 fake CPU devices, then run

Builds the state and batch shapes of a config with their shardings (the mesh and the
state's sharding rule of `train/mesh.py`, which the train loop uses too) and lowers
and compiles, without allocating the model:
  stage 1         the face latent space's train step (`train/stage1.py`), batch: examples
  stage 2         the motion diffusion's train step (`train/stage2.py`), batch: windows
  sampler window  the streaming sampler's window step (W frames of motion; batch: streams)
  sampler decode  the streaming sampler's decode step (one portrait; batch: frames per call)
The sampler keeps its weights replicated and splits its batch over every chip.

`--topology` compiles for a TPU slice described by libtpu (`jax.experimental.topologies`:
compile-only devices, no TPU attached; `pip install 'vasa_jax[tpu]'`) and reports what the
TPU compiler assigns per chip: memory (arguments, temporaries, outputs; total = arguments
+ outputs - aliased (donated) + temporaries), GFLOP per step (XLA's cost analysis of the
partitioned program, per chip), the sharding, and the largest batch per chip whose step
fits the chip's HBM (`--fit`, default with a topology). That search compiles at the
config's batch per chip b and at 2b, fits a line to the two totals (memory grows about
linearly with the batch), compiles at the batch the line predicts and then one above
(or below), and repeats until a fitting batch and the batch one above it that does
not fit are both known (usually 4 compiles; at most `--max-compiles`).

`--memory-only` (with `--topology`) stops each compile once the TPU compiler has assigned
memory, before it generates code: the paper config's stage-1 step reaches that point in
about 2 minutes on a 2-core CPU, and its code generation runs past 30. Each compile then
runs in a child process that dumps XLA's buffer assignment (`--xla_dump_to`, a temporary
folder) and is stopped when the assignment is written; memory is read from it and GFLOP from
XLA's count of the lowered, unpartitioned step divided by the chips. Arguments, outputs and
donated bytes are the executable's own (a test compares them with a full compile); the
temporaries are those assigned before code generation, which adds some (tiny stage 2:
10.9 MB assigned, 20.4 MB in the executable), so a total near the chip's HBM is not proof of fit.

Without `--topology`, fakes N CPU devices (`--xla_force_host_platform_device_count`):
sharding mistakes and oversized graphs show up on a laptop; `--run` then runs each
train step once on random weights and data.
"""

import dataclasses
import glob
import importlib.util
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

STAGES = ("1", "2", "sampler")
# HBM per chip, GiB, by TPU generation; the part XLA may use is a little less.
HBM_GIB = {"v4": 32, "v5e": 16, "v5p": 95, "v6e": 32}
# Slice names (as Cloud TPU sells them) -> topology. v4/v5p slices count TensorCores, two per chip.
_SHAPES_2D = {4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
_SHAPES_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8"}
_ACCEL = {"v4": "v4", "v5e": "v5litepod", "v5p": "v5p", "v6e": "v6e"}


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
  # The host's own devices stay CPU: with libtpu installed JAX would otherwise try (and fail) to
  # start a TPU backend, noisily. `--topology` loads the TPU compiler by itself.
  os.environ.setdefault("JAX_PLATFORMS", "cpu")


@dataclasses.dataclass(frozen=True)
class Topology:
  generation: str   # v4, v5e, v5p, v6e
  name: str         # what libtpu takes, e.g. v5e:4x4
  chips: int

  @property
  def hbm_bytes(self) -> int:
    return HBM_GIB[self.generation] * 2**30

  @property
  def label(self) -> str:
    cores = self.chips * (2 if self.generation in ("v4", "v5p") else 1)
    return f"{self.generation}-{cores} ({self.name}, {self.chips} chips)"


def parse_topology(text: str) -> Topology:
  """`v5e:4x4`, `v4:2x2x2`, `v5p:2x2x1` (generation:chips per dimension) or a slice name
  (`v5e-16`, `v4-16`, `v5p-8`: v4 and v5p slices count two TensorCores per chip)."""
  from vasa_jax.errors import UserError
  accepted = (f"accepted: GEN:AxB[xC] or a slice name GEN-N, GEN one of {', '.join(HBM_GIB)} "
              "(e.g. v5e:4x4, v4:2x2x2, v5p:2x2x2, v5e-16, v4-16, v5p-8)")
  m = re.fullmatch(r"(v4|v5e|v5p|v6e)([:-])(\d+(?:x\d+)*)", text.strip().lower())
  if not m:
    raise UserError(f"unknown TPU topology {text!r}; {accepted}")
  gen, sep, rest = m.groups()
  three_d = gen in ("v4", "v5p")
  if sep == "-":
    n = int(rest)
    chips = n // 2 if three_d else n
    shape = (_SHAPES_3D if three_d else _SHAPES_2D).get(chips)
    if shape is None or (three_d and n % 2):
      raise UserError(f"unknown TPU slice {text!r}; known {gen} slices: "
                      f"{', '.join(f'{gen}-{c * (2 if three_d else 1)}' for c in (_SHAPES_3D if three_d else _SHAPES_2D))}")
  else:
    shape = rest
  dims = [int(d) for d in shape.split("x")]
  if len(dims) != (3 if three_d else 2) or min(dims) < 1:
    raise UserError(f"unknown TPU topology {text!r}: {gen} takes {3 if three_d else 2} dimensions; {accepted}")
  return Topology(gen, f"{gen}:{shape}", math.prod(dims))


def topology_devices(topo: Topology) -> list:
  """Compile-only devices of a TPU slice (one per chip, as JAX on a TPU VM sees them)."""
  from vasa_jax.errors import UserError
  if importlib.util.find_spec("libtpu") is None:
    raise UserError("--topology needs libtpu, the TPU compiler: pip install 'vasa_jax[tpu]' "
                    "(or use --devices N for fake CPU devices)")
  # This process never drives a TPU: let it load libtpu beside another one (a training run on
  # a TPU VM holds its lock file) and tell libtpu what it would otherwise look up (and warn about).
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  cores = topo.chips * (2 if topo.generation in ("v4", "v5p") else 1)
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", f"{_ACCEL[topo.generation]}-{cores}")
  from jax.experimental import topologies
  # v4 and v5p chips hold two TensorCores that JAX drives as one device ("megacore").
  kwargs = {"chip_config_name": "megacore"} if topo.generation == "v4" else {}
  try:
    desc = topologies.get_topology_desc(topology_name=topo.name, platform="tpu", **kwargs)
  except Exception as e:  # libtpu's own message, on one line.
    raise UserError(f"libtpu does not accept topology {topo.name!r}: {str(e).splitlines()[0]}") from e
  devices = list(desc.devices)
  if len(devices) != topo.chips:
    raise UserError(f"topology {topo.name}: libtpu gave {len(devices)} devices for {topo.chips} chips")
  return devices


@dataclasses.dataclass
class Target:
  """One step to compile: `trace(per_chip_batch) -> jax.stages.Traced`."""
  name: str
  unit: str
  batch: int               # the config's batch per chip
  trace: object
  state: object = None     # (abstract state, shardings) of a train step, for the sharding line
  run: object = None       # (compiled, per_chip_batch) -> one real call's metrics (fake CPU devices)
  note: str = ""           # how to read its GFLOP
  multiple: int = 1        # batches per chip it accepts are multiples of this (its microbatches)
  _traced: dict = dataclasses.field(default_factory=dict, repr=False)

  def _trace(self, b: int):
    if b not in self._traced:
      self._traced.clear()  # the last batch only: the batch search traces many
      self._traced[b] = self.trace(b)
    return self._traced[b]

  def lower(self, b: int):
    return self._trace(b).lower()

  def missed_gflop(self, b: int) -> float:
    """GFLOP (all chips together) that XLA's count misses in the step's loops (`perf.missed_flops`):
    the decodes of `face.remat_decodes`, the microbatches of gradient accumulation."""
    from vasa_jax import perf  # pylint: disable=import-outside-toplevel
    return perf.missed_flops(self._trace(b)) / 1e9


def build_targets(cfg, mesh, stages, rng_seed: int = 0) -> list[Target]:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from vasa_jax import label_motion, watermark
  from vasa_jax.data.synthetic import LABEL_NAMES
  from vasa_jax.face_model import FaceModel
  from vasa_jax.models import wav2vec2
  from vasa_jax.motion import EMOTION_DIM, MotionModel
  from vasa_jax.train import mesh as mesh_lib
  from vasa_jax.train import stage1, stage2
  from vasa_jax.train import state as state_lib

  n = mesh.devices.size
  repl, data = mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)
  rule = mesh_lib.state_sharding(mesh, cfg.mesh)
  rng = jax.random.key(cfg.seed)
  rng_in = jax.ShapeDtypeStruct(rng.shape, rng.dtype, sharding=repl)
  sds = lambda shape, dtype=jnp.float32, sharding=data: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)  # noqa: E731
  per_chip = lambda global_batch: max(1, global_batch // n)  # noqa: E731
  targets = []

  # A wav2vec2 config compiles without the user's weights: the path's architecture when one is given,
  # otherwise wav2vec2-base's (shapes only; `--run` then uses random frozen weights).
  w2v_cfg = None
  if cfg.audio.get("features", "logmel") == "wav2vec2" and not cfg.audio.get("wav2vec2_path"):
    w2v_cfg = wav2vec2.Wav2Vec2Config()

  def random_like(shapes):
    leaves, tree = jax.tree.flatten(shapes)
    keys = jax.random.split(jax.random.key(1), max(1, len(leaves)))
    return jax.tree.unflatten(tree, [0.02 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])

  labels = cfg.motion_train.motion_source == "labels"
  m = len(LABEL_NAMES) if labels else FaceModel(cfg.face).motion_dim  # stage 2's motion vector

  def run_once(compiled, init, shardings, init_args, real, loss_key):
    """Initialises a real state, runs the compiled step once on `real` (fake CPU devices)."""
    state = jax.jit(init, out_shardings=shardings)(rng, *init_args)
    _, metrics = compiled(state, mesh_lib.put_batch(real, mesh), rng)
    return {"loss": float(metrics[loss_key]), "finite": bool(metrics["finite"])}

  if "1" in stages:
    task = stage1.Stage1(cfg, cfg.idnet.num_classes)
    state1 = state_lib.sharded_abstract(task.init, rng, rule)
    step1 = jax.jit(task.train_step, in_shardings=(state1[1], data, repl), out_shardings=(state1[1], repl),
                    donate_argnums=(0,))
    s = cfg.face.image_size
    n_pose, n_dyn = len(label_motion.POSE_LABELS), len(label_motion.DYN_LABELS)

    def batch1(b):  # Labelled data (what the synthetic corpus gives): pose and expression targets.
      frames, ids = sds((b, s, s, 3), jnp.uint8), sds((b,), jnp.int32)
      pose, dyn = sds((b, n_pose)), sds((b, n_dyn))
      return {"src": frames, "drv": frames, "other": frames, "src_class": ids, "other_class": ids,
              "src_pose": pose, "drv_pose": pose, "src_dyn": dyn, "drv_dyn": dyn, "other_dyn": dyn}

    def run1(compiled, b):
      host, real = np.random.default_rng(0), {}
      for key, v in batch1(b * n).items():
        if v.dtype == jnp.uint8:
          real[key] = host.integers(0, 256, v.shape, dtype=np.uint8)
        elif v.dtype == jnp.int32:  # identity classes: src and other differ
          real[key] = (np.arange(v.shape[0], dtype=np.int32) + (key == "other_class")) % cfg.idnet.num_classes
        else:
          real[key] = np.zeros(v.shape, np.float32)
      return run_once(compiled, task.init, state1[1], (), real, "loss/gen")

    targets.append(Target("stage 1 train step", "examples", per_chip(cfg.train.batch_size),
                          lambda b: step1.trace(state1[0], batch1(b * n), rng_in), state1, run1,
                          multiple=cfg.train.microbatches))

  if "2" in stages:
    task2 = stage2.Stage2(cfg, np.zeros(m, np.float32), np.ones(m, np.float32), wav2vec2_cfg=w2v_cfg)
    frozen2 = task2.init_input_shapes()  # stage 2's frozen wav2vec2 (shapes only), or nothing for log-mel
    state2 = state_lib.sharded_abstract(task2.init, rng, rule, *frozen2)
    step2 = jax.jit(task2.train_step, in_shardings=(state2[1], data, repl), out_shardings=(state2[1], repl),
                    donate_argnums=(0,))
    length = cfg.data.context + cfg.data.window
    spf = task2.model.samples_per_frame

    def batch2(b):
      return {"motion": sds((b, length, m)), "audio": sds((b, length * spf)), "gaze": sds((b, 2)),
              "distance": sds((b,)), "emotion": sds((b, EMOTION_DIM)), "cond_present": sds((b, 3), jnp.bool_)}

    def run2(compiled, b):
      host = np.random.default_rng(0)
      real = {k: (np.ones(v.shape, bool) if v.dtype == jnp.bool_ else host.normal(size=v.shape).astype(np.float32))
              for k, v in batch2(b * n).items()}
      frozen = task2.init_inputs() if w2v_cfg is None else tuple(random_like(f) for f in frozen2)
      return run_once(compiled, task2.init, state2[1], frozen, real, "loss/x0")

    targets.append(Target("stage 2 train step", "windows", per_chip(cfg.motion_train.batch_size),
                          lambda b: step2.trace(state2[0], batch2(b * n), rng_in), state2, run2,
                          multiple=cfg.motion_train.microbatches))

  if "sampler" in stages:
    # The streaming sampler's two jitted steps (stream.py), as `sample` and the app build them.
    from vasa_jax import stream
    face = FaceModel(cfg.face)
    motion = MotionModel(cfg, m, wav2vec2_cfg=w2v_cfg)
    d = cfg.diffusion
    window_step = motion.window_step_fn(int(d.sample_steps), (float(d.cfg_audio), float(d.cfg_gaze), 0.0, 0.0, 0.0))
    as_repl = lambda tree: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=repl), tree)  # noqa: E731
    motion_params = as_repl({**jax.eval_shape(motion.init, rng), **motion.frozen_shapes()})
    k, w, spf = cfg.data.context, cfg.data.window, motion.samples_per_frame

    def window_args(b):
      return (motion_params, sds((b, (k + w) * spf)), sds((b, k, m)), sds((b, k + w), jnp.bool_), sds((b, 2)),
              sds((b,)), sds((b, EMOTION_DIM)), sds((b, 3), jnp.bool_), sds((b,), jnp.bool_), rng_in)

    targets.append(Target(f"sampler window step ({d.sample_steps} DDIM steps, W={w})", "streams", 1,
                          lambda b: window_step.trace(*window_args(b * n)),
                          note=f"the GFLOP are the audio features and all {d.sample_steps} guided denoising passes "
                               f"of the DDIM loop (XLA counts its body once; `perf.missed_flops` adds the rest)"))
    marker = watermark.Watermarker(watermark.make_payload("aot", 0))
    no_audio = cfg.copy_and_resolve_references()
    no_audio.audio.features = "logmel"  # The decode step reads no audio: no wav2vec2 weights needed for it.
    _, _, decode = stream._compiled(cfg.to_json(), no_audio.to_json(), int(m), (marker.strength,), False)
    face_params = as_repl(jax.eval_shape(face.init, rng))
    img = jax.ShapeDtypeStruct((1, cfg.face.image_size, cfg.face.image_size, 3), jnp.float32)
    portrait = as_repl(jax.eval_shape(face.encode, face_params, img))
    signs = jax.ShapeDtypeStruct(marker.signs_K.shape, marker.signs_K.dtype, sharding=repl)
    targets.append(Target("sampler decode step (latents -> watermarked frames)", "frames", 10,
                          lambda b: decode.trace(face_params, portrait, sds((b * n, face.motion_dim)), signs,
                                                 sds((b * n,)))))
  return targets


def memory(compiled) -> dict | None:
  if isinstance(compiled, MemoryProbe):
    return compiled.mem
  mem = compiled.memory_analysis()
  if mem is None:
    return None
  out = {"arguments": mem.argument_size_in_bytes, "temporaries": mem.temp_size_in_bytes,
         "outputs": mem.output_size_in_bytes, "aliased": mem.alias_size_in_bytes}
  out["total"] = out["arguments"] + out["outputs"] - out["aliased"] + out["temporaries"]
  return out


_ALLOCATION = re.compile(r"^allocation \d+: size (\d+), (.*):$")


def buffer_memory(text: str) -> dict:
  """Per-device memory from XLA's buffer-assignment dump (`*after_optimizations-buffer-assignment.txt`),
  in `memory()`'s terms. Only the default memory space (HBM) counts; allocations in other memory
  spaces (`color N`, e.g. a TPU core's own vector memory) are left out."""
  out = {"arguments": 0, "temporaries": 0, "outputs": 0, "aliased": 0}
  seen = False
  for line in text.splitlines():
    m = _ALLOCATION.match(line)
    if not m:
      continue
    seen = True
    size, flags = int(m.group(1)), m.group(2)
    color = re.search(r"(?:^|, )color (\d+)", flags)
    if color and color.group(1) != "0":
      continue
    live_out = flags.endswith("maybe-live-out")
    if flags.startswith("parameter"):
      out["arguments"] += size
      if live_out:
        out["aliased"] += size
        out["outputs"] += size
    elif live_out:
      out["outputs"] += size
    else:
      out["temporaries"] += size
  if not seen:
    raise ValueError("no allocations in the buffer-assignment dump")
  out["total"] = out["arguments"] + out["outputs"] - out["aliased"] + out["temporaries"]
  return out


class MemoryProbe:
  """What a `--memory-only` compile gives: the memory of its buffer assignment and the lowered step's
  GFLOP per chip (the code itself is never generated)."""

  def __init__(self, mem: dict, gflop_per_chip: float):
    self.mem, self.gflop_per_chip = mem, gflop_per_chip


def probe_memory(argv: list[str], name: str, batch: int, module: str, timeout_s: float = 7200.0) -> dict | None:
  """Compiles target `name` at `batch` per chip in a child process (`argv`: this command's own
  arguments) with XLA's dumps on, reads the buffer assignment of module `module` as soon as the
  compiler writes it and stops the child. None when the compiler runs out of memory first."""
  from vasa_jax.errors import UserError
  with tempfile.TemporaryDirectory(prefix="vasa_aot_") as tmp:
    dump = os.path.join(tmp, "dump")
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_dump_to={dump}"
                        f" --xla_dump_hlo_module_re={re.escape(module)}").strip()
    log_path = os.path.join(tmp, "log")
    with open(log_path, "w") as log:
      child = subprocess.Popen([sys.executable, "-m", "vasa_jax.train.aot", *argv, "--probe", f"{name}:{batch}"],
                               env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
      deadline = time.time() + timeout_s
      while True:
        done = child.poll() is not None
        # The buffer assignment is written whole, then the live ranges and the usage report: once the
        # report exists, the assignment is complete.
        reports = glob.glob(os.path.join(dump, f"*.{module}.*after_optimizations-memory-usage-report.txt"))
        if reports:
          with open(reports[0].replace("-memory-usage-report.txt", "-buffer-assignment.txt")) as f:
            return buffer_memory(f.read())
        if done:
          with open(log_path) as f:
            text = f.read()
          if _out_of_memory(text):
            return None
          last = [ln for ln in text.splitlines() if ln.strip()][-1:] or ["(no output)"]
          raise UserError(f"compiling {name} at {batch} per chip stopped before assigning memory "
                          f"(exit status {child.returncode}): {last[0]}")
        if time.time() > deadline:
          raise UserError(f"compiling {name} at {batch} per chip: no buffer assignment after {timeout_s:.0f} s")
        time.sleep(0.5)
    finally:
      if child.poll() is None:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def module_name(lowered) -> str:
  """The XLA module name of a lowered step (what `--xla_dump_hlo_module_re` matches), read from its IR's
  symbol rather than from its printed text (tens of MB for the paper's stage 1)."""
  return str(lowered.compiler_ir().operation.attributes["sym_name"]).strip('"')


def lowered_gflop(lowered) -> float:
  """XLA's FLOP count of a lowered, not yet partitioned or compiled step (all chips together), by the
  host CPU's cost model: a TPU compile-only client gives no cost analysis before compiling."""
  from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
  from jax._src.lib import _jax  # pylint: disable=import-outside-toplevel
  cost = _jax.hlo_module_cost_analysis(xla_bridge.get_backend("cpu"), lowered._lowering.hlo().as_hlo_module())
  return float(cost.get("flops", 0.0)) / 1e9


def gflop(compiled) -> float:
  if isinstance(compiled, MemoryProbe):
    return compiled.gflop_per_chip
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", 0.0)) / 1e9


def _out_of_memory(e: Exception | str) -> bool:
  text = str(e).lower()
  return "resource_exhausted" in text or "out of memory" in text or "exceeds the memory" in text


def largest_fitting(total_at, capacity: int, start: int, max_compiles: int = 6):
  """The largest batch b with `total_at(b) <= capacity` (`total_at`: bytes, or None when the compiler
  ran out of memory). Line through the two largest fitting batches -> predicted batch -> verify it and
  its neighbour; with one fitting batch below one that does not fit, the middle of the two, and the
  middle too where the line lands on or next to a batch known not to fit.
  Returns (largest fitting or 0, smallest known not fitting or None, batches tried)."""
  fits: dict[int, int] = {}
  lo, hi, tried = 0, None, []
  b = max(1, start)
  while len(tried) < max_compiles:
    total = total_at(b)
    tried.append(b)
    if total is not None and total <= capacity:
      fits[b], lo = total, max(lo, b)
    else:
      hi = b if hi is None else min(hi, b)
    if hi is not None and hi <= lo + 1:
      break
    if not fits:  # Even the first batch does not fit: halve.
      if b == 1:
        break
      b = max(1, b // 2)
      continue
    if len(fits) >= 2:
      (b1, t1), (b2, t2) = sorted(fits.items())[-2:]
      slope = (t2 - t1) / (b2 - b1)
      guess = b2 + int((capacity - t2) // slope) if slope > 0 else 2 * b2
    elif hi is not None:  # One fitting batch and one too large: halve the gap.
      guess = (lo + hi) // 2
    else:
      guess = 2 * lo
    guess = max(lo + 1, guess if hi is None else min(guess, hi - 1))
    if hi is not None and (guess >= hi - 1 or guess in tried) and hi - lo > 2:
      # The line overshoots a batch already known not to fit (memory grows faster than linearly
      # there): bisect the gap instead of walking down from it one batch at a time.
      guess = (lo + hi) // 2
    if guess in tried:  # Already known: step next to it.
      guess = lo + 1
    b = guess
  return lo, hi, tried


def _gib(x: float) -> str:
  return f"{x / 2**30:.2f} GiB"


def main(args) -> int:
  # Imported here, not at the top: jax must load after `_force_devices` has set the device count.
  import jax

  from vasa_jax.errors import UserError
  from vasa_jax.train import mesh as mesh_lib

  cfg = args.config
  stages = [s.strip() for s in args.stages.split(",") if s.strip()]
  unknown = [s for s in stages if s not in STAGES]
  if unknown or not stages:
    raise UserError(f"--stages: unknown stage {unknown[0] if unknown else args.stages!r}; "
                    f"accepted: {', '.join(STAGES)} (comma-separated)")
  topo = None
  if args.memory_only and not args.topology:
    raise UserError("--memory-only needs --topology (it reads the TPU compiler's buffer assignment)")
  if args.topology:
    if args.run:
      raise UserError("--run needs real devices: it runs on fake CPU devices (--devices), not a --topology")
    topo = parse_topology(args.topology)
    devices = topology_devices(topo)
    where = f"TPU {topo.label}, {devices[0].device_kind}, {HBM_GIB[topo.generation]} GiB HBM per chip"
  else:
    if jax.device_count() != args.devices:
      raise UserError(f"asked for {args.devices} devices but JAX sees {jax.device_count()} "
                      f"({jax.devices()[0].platform}); run this command in a fresh process")
    devices = jax.devices()
    where = f"{len(devices)} devices ({devices[0].platform}; memory as the CPU backend assigns buffers, "
    where += "TPU/GPU compilers schedule differently)"
  n = len(devices)
  mesh = mesh_lib.make_mesh(cfg.mesh, devices)
  if "1" in stages:
    mesh_lib.check_batch_size(cfg.train.batch_size, n, cfg.train.microbatches)
  if "2" in stages:
    mesh_lib.check_batch_size(cfg.motion_train.batch_size, n, cfg.motion_train.microbatches)
  print(f"config {cfg.name}: {where}; mesh data={mesh.shape['data']} x fsdp={mesh.shape['fsdp']} "
        f"(mesh.fsdp={cfg.mesh.fsdp}, fsdp_min_params={cfg.mesh.fsdp_min_params})", flush=True)
  fit = args.fit if args.fit is not None else topo is not None
  targets = build_targets(cfg, mesh, stages)
  if args.probe:  # A `--memory-only` child: compile one target; the parent stops it at buffer assignment.
    name, _, b = args.probe.rpartition(":")
    [target] = [t for t in targets if t.name == name]
    target.lower(int(b)).compile()
    return 0
  # A child gets this command's own arguments (the config and its overrides included).
  probe_argv = [a for a in sys.argv[1:] if a != "--memory-only"]
  for target in targets:
    compiled_at: dict[int, object] = {}

    def compile_at(b, target=target):
      t0 = time.time()
      try:
        if args.memory_only:
          lowered = target.lower(b)
          module = module_name(lowered)
          mem = probe_memory(probe_argv, target.name, b, module)
          counted = lowered_gflop(lowered) + target.missed_gflop(b)
          result = None if mem is None else MemoryProbe(mem, counted / n)
          compiled_at[b] = (result, time.time() - t0)
          return compiled_at[b]
        compiled_at[b] = (target.lower(b).compile(), time.time() - t0)
      except Exception as e:
        if topo is not None and _out_of_memory(e):
          compiled_at[b] = (None, time.time() - t0)
        else:
          raise
      return compiled_at[b]

    compiled, seconds = compile_at(target.batch)
    head = f"{target.name}: batch {target.batch * n} ({target.batch} {target.unit} per chip)"
    if compiled is None:
      print(f"{head}: does not fit ({seconds:.0f} s to compile)", flush=True)
    else:
      mem = memory(compiled)
      how = "memory assigned in" if args.memory_only else "compiled in"
      flops = gflop(compiled)
      if not isinstance(compiled, MemoryProbe):  # what XLA's count misses in loops, shared by the chips
        flops += target.missed_gflop(target.batch) / n
      print(f"{head}: {how} {seconds:.1f} s; {flops:.2f} GFLOP per step per chip", flush=True)
      if target.note:
        print(f"  ({target.note})", flush=True)
      if mem is not None:
        print(f"  memory per chip: arguments {_gib(mem['arguments'])}, temporaries {_gib(mem['temporaries'])}, "
              f"outputs {_gib(mem['outputs'])} ({_gib(mem['aliased'])} of them donated arguments), "
              f"total {_gib(mem['total'])}"
              + (" (temporaries as assigned before code generation, which adds some)" if args.memory_only else ""),
              flush=True)
    if target.state is not None:
      print(f"  sharding: batch over {n} devices; state {mesh_lib.describe(target.state[1], target.state[0])}"
            + (" (replicated)" if mesh.shape["fsdp"] == 1 else f" over fsdp={mesh.shape['fsdp']}"), flush=True)
    else:
      print(f"  sharding: batch over {n} devices; weights replicated", flush=True)
    if fit and topo is not None:
      def total_at(b, target=target):
        c, _ = compiled_at[b] if b in compiled_at else compile_at(b)
        mem = None if c is None else memory(c)
        return None if mem is None else mem["total"]

      # With microbatches the batch per chip moves in whole slices: search over the slice count.
      k = target.multiple
      lo, hi, tried = largest_fitting(lambda j: total_at(j * k), topo.hbm_bytes, target.batch // k, args.max_compiles)
      lo, hi, tried = lo * k, None if hi is None else hi * k, [j * k for j in tried]
      bound = "" if hi is not None and hi == lo + k else " (search stopped at --max-compiles: a lower bound)"
      if k > 1:
        bound += f" ({k} microbatches)"
      if args.memory_only:  # Code generation adds temporaries: the assigned totals are lower bounds.
        bound += "; from buffer assignment before code generation, so at most this"
      print(f"  largest batch per chip that fits {HBM_GIB[topo.generation]} GiB: {lo} {target.unit}{bound} "
            f"(compiled at {', '.join(map(str, tried))})", flush=True)
    if args.run and target.run is not None and compiled is not None:
      t0 = time.time()
      out = target.run(compiled, target.batch)  # The executable just compiled: no second compile.
      print(f"  ran one step in {time.time() - t0:.1f} s: loss {out['loss']:.4f}, finite={out['finite']}", flush=True)
      if not out["finite"]:
        raise UserError(f"{target.name} produced a non-finite loss")
  return 0


def parser():
  from vasa_jax import cli
  p = cli.make_parser("python -m vasa_jax.train.aot",
                      "Compile both stages' train steps and the streaming sampler's steps ahead of time "
                      "for a TPU topology (no TPU needed) or N fake CPU devices; report memory and FLOPs "
                      "per chip and the largest batch that fits.", config=True)
  p.add_argument("--topology", help="TPU slice to compile for: v5e:4x4, v4:2x2x2, v5p:2x2x2 or a slice name "
                 "(v5e-16, v4-16, v5p-8); needs libtpu (pip install 'vasa_jax[tpu]')")
  p.add_argument("--devices", type=int, default=8, help="without --topology: fake CPU devices to compile for")
  p.add_argument("--stages", default="1,2,sampler", help="what to compile: 1, 2, sampler (comma-separated)")
  p.add_argument("--fit", action=__import__("argparse").BooleanOptionalAction, default=None,
                 help="search the largest batch per chip that fits HBM (default: on with --topology)")
  p.add_argument("--max-compiles", type=int, default=6, help="compiles per step for --fit (each may take minutes)")
  p.add_argument("--memory-only", action="store_true",
                 help="with --topology: stop each compile once the TPU compiler has assigned memory (before it "
                 "generates code, which for a large stage 1 takes longer than 30 min on a small CPU); GFLOP then "
                 "come from the lowered step")
  p.add_argument("--probe", help=__import__("argparse").SUPPRESS)  # internal: a --memory-only child
  p.add_argument("--run", action="store_true", help="fake CPU devices: also run each train step once on "
                 "random weights and data")
  return p


if __name__ == "__main__":
  argv = sys.argv[1:]
  if not any(a == "--topology" or a.startswith("--topology=") for a in argv):
    _force_devices(argv if any(a.startswith("--devices") for a in argv) else argv + ["--devices", "8"])
  else:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
  from vasa_jax import cli
  cli.main_entry(main, parser())
