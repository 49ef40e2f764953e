"""Shared test setup: quiet, CPU-only JAX with a compilation cache across tests; the tiny bundle."""

import os
import signal
import tempfile

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

# Several tests build the same model and step; compiling each once per session
# keeps the suite fast on 2 cores.
_CACHE = os.environ.get("VASA_TEST_COMPILE_CACHE") or os.path.join(tempfile.gettempdir(), "vasa_jax_test_xla_cache")
# `sample` turns on its own cache (compile_cache), by default in the user's home: the tests,
# and the commands they start, use this one.
os.environ["VASA_JAX_COMPILE_CACHE"] = _CACHE
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

# A background job of a non-interactive shell (as a CI runner may start the suite) begins with
# SIGINT ignored, and commands the tests start would inherit that: the Ctrl-C tests need Python's
# usual handling in this process and its children (a Python handler becomes SIG_DFL across exec).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
  signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
  """A local GCS emulator (tests/gcs_emulator.py) for one test module; its tests run their gs://
  commands through `gcs.run`."""
  import gcs_emulator  # Needs fake-gcs-server's wrapper: imported only by the modules that ask for it.
  emu = gcs_emulator.Emulator(str(tmp_path_factory.mktemp("gcs") / "emulator.log"))
  yield emu
  emu.close()


@pytest.fixture(scope="session")
def tiny_bundle(tiny_pipeline):
  """The tiny pipeline's bundle folder."""
  return tiny_pipeline["bundle"]


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
  """Stage 1 (2 steps) -> motion corpus -> stage 2 (2 steps) -> bundle: the real pipeline, tiny.
  Returns its folders: clips, run1, motion, run2, bundle."""
  import corpora
  from vasa_jax import cli
  from vasa_jax.train import __main__ as train_main
  from vasa_jax.train import export, extract_motion

  root = tmp_path_factory.mktemp("pipeline")
  clips = str(root / "syn64")
  corpora.synthetic_64(clips, identities=20, frames=24, seed=2)
  run1, run2, motion = str(root / "run1"), str(root / "run2"), str(root / "motion")
  common = ["--config", "tiny", "--steps", "2"]
  assert cli.run(train_main.main, train_main.parser(), common + ["--data", clips, "--workdir", run1]) == 0
  extract_motion.extract(run1, clips, motion, batch=8, progress=False)
  assert cli.run(train_main.main, train_main.parser(),
                 common + ["--stage", "2", "--data", motion, "--workdir", run2,
                           "--config.motion_train.motion_source=motion"]) == 0
  out = str(root / "bundle")
  digest = export.export(run1, run2, out)
  assert len(digest) == 16
  return {"clips": clips, "run1": run1, "motion": motion, "run2": run2, "bundle": out}


# The suite runs on two workers, one test file at a time (`-n 2 --dist loadfile`), and ends when the
# busier worker does. xdist hands out files with the most tests first; these files take the longest
# (`--durations` of a full run on a slow 2-core machine, 2026-12-07: seconds per file in the comments)
# and go first instead, so that no long file starts last beside an idle worker (test_fsdp.py had been
# last in each full run).
HEAVIEST_FIRST = ("test_stage1.py",           # 1540
                  "test_aot.py",              # 1011
                  "test_sample_cli.py",       # 790: the first to build the tiny pipeline on its worker
                  "test_fsdp.py",             # 506
                  "test_pixel_eval.py",       # 504
                  "test_stage2_wav2vec2.py",  # 392
                  "test_microbatches.py",     # 328
                  "test_multiprocess.py",     # 257
                  "test_gcs_paths.py",        # 225
                  "test_resume_tasks.py",     # 222
                  "test_preemption.py",       # 162
                  "test_app.py")              # 151


def pytest_configure(config):
  if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep the order below.
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
  rank = {name: i for i, name in enumerate(HEAVIEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # Stable: tests keep their order in a file.
