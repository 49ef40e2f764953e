"""One window loop: streaming, offline sampling and evaluation generate the same motion and frames.

Random tiny weights are enough: these tests hold code paths equal, bit for bit, not quality.
"""

import jax
import numpy as np
import pytest

from vasa_jax import bench, evaluate, media, sample, stream
from vasa_jax.face_model import POSE_DIM
from vasa_jax.motion import Controls, audio_valid_mask

SEED, STEPS = 3, 2
GAZE, DISTANCE, EMOTION = (0.1, 0.0), 1.0, 2


@pytest.fixture(scope="module")
def model():
  # Stage 2 in latent space (what the demo uses); label-space motion has its own tests (test_pixel_eval).
  m = bench.random_bundle("tiny", [("motion_train.motion_source", "motion")])
  # The DiT's output layers start at zero (every window would be all zeros): jitter every weight.
  leaves, tree = jax.tree.flatten(m.motion_params)
  keys = jax.random.split(jax.random.key(5), len(leaves))
  m.motion_params = jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape, x.dtype)
                                              for x, k in zip(leaves, keys)])
  return m


@pytest.fixture(scope="module")
def audio():
  # 26 frames at W=8: three whole windows and a partial one, ending inside a frame.
  return media.load_audio(sample.EXAMPLE_AUDIO)[:16000 + 321]


def _sampler(model, **kw):
  controls = Controls(gaze=GAZE, distance=DISTANCE, emotion=EMOTION)
  return stream.StreamingSampler(model, media.load_image(sample.EXAMPLE_IMAGE), controls=controls, steps=STEPS,
                                 seed=SEED, watermark=None, **kw)


def test_offline_equals_streaming_equals_what_evaluate_scores(model, audio):
  s = _sampler(model)
  streamed = np.stack(list(stream.generate(s, audio, chunk_samples=1777)))
  assert s.compiled_steps() == {"window": 1, "decode": 2}
  frames = -(-audio.size // s.spf)
  assert streamed.shape[0] == frames

  mm, params = s.motion_model, model.motion_params
  offline = mm.sample_sequence(params, audio, s.first_motion, Controls(gaze=GAZE, distance=DISTANCE, emotion=EMOTION),
                               jax.random.key(SEED), steps=STEPS, guidance=s.guidance)
  clip = {"audio": audio, "attrs": {"gaze": GAZE, "distance": DISTANCE, "emotion": EMOTION},
          "labels": {"mouth_open": np.zeros(frames, np.float32)}}
  scored = evaluate.clip_motion(mm, params, clip, s.first_motion, jax.random.key(SEED), steps=STEPS,
                                guidance=s.guidance)
  np.testing.assert_array_equal(offline, scored)

  # The stream's motion, window by window, is the offline motion.
  m = _sampler(model)
  m.add_audio(audio)
  streamed_motion = np.concatenate(list(m.motion_windows(final=True)))
  assert np.abs(np.diff(streamed_motion, axis=0)).mean() > 1e-3  # Real motion, not a constant.
  np.testing.assert_array_equal(streamed_motion, offline * model.std + model.mean)

  # And the offline motion renders to the streamed frames.
  r = _sampler(model)
  w = r.window
  rendered = [f for lo in range(0, frames, w) for f in r.render(streamed_motion[lo:lo + w])]
  np.testing.assert_array_equal(np.stack(rendered), streamed)


def test_still_keeps_the_portraits_pose_for_every_frame(model, audio):
  s = _sampler(model, still=True)
  s.add_audio(audio)
  motion = np.concatenate(list(s.motion_windows(final=True)))
  assert len(motion) == -(-audio.size // s.spf)
  np.testing.assert_array_equal(motion[:, :POSE_DIM], np.tile(s.portrait_motion[:POSE_DIM], (len(motion), 1)))
  assert motion[:, POSE_DIM:].std(0).max() > 0  # Lips, eyes and expression still move.


def test_frames_past_the_end_of_the_audio_see_the_audio_null(model, audio):
  s = _sampler(model)
  seen = []
  step = s.loop.step_fn

  def recording_step(*args):
    seen.append(np.asarray(args[3])[0])  # (params, wav, prev, audio_valid, ...)
    return step(*args)

  s.loop.step_fn = recording_step
  n = sum(1 for _ in stream.generate(s, audio, chunk_samples=3200))
  k, w = s.context, s.window
  audio_frames = -(-audio.size // s.spf)
  assert n == audio_frames and len(seen) == -(-audio_frames // w)
  for i, valid in enumerate(seen):
    # Window i holds clip frames i*W - K ... i*W + W - 1; the K before the clip are heard silence.
    clip_frame = i * w - k + np.arange(k + w)
    np.testing.assert_array_equal(valid, clip_frame < audio_frames)
  assert seen[0].all() and not seen[-1].all()
  assert seen[-1].sum() == k + audio_frames - (len(seen) - 1) * w
  np.testing.assert_array_equal(audio_valid_mask(0, 3, 2, 4), [True, True, True, True, True, False])


def test_pose_smoothing_lowers_jitter_joins_the_context_and_leaves_expression_alone():
  from vasa_jax.motion import POSE_DIMS, smooth_pose
  rng = np.random.default_rng(0)
  k, w, m = 4, 40, 10
  prev = np.full((k, m), 0.5, np.float32)
  window = (0.5 + 0.2 * rng.normal(size=(w, m))).astype(np.float32)
  out = smooth_pose(prev, window, 3.0)
  np.testing.assert_array_equal(out[:, POSE_DIMS:], window[:, POSE_DIMS:])   # Mouth, blinks: untouched.
  jitter = lambda x: np.abs(np.diff(x[:, :POSE_DIMS], axis=0)).mean()  # noqa: E731
  assert jitter(out) < 0.3 * jitter(window)
  # A constant signal that continues the context stays exactly constant (no step at the join).
  flat = np.full((w, m), 0.5, np.float32)
  np.testing.assert_allclose(smooth_pose(prev, flat, 3.0), flat, atol=1e-6)
  # The first frame leans on the context: closer to it than the raw first frame was.
  assert np.abs(out[0, :POSE_DIMS] - 0.5).mean() < np.abs(window[0, :POSE_DIMS] - 0.5).mean()
  np.testing.assert_array_equal(smooth_pose(prev, window, 0.0), window)
