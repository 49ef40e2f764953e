"""Stage 2 on the tiny config: train + resume, sliding-window sampling, evaluation."""

import json

import jax
import numpy as np
import pytest

import corpora
from vasa_jax import cli, config, evaluate
from vasa_jax.motion import Controls, MotionModel
from vasa_jax.train import __main__ as train_main
from vasa_jax.train import checkpoint


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  return corpora.synthetic_64(tmp_path_factory.mktemp("corpus2") / "syn64", identities=20, frames=24, seed=1)


def test_train_resume_and_evaluate_on_ground_truth_motion(corpus, tmp_path, capsys):
  workdir = str(tmp_path / "s2")
  argv = ["--stage", "2", "--config", "tiny", "--data", corpus, "--workdir", workdir]
  assert cli.run(train_main.main, train_main.parser(), argv + ["--steps", "2"]) == 0
  assert cli.run(train_main.main, train_main.parser(), argv) == 0          # Resumes at 2, ends at 4.
  assert checkpoint.Checkpointer(workdir).latest_step() == 4
  log = capsys.readouterr().out
  assert "step 4/4" in log and "x0=" in log
  out_json = str(tmp_path / "eval.json")
  assert cli.run(evaluate.main, evaluate.parser(), ["--stage", "2", "--workdir", workdir, "--data", corpus,
                                                    "--steps", "2", "--cfg-audio", "0", "1", "--json",
                                                    out_json]) == 0
  table = capsys.readouterr().out
  assert "ground truth" in table and "steps 2, lambda_A 1" in table
  res = json.load(open(out_json))
  assert res["ground_truth"]["mouth_corr"] == pytest.approx(1.0)
  assert res["ground_truth"]["delta_p_ratio"] == pytest.approx(1.0)
  assert len(res["runs"]) == 2 and all(np.isfinite(r["delta_p_deg"]) for r in res["runs"])


def test_stage2_rejects_a_corpus_without_motion(corpus, tmp_path):
  argv = ["--stage", "2", "--config", "tiny", "--data", corpus, "--workdir", str(tmp_path / "w"),
          "--config.motion_train.motion_source=motion"]
  assert cli.run(train_main.main, train_main.parser(), argv) == 2


def test_long_audio_uses_one_compiled_window_step():
  cfg = config.load("tiny")
  model = MotionModel(cfg, motion_dim=6)
  params = jax.jit(model.init)(jax.random.key(0))
  w, spf = cfg.data.window, model.samples_per_frame
  frames = 5 * w + 3                       # Five full windows and a partial one.
  audio = np.random.default_rng(0).normal(0, 0.1, frames * spf - 100).astype(np.float32)
  z = model.sample_sequence(params, audio, np.zeros(6, np.float32), Controls(gaze=(0.1, 0.0)),
                            jax.random.key(1), steps=2, guidance=(0.5, 1.0, 0, 0, 0))
  assert z.shape == (frames, 6) and np.isfinite(z).all()
  step = model.window_step_fn(2, (0.5, 1.0, 0, 0, 0))
  assert step._cache_size() == 1          # Six windows, one compilation.
  again = model.sample_sequence(params, audio, np.zeros(6, np.float32), Controls(gaze=(0.1, 0.0)),
                                jax.random.key(1), steps=2, guidance=(0.5, 1.0, 0, 0, 0))
  np.testing.assert_array_equal(z, again)  # Same seed, same motion.
