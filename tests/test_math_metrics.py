"""Stage-2 evaluation metrics on generated cases with known shift, scale, jitter and control errors."""

import numpy as np
import pytest

from vasa_jax import evaluate
from vasa_jax.data import synthetic

NAMES = list(synthetic.LABEL_NAMES)
COL = {n: i for i, n in enumerate(NAMES)}
T = 200
STEP = 0.01             # Yaw ramps by 0.01 rad per frame; pitch and roll stay still.
GAZE, DIST = (0.2, -0.1), 1.3


def _clip():
  t = np.arange(T, dtype=np.float32)
  labels = {n: np.zeros(T, np.float32) for n in NAMES}
  labels["yaw"] = STEP * t
  labels["mouth_open"] = 0.5 + 0.4 * np.sin(2 * np.pi * t / 40)
  labels["gaze_theta"] = np.full(T, GAZE[0], np.float32)
  labels["gaze_phi"] = np.full(T, GAZE[1], np.float32)
  labels["distance"] = np.full(T, DIST, np.float32)
  return {"labels": labels, "attrs": {"gaze": list(GAZE), "distance": DIST}}


def _rows(clip):
  return np.stack([clip["labels"][n] for n in NAMES], -1)


def _metrics(edit):
  clip = _clip()
  gen = _rows(clip).copy()
  edit(gen)
  return evaluate.motion_metrics([clip], [gen], NAMES)


def test_ground_truth_scores_perfectly():
  m = _metrics(lambda g: None)
  assert m["mouth_corr"] == pytest.approx(1.0) and m["delta_p_ratio"] == pytest.approx(1.0)
  assert m["delta_p_deg"] == pytest.approx(np.degrees(STEP / 3), rel=1e-4)   # Mean over yaw, pitch, roll.
  assert m["gaze_err_deg"] == pytest.approx(0.0, abs=1e-5) and m["distance_err"] == pytest.approx(0.0, abs=1e-6)


def test_pose_scale_frozen_pose_and_jitter_move_delta_p_as_expected():
  def double(g):
    g[:, COL["yaw"]] *= 2.0

  def freeze(g):
    g[:, [COL["yaw"], COL["pitch"], COL["roll"]]] = g[0, [COL["yaw"], COL["pitch"], COL["roll"]]]

  def jitter(g):   # Pitch alternates +-0.005 rad: every frame-to-frame change is 0.01 rad.
    g[:, COL["pitch"]] += 0.005 * (-1.0) ** np.arange(T)

  assert _metrics(double)["delta_p_ratio"] == pytest.approx(2.0, rel=1e-4)
  frozen = _metrics(freeze)
  assert frozen["delta_p_ratio"] == 0.0 and frozen["delta_p_deg"] == 0.0
  shaky = _metrics(jitter)
  assert shaky["delta_p_ratio"] == pytest.approx(2.0, rel=1e-3)
  assert shaky["delta_p_deg"] == pytest.approx(np.degrees(2 * STEP / 3), rel=1e-3)


def test_mouth_correlation_ignores_scale_and_sees_shift():
  def scale(g):
    g[:, COL["mouth_open"]] = 3.0 * g[:, COL["mouth_open"]] + 1.0

  def quarter_period(g):    # sin -> cos: uncorrelated over whole periods.
    g[:, COL["mouth_open"]] = np.roll(g[:, COL["mouth_open"]], 10)

  def half_period(g):
    g[:, COL["mouth_open"]] = np.roll(g[:, COL["mouth_open"]], 20)

  def still(g):
    g[:, COL["mouth_open"]] = 0.5

  assert _metrics(scale)["mouth_corr"] == pytest.approx(1.0, abs=1e-5)
  assert abs(_metrics(quarter_period)["mouth_corr"]) < 0.02
  assert _metrics(half_period)["mouth_corr"] == pytest.approx(-1.0, abs=1e-4)
  assert _metrics(still)["mouth_corr"] == 0.0


def test_control_errors_in_degrees_and_distance_units():
  def gaze_off(g):          # 0.1 rad off in theta, exact in phi: mean abs error 0.05 rad.
    g[:, COL["gaze_theta"]] += 0.1

  def gaze_both(g):
    g[:, COL["gaze_theta"]] -= 0.2
    g[:, COL["gaze_phi"]] += 0.1

  def dist_off(g):
    g[:, COL["distance"]] -= 0.25

  assert _metrics(gaze_off)["gaze_err_deg"] == pytest.approx(np.degrees(0.05), rel=1e-4)
  assert _metrics(gaze_both)["gaze_err_deg"] == pytest.approx(np.degrees(0.15), rel=1e-4)
  m = _metrics(dist_off)
  assert m["distance_err"] == pytest.approx(0.25, rel=1e-5) and m["gaze_err_deg"] == pytest.approx(0.0, abs=1e-5)


def test_ratio_is_against_the_mean_truth_over_clips():
  slow, fast = _clip(), _clip()
  fast["labels"]["yaw"] = 3 * fast["labels"]["yaw"]          # Truth dP: 1 and 3 units.
  gens = [_rows(slow), _rows(slow)]                          # Both generated at 1 unit.
  m = evaluate.motion_metrics([slow, fast], gens, NAMES)
  assert m["delta_p_ratio"] == pytest.approx(1.0 / 2.0, rel=1e-4)
  assert evaluate.delta_p_deg(_rows(fast), [COL["yaw"], COL["pitch"], COL["roll"]]) == pytest.approx(
      np.degrees(STEP), rel=1e-4)


def test_synthetic_truth_beats_trivial_motion():
  # What a model that learnt nothing would output: the first frame held, mean mouth.
  speech = np.random.default_rng(1).normal(0, 0.1, T * synthetic.SAMPLE_RATE // synthetic.FPS)
  speech *= np.repeat(np.random.default_rng(2).random(T // 10) > 0.4, speech.size // (T // 10))  # Pauses.
  motion = synthetic.motion_from_audio(speech.astype(np.float32), seed=3, gaze=GAZE, distance=DIST)
  clip = {"labels": motion, "attrs": {"gaze": list(GAZE), "distance": DIST}}
  truth = _rows(clip)
  frozen = np.repeat(truth[:1], T, axis=0)
  shuffled = truth[np.random.default_rng(0).permutation(T)]
  m_truth = evaluate.motion_metrics([clip], [truth], NAMES)
  m_frozen = evaluate.motion_metrics([clip], [frozen], NAMES)
  m_shuffled = evaluate.motion_metrics([clip], [shuffled], NAMES)
  assert m_frozen["delta_p_ratio"] == 0.0 and m_frozen["mouth_corr"] == 0.0
  assert m_shuffled["delta_p_ratio"] > 3.0 and abs(m_shuffled["mouth_corr"]) < 0.2
  assert m_truth["mouth_corr"] == pytest.approx(1.0) and m_truth["delta_p_ratio"] == pytest.approx(1.0)
