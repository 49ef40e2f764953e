"""Pixel-level evaluation measures on cases with known answers."""

import numpy as np
import pytest

from vasa_jax import evaluate, readout
from vasa_jax.data import synthetic
from vasa_jax.models import face_latent


def _mouth_track(seed=3, frames=100):
  _, track = synthetic.synth_speech(seed, frames, synthetic.FPS)
  return np.asarray(track["open"], np.float64)


def test_lip_sync_truth_one_frozen_zero_shift_lowers():
  truth = _mouth_track()
  assert evaluate.correlation(truth, truth) == pytest.approx(1.0)
  assert evaluate.correlation(np.full_like(truth, 0.3), truth) == 0.0  # A frozen mouth carries nothing.
  shifted = np.roll(truth, 4)  # Audio 160 ms late.
  assert evaluate.correlation(shifted, truth) < 0.6
  other = _mouth_track(seed=11)  # Another utterance's mouth.
  assert abs(evaluate.correlation(other, truth)) < 0.3


def test_region_psnr_counts_only_the_mask():
  gt = np.zeros((2, 8, 8, 3))
  out = gt.copy()
  out[:, :4] = 0.1  # Error only in the top half.
  mask = np.zeros((2, 8, 8), bool)
  mask[0, 4:] = True   # Frame 0: the mask sees no error.
  mask[1, :4] = True   # Frame 1: only error (MSE 0.01 -> 20 dB).
  psnr = evaluate.region_psnr(out, gt, mask)
  assert psnr[0] > 90
  assert psnr[1] == pytest.approx(20.0, abs=1e-4)
  assert np.isnan(evaluate.region_psnr(out, gt, np.zeros((2, 8, 8), bool))).all()


def test_blink_rate_and_delta_p():
  blink = np.zeros(250)  # 10 s at 25 fps
  for start in (20, 120, 200):
    blink[start:start + 5] = 1.0
  assert evaluate.blink_rate(blink, 25) == pytest.approx(18.0)  # 3 blinks in 10 s
  angles = np.zeros((11, 3))
  angles[:, 0] = np.radians(np.arange(11) * 0.5)  # yaw grows 0.5 deg per frame
  assert evaluate.delta_p_deg(angles, [0, 1, 2]) == pytest.approx(0.5 / 3)
  assert evaluate.delta_p_deg(angles * 2, [0, 1, 2]) == pytest.approx(2 * evaluate.delta_p_deg(angles, [0, 1, 2]))


def test_emotion_of_picks_the_nearest_centre():
  for e, (smile, brow) in readout._EMOTION_SMILE_BROW.items():
    assert synthetic.EMOTIONS[readout.emotion_of([smile + 0.05], [brow - 0.05])] == e


def test_region_masks_cover_mouth_and_eyes():
  clip = synthetic.make_clip(5, 1, 3, 64, render=False)
  masks = synthetic.region_masks(5, clip["labels"], 64)
  mouth, eyes = masks["mouth"], masks["eyes"]
  assert mouth.shape == eyes.shape == (3, 64, 64)
  assert 0.002 < mouth.mean() < 0.2 and 0.001 < eyes.mean() < 0.1
  rows_m, rows_e = np.nonzero(mouth[0])[0].mean(), np.nonzero(eyes[0])[0].mean()
  assert rows_e < rows_m  # Eyes above the mouth.


def test_first_identity_offsets_every_split():
  jobs = synthetic.corpus_jobs(10, 1, seed=0, first_identity=500)
  ids = {j[1] for j in jobs}
  assert min(ids) == 500 and max(ids) == 509
  assert {j[1] for j in jobs if j[0] == "benchmark"} == {509}


def test_space_to_depth_keeps_every_pixel():
  x = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
  y = np.asarray(face_latent.space_to_depth(x, 2))
  assert y.shape == (2, 2, 2, 12)
  assert sorted(y.ravel().tolist()) == sorted(x.ravel().tolist())
  np.testing.assert_array_equal(y[0, 0, 0, :3], x[0, 0, 0])
  np.testing.assert_array_equal(y[0, 0, 0, 3:6], x[0, 0, 1])
  np.testing.assert_array_equal(y[0, 0, 0, 6:9], x[0, 1, 0])
  np.testing.assert_array_equal(np.asarray(face_latent.depth_to_space(y, 2)), x)  # The sub-pixel output's map.


def test_region_psnr_clips_the_output_and_caps_at_100_db():
  gt = np.full((1, 4, 4, 3), 0.9)
  out = np.full((1, 4, 4, 3), 1.7)         # Clipped to 1: error 0.1 -> 20 dB (1.9 unclipped: 2.9 dB).
  mask = np.ones((1, 4, 4), bool)
  assert evaluate.region_psnr(out, gt, mask)[0] == pytest.approx(20.0, abs=1e-4)
  assert evaluate.region_psnr(gt, gt, mask)[0] == pytest.approx(100.0)   # -10 log10(1e-10).
  one = np.zeros((1, 4, 4), bool)
  one[0, 2, 3] = True                       # A one-pixel region: its own squared error.
  out = gt.copy()
  out[0, 2, 3] = 0.8
  assert evaluate.region_psnr(out, gt, one)[0] == pytest.approx(20.0, abs=1e-4)


def test_correlation_of_two_samples_and_of_one():
  assert evaluate.correlation([0.0, 1.0], [0.0, 2.0]) == pytest.approx(1.0)
  assert evaluate.correlation([0.0, 1.0], [2.0, 0.0]) == pytest.approx(-1.0)
  assert evaluate.correlation([1.0], [3.0]) == 0.0


def test_blink_rate_counts_closings_through_half_not_at_half():
  blink = np.array([0.0, 0.5, 0.0, 0.6, 0.6, 0.0, 1.0, 0.0, 0.0, 0.0])  # Two closings in 10 frames.
  assert evaluate.blink_rate(blink, 5) == pytest.approx(2 * 60.0 * 5 / 10)
  assert evaluate.blink_rate(np.ones(10), 5) == 0.0                       # Closed from the start: no closing.


def test_control_errors_against_the_requested_controls():
  smile, brow = readout._EMOTION_SMILE_BROW["sad"]
  e = synthetic.EMOTIONS.index("sad")

  def reads(theta, phi, dist):
    return {"gaze_theta": np.array(theta), "gaze_phi": np.array(phi), "distance": np.array(dist),
            "smile": np.array([smile]), "brow": np.array([brow])}

  attrs = {"gaze": [0.1, -0.2], "distance": 1.5, "emotion": e}
  other = dict(attrs, emotion=(e + 1) % len(synthetic.EMOTIONS))
  # Clip 1: theta mean 0.3 (0.2 off), phi exact, distance mean 1.0 (0.5 off), emotion right.
  # Clip 2: gaze exact, distance 2.0 (0.5 off), emotion wrong.
  res = evaluate._control_errors([(reads([0.2, 0.4], [-0.2, -0.2], [0.5, 1.5]), attrs),
                                  (reads([0.1], [-0.2], [2.0]), other)])
  assert res["gaze_err_deg"] == pytest.approx(np.degrees(0.2 / 2) / 2)
  assert res["distance_err"] == pytest.approx(0.5)
  assert res["emotion_acc"] == pytest.approx(0.5)
  one = evaluate._control_errors([(reads([-0.1], [-0.2], [1.0]), attrs)])  # Theta 0.2 below.
  assert one["gaze_err_deg"] == pytest.approx(np.degrees(0.1)) and one["emotion_acc"] == 1.0


def test_pixel_features_read_true_frames_and_not_frozen_or_shifted_ones():
  clip = synthetic.make_clip(7, 2, 40, 64)
  labels, frames = clip["labels"], clip["frames"]
  extremes = synthetic.feature_extremes(7, labels, 64)
  truth = synthetic.pixel_features(7, labels, frames, extremes=extremes)
  for k in ("mouth_open", "blink"):
    assert evaluate.correlation(truth[k], labels[k]) > 0.95, k
  # The ruler's ends read 0 and 1 exactly.
  for (name, (lo, hi)), k in zip(extremes.items(), ("mouth_open", "blink")):
    np.testing.assert_allclose(synthetic.pixel_features(7, labels, lo, extremes=extremes)[k], 0.0, atol=1e-6)
    np.testing.assert_allclose(synthetic.pixel_features(7, labels, hi, extremes=extremes)[k], 1.0, atol=1e-5)
  frozen = synthetic.pixel_features(7, labels, np.repeat(frames[:1], len(frames), 0), extremes=extremes)
  assert abs(evaluate.correlation(frozen["mouth_open"], labels["mouth_open"])) < 0.5
  shifted = synthetic.pixel_features(7, labels, np.roll(frames, 6, 0), extremes=extremes)
  assert evaluate.correlation(shifted["mouth_open"], labels["mouth_open"]) < evaluate.correlation(
      truth["mouth_open"], labels["mouth_open"]) - 0.2


def test_read_controls_reads_true_frames_back_and_follows_a_changed_gaze_or_distance():
  """The control ruler: true frames read their own gaze, distance, smile and brow; frames drawn with
  the gaze turned by 0.2 rad or the head at distance 1.15 read that, not the labels they are given."""
  clip = synthetic.make_clip(7, 2, 12, 64)
  labels, frames = clip["labels"], clip["frames"]
  truth = synthetic.read_controls(7, labels, frames, stride=3)
  assert truth["gaze_theta"].shape == (4,)
  for k, tol in (("gaze_theta", 0.02), ("gaze_phi", 0.02), ("distance", 0.01), ("smile", 0.05), ("brow", 0.05)):
    np.testing.assert_allclose(truth[k], labels[k][::3], atol=tol, err_msg=k)
  ident = synthetic.identity_params(7)
  turned = dict(labels, gaze_theta=labels["gaze_theta"] + 0.2)
  far = dict(labels, distance=np.full_like(labels["distance"], 1.15))
  read_turned = synthetic.read_controls(7, labels, synthetic.render_frames(ident, turned, 64), stride=3)
  read_far = synthetic.read_controls(7, labels, synthetic.render_frames(ident, far, 64), stride=3)
  np.testing.assert_allclose(read_turned["gaze_theta"], turned["gaze_theta"][::3], atol=0.03)
  np.testing.assert_allclose(read_far["distance"], 1.15, atol=0.01)
  # What is not changed still reads right.
  np.testing.assert_allclose(read_turned["distance"], labels["distance"][::3], atol=0.01)


def test_read_controls_reads_a_face_drawn_a_pixel_off_as_drawn_not_as_another_expression():
  """A model draws a face a pixel or two off where the renderer would. The plain reading (`align=0`)
  takes that for another smile or brow; the aligned one reads the true values, whole frame moved or
  only the mouth, and still tells a smile from a neutral mouth."""
  ident = synthetic.identity_params(11)
  clip = synthetic.make_clip(11, 0, 8, 64)
  labels = dict(clip["labels"], smile=np.full(8, 0.6, np.float32), brow=np.full(8, 0.3, np.float32))
  frames = synthetic.render_frames(ident, labels, 64)
  down = synthetic._shifted(frames, 1, 0)
  plain = synthetic.read_controls(11, labels, down, stride=2, keys=("smile", "brow"), align=0)
  aligned = synthetic.read_controls(11, labels, down, stride=2, keys=("smile", "brow"))
  assert np.abs(plain["smile"] - 0.6).mean() > 0.2 or np.abs(plain["brow"] - 0.3).mean() > 0.2
  np.testing.assert_allclose(aligned["smile"], 0.6, atol=0.05)
  np.testing.assert_allclose(aligned["brow"], 0.3, atol=0.05)
  # Only the mouth drawn one pixel higher, the rest in place: the smile is read as drawn.
  neutral = dict(labels, smile=np.zeros(8, np.float32))
  flat = synthetic.render_frames(ident, neutral, 64)
  smiling = synthetic.render_frames(ident, labels, 64)
  mouth = np.abs(smiling.astype(int) - flat.astype(int)).max(-1, keepdims=True) > 4
  mouth = synthetic._grow(mouth[..., 0], 3)[..., None]
  for asked, img in ((0.0, flat), (0.6, smiling)):
    moved = np.where(mouth, synthetic._shifted(img, -1, 0), img)
    read = synthetic.read_controls(11, neutral, moved, stride=2, keys=("smile",))["smile"]
    np.testing.assert_allclose(read, asked, atol=0.1)
  # Moving is not smiling: a neutral face two pixels lower reads neutral.
  low = synthetic._shifted(flat, 2, 0)
  np.testing.assert_allclose(synthetic.read_controls(11, neutral, low, stride=2, keys=("smile",))["smile"], 0.0,
                             atol=0.1)


def test_expression_transfer_recognises_what_a_true_renderer_draws_and_not_a_frozen_one():
  """Known answers: the corpus renderer itself draws every asked emotion (all recognised, slopes ~1);
  a decoder that ignores the asked smile and brow (it redraws the clip as it was) follows none of them."""
  clip = synthetic.make_clip(3, 1, 9, 64)
  labels = {k: v[::4] for k, v in clip["labels"].items()}
  ident = synthetic.identity_params(3)
  true = evaluate.transfer_summary(evaluate.expression_transfer(
      lambda asked: synthetic.render_frames(ident, asked, 64), 3, labels))
  assert true["emotion_transfer_acc"] == 1.0
  assert true["smile_slope"] == pytest.approx(1.0, abs=0.1) and true["brow_slope"] == pytest.approx(1.0, abs=0.1)
  frozen_frames = synthetic.render_frames(ident, labels, 64)
  frozen = evaluate.transfer_summary(evaluate.expression_transfer(lambda asked: frozen_frames, 3, labels))
  assert frozen["emotion_transfer_acc"] <= 0.4
  assert abs(frozen["smile_slope"]) < 0.1 and abs(frozen["brow_slope"]) < 0.1


def test_drivers_go_in_equal_chunks_padded_by_their_last_row():
  # A clip's 24 drivers at most 16 at a time: two calls of 12 (one compiled shape), not 16 + 8.
  assert [evaluate.chunk_rows(n, 16) for n in (1, 5, 16, 17, 24, 32, 33)] == [1, 5, 16, 9, 12, 16, 11]
  for n in range(1, 70):
    rows = evaluate.chunk_rows(n, 16)
    calls = -(-n // rows)
    assert rows <= 16 and calls == -(-n // 16) and calls * rows - n < calls  # fewest calls, < 1 pad row each
  a, b = evaluate.pad_rows((np.arange(6).reshape(3, 2), np.arange(5)), 5)
  np.testing.assert_array_equal(a, [[0, 1], [2, 3], [4, 5], [4, 5], [4, 5]])
  assert b.shape == (5,)
