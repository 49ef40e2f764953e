"""`aot`: the paper config compiles for 8 fake CPU devices; with libtpu, the steps compile for a TPU
topology (no TPU attached) with per-chip memory, FLOPs and the largest batch that fits."""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

import small_step
from vasa_jax.errors import UserError
from vasa_jax.train import aot

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _aot(*args, timeout=900):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, "-m", "vasa_jax.train.aot", *args], capture_output=True, text=True,
                        cwd=REPO, env=env, timeout=timeout)


def test_tiny_steps_compile_and_run_on_four_fake_devices():
  # What is tested is compiling and running over the devices, on the smaller step.
  res = _aot("--config", "tiny", "--devices", "4", "--stages", "1,2", "--run", *small_step.flags())
  assert res.returncode == 0, res.stderr[-2000:]
  assert "4 devices" in res.stdout and "mesh data=4 x fsdp=1" in res.stdout
  assert res.stdout.count("finite=True") == 2  # stage 1 and stage 2 each ran one step


def test_tiny_fsdp_state_is_reported_sharded():
  res = _aot("--config", "tiny", "--devices", "2", "--stages", "2", "--config.mesh.fsdp=-1",
             "--config.mesh.fsdp_min_params=1024")
  assert res.returncode == 0, res.stderr[-2000:]
  assert "mesh data=1 x fsdp=2" in res.stdout
  sharded = re.search(r"state (\d+) arrays \((\d+)% of", res.stdout)
  assert sharded and int(sharded.group(1)) > 0 and int(sharded.group(2)) > 50, res.stdout


@pytest.mark.slow
def test_paper_step_compiles_on_eight_fake_devices():
  res = _aot("--config", "configs/paper.py", "--devices", "8")
  assert res.returncode == 0, res.stderr[-2000:]
  assert "config paper: 8 devices" in res.stdout
  assert "stage 1 train step: batch 32 (4 examples per chip): compiled" in res.stdout
  assert "stage 2 train step: batch 256" in res.stdout and "sampler decode step" in res.stdout


@pytest.mark.slow
def test_a_wav2vec2_stage_2_compiles_and_runs_without_the_users_weights():
  # No audio.wav2vec2_path: wav2vec2-base's shapes are compiled, and --run uses random frozen weights.
  res = _aot("--config", "tiny", "--devices", "2", "--stages", "2,sampler", "--run",
             "--config.audio.features=wav2vec2")
  assert res.returncode == 0, res.stderr[-2000:]
  assert "finite=True" in res.stdout and "sampler decode step" in res.stdout
  # The frozen wav2vec2-base (~94M weights) rides in stage 2's state: hundreds of MiB, not the tiny model's few.
  state_mib = float(re.search(r"state \d+ arrays \(\d+% of (\d+) MiB\)", res.stdout).group(1))
  assert state_mib > 300, res.stdout


def test_indivisible_batch_is_a_clear_error():
  res = _aot("--config", "tiny", "--devices", "3")
  assert res.returncode == 2
  assert "does not split over 3 devices" in res.stderr


def test_topology_names_and_clear_errors(monkeypatch):
  assert aot.parse_topology("v5e:4x4") == aot.Topology("v5e", "v5e:4x4", 16)
  assert aot.parse_topology("v5e-16") == aot.Topology("v5e", "v5e:4x4", 16)
  assert aot.parse_topology("v4-16") == aot.Topology("v4", "v4:2x2x2", 8)      # 16 TensorCores, 8 chips
  assert aot.parse_topology("v5p-8") == aot.Topology("v5p", "v5p:2x2x1", 4)
  assert aot.parse_topology("v5p:2x2x2").chips == 8
  for bad in ("v9:2x2", "v5e", "tpu", "v5e:4x4x4", "v4-7"):
    with pytest.raises(UserError, match="unknown TPU"):
      aot.parse_topology(bad)
  monkeypatch.setattr(aot.importlib.util, "find_spec", lambda name: None)  # as without libtpu
  with pytest.raises(UserError, match=r"needs libtpu.*pip install 'vasa_jax\[tpu\]'"):
    aot.topology_devices(aot.parse_topology("v5e:2x2"))


def test_batch_search_finds_the_boundary_in_few_compiles():
  # Memory grows linearly with a fixed part; the compiler runs out of memory above 40.
  tried = []

  def total_at(b):
    tried.append(b)
    return None if b > 40 else 1000 + 37 * b

  lo, hi, order = aot.largest_fitting(total_at, capacity=1000 + 37 * 23 + 5, start=2)
  assert (lo, hi) == (23, 24) and order == tried and len(tried) <= 5
  lo, hi, _ = aot.largest_fitting(lambda b: 10 * b, capacity=5, start=4)  # not even 1 fits
  assert (lo, hi) == (0, 1)
  # The start fits, twice the start does not: the gap is halved, not walked down one batch at a time.
  lo, hi, order = aot.largest_fitting(lambda b: 70 + 3 * b, capacity=70 + 3 * 12 + 1, start=8, max_compiles=4)
  assert (lo, hi) == (12, 13) and order == [8, 16, 12, 13]
  # Memory that grows faster than linearly past some batch: the line through two small fitting batches
  # overshoots, and the search bisects the gap (as v5p's stage 2 did: 64 and 128 fit, 6330 does not)
  # instead of trying 6329, 6328, ...
  def convex(b):
    return 100 + b + (0 if b < 1000 else (b - 1000) ** 2)
  lo, hi, order = aot.largest_fitting(convex, capacity=100 + 2000 + 1, start=64, max_compiles=8)
  assert order[:3] == [64, 128, 2001] and order[3] == (128 + 2001) // 2
  assert hi - lo < 2001 - 128 and all(b not in order for b in (2000, 1999))


_LIBTPU = importlib.util.find_spec("libtpu") is not None


@pytest.mark.slow
@pytest.mark.skipif(not _LIBTPU, reason="libtpu not installed (pip install 'vasa_jax[tpu]')")
def test_stage2_compiles_for_a_v5e_2x2_topology_without_a_tpu():
  res = _aot("--config", "tiny", "--topology", "v5e:2x2", "--stages", "2", "--max-compiles", "3")
  assert res.returncode == 0, res.stderr[-2000:]
  out = res.stdout
  assert "TPU v5e-4 (v5e:2x2, 4 chips), TPU v5 lite, 16 GiB HBM per chip" in out
  assert "stage 2 train step: batch 4 (1 windows per chip): compiled" in out
  gflop = float(re.search(r"([\d.]+) GFLOP per step per chip", out).group(1))
  total = float(re.search(r"total ([\d.]+) GiB", out).group(1))
  assert gflop > 0 and 0 < total < 16
  assert re.search(r"largest batch per chip that fits 16 GiB: \d+ windows", out)


@pytest.mark.skipif(not _LIBTPU, reason="libtpu not installed (pip install 'vasa_jax[tpu]')")
def test_unknown_topology_is_one_line_error():
  res = _aot("--config", "tiny", "--topology", "v5e:3x3", "--stages", "2")
  assert res.returncode == 2
  assert res.stderr.strip().splitlines()[-1].startswith("error: libtpu does not accept topology 'v5e:3x3'")


_DUMP = """BufferAssignment:
allocation 0: size 512, thread-local:
 value: <1 add.1 @0> (size=512,offset=0): f32[128]
allocation 1: size 4096, parameter 0, shape |f32[1024]| at ShapeIndex {}, maybe-live-out:
 value: <2 p.0 @0> (size=4096,offset=0): f32[1024]
allocation 2: size 2048, parameter 1, shape |f32[512]| at ShapeIndex {}:
allocation 3: size 1024, maybe-live-out:
allocation 4: size 256, output shape is |(f32[1024], f32[256])|, maybe-live-out:
allocation 5: size 1000000, preallocated-temp:
allocation 6: size 7777, color 1, preallocated-temp:
allocation 7: size 64, color 6, thread-local:
allocation 8: size 128, constant:
"""


def test_buffer_assignment_dump_reads_as_memory_analysis_terms():
  mem = aot.buffer_memory(_DUMP)
  # Donated parameter 0 is an argument and an output; the other memory spaces (color 1, 6) are left out.
  assert mem == {"arguments": 4096 + 2048, "aliased": 4096, "outputs": 4096 + 1024 + 256,
                 "temporaries": 512 + 1_000_000 + 128,
                 "total": 4096 + 2048 + (4096 + 1024 + 256) - 4096 + 512 + 1_000_000 + 128}
  with pytest.raises(ValueError):
    aot.buffer_memory("BufferAssignment:\n")


@pytest.mark.slow
@pytest.mark.skipif(not _LIBTPU, reason="libtpu not installed (pip install 'vasa_jax[tpu]')")
def test_memory_only_stops_at_buffer_assignment_and_agrees_with_the_full_compile():
  res = _aot("--config", "tiny", "--topology", "v5e:2x2", "--stages", "2", "--memory-only", "--max-compiles", "3")
  assert res.returncode == 0, res.stderr[-2000:]
  assert "stage 2 train step: batch 4 (1 windows per chip): memory assigned in" in res.stdout
  assert re.search(r"largest batch per chip that fits 16 GiB: \d+ windows", res.stdout)
  # The same step compiled in full, in one process with the dumps on: arguments, outputs and donated
  # bytes are the executable's own; its temporaries grow a little during code generation.
  script = """
import glob, json, os, sys, tempfile
dump = tempfile.mkdtemp()
os.environ["XLA_FLAGS"] = "--xla_dump_to=" + dump
from vasa_jax import config
from vasa_jax.train import aot, mesh as mesh_lib
cfg = config.load("tiny")
mesh = mesh_lib.make_mesh(cfg.mesh, aot.topology_devices(aot.parse_topology("v5e:2x2")))
[t] = aot.build_targets(cfg, mesh, ["2"])
lowered = t.lower(t.batch)
full = aot.memory(lowered.compile())
[f] = glob.glob(dump + "/*." + aot.module_name(lowered) + ".*after_optimizations-buffer-assignment.txt")
print(json.dumps({"full": full, "dump": aot.buffer_memory(open(f).read()), "gflop": aot.lowered_gflop(lowered)}))
__import__("shutil").rmtree(dump)
"""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
  assert res.returncode == 0, res.stderr[-2000:]
  got = __import__("json").loads(res.stdout.strip().splitlines()[-1])
  for k in ("arguments", "outputs", "aliased"):
    assert got["dump"][k] == got["full"][k], k
  assert 0 < got["dump"]["temporaries"] <= got["full"]["temporaries"]
  assert got["gflop"] > 0


def test_memory_only_without_a_topology_is_a_clear_error():
  res = _aot("--config", "tiny", "--devices", "2", "--stages", "2", "--memory-only")
  assert res.returncode == 2
  assert res.stderr.strip().splitlines()[-1] == (
      "error: --memory-only needs --topology (it reads the TPU compiler's buffer assignment)")
