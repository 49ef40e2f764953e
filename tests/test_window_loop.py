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


@pytest.mark.parametrize("live_window", [None, 5])
def test_live_windows_wait_only_for_heard_audio_and_keep_every_frame(model, audio, live_window):
  """Live mode: a frame comes out once its audio and the encoder's lookahead are heard, at least
  `hop` at a time; the heard frames become the next window's context; nothing recompiles; the
  finished clip has as many frames as the offline one. Also with live windows shorter than the
  training window (W = 8 here)."""
  hop, spf = 3, 640
  lookahead = int(model.motion_cfg.audio.lookahead)
  s = _sampler(model, live_hop=hop, decode_batch=1, live_window=live_window)
  w = s.loop.live_window
  assert w == (live_window or stream.live_window_for(model.motion_cfg, hop))
  k = s.context
  seen_valid = []
  step = s.loop.step_fn
  s.loop.step_fn = lambda *a: (seen_valid.append(np.asarray(a[3])[0]), step(*a))[1]
  out, heard_at, compiled = [], [], None
  for start in range(0, audio.size, 320):  # 20 ms chunks
    s.add_audio(audio[start:start + 320])
    heard = min(start + 320, audio.size) // spf
    for motion in s.motion_windows(final=False):
      out.append(len(motion))
      heard_at.append(heard)
      assert s.loop.consumed <= heard - lookahead  # never ahead of the audio
      list(s.render(motion))
      compiled = compiled if out[1:] else s.compiled_steps()  # after the first step
  assert min(out) >= hop and all(n <= w for n in out)
  # Each step starts as soon as `hop` frames are ready: never more than hop + 1 behind (20 ms chunks).
  assert sum(out) >= -(-audio.size // spf) - lookahead - hop - 1
  # The window marks exactly the heard frames (K context frames included) as having audio.
  consumed = np.cumsum([0] + out[:-1])
  for valid, c, heard in zip(seen_valid, consumed, heard_at):
    np.testing.assert_array_equal(valid, audio_valid_mask(c, heard, k, w))
  for motion in s.motion_windows(final=True):
    list(s.render(motion))
  assert s.frames_out == -(-audio.size // spf)
  assert s.compiled_steps() == compiled  # nothing compiled after the first step


def test_live_stream_times_every_frame_and_drops_only_late_ones(model, audio):
  """LiveStream: a frame's latency runs from the capture of its sound (the middle sample, inside
  the chunk that carried it) to its being ready; with a lag limit, late frames are skipped but the
  video clock (frame indices, watermark times) goes on."""
  from vasa_jax import live
  clock = [100.0]
  ready = 10 - int(model.motion_cfg.audio.lookahead)  # of the 10 frames in 6400 samples
  s = _sampler(model, live_hop=2, decode_batch=1)
  w = s.window  # a step makes at most W frames; what is left after it waits for the hop
  out = ready if ready <= w or ready - w >= 2 else w
  session = live.LiveStream(s, clock=lambda: clock[0], max_lag_s=None)
  session.add(audio[:1000], captured_at=10.0)  # samples 0..999 ended at t = 10 s
  session.add(audio[1000:1600], captured_at=11.0)
  assert session.sound_time(0) == pytest.approx(10.0 - (1000 - 320) / 16000)
  assert session.sound_time(1) == pytest.approx(10.0 - (1000 - 960) / 16000)  # still in the first chunk
  assert list(session.ready()) == []  # 2 whole frames heard, less the lookahead: under the hop of 2
  session.add(audio[1600:6400], captured_at=12.0)
  assert session.sound_time(2) == pytest.approx(12.0 - (6400 - 1600) / 16000)
  frames = list(session.ready())
  assert [f.index for f in frames] == list(range(len(frames))) and len(frames) == out
  assert frames[0].latency == pytest.approx(100.0 - session.sound_time(0))
  late = live.LiveStream(_sampler(model, live_hop=2, decode_batch=1), clock=lambda: clock[0], max_lag_s=0.25)
  late.add(audio[:6400], captured_at=99.9)  # all heard at once: frame i's sound is 0.1 s + (6400 - its middle) old
  shown = list(late.ready())
  assert late.dropped > 0 and shown[-1].index == out - 1 and late.dropped + len(shown) == out
  assert all(f.latency <= 0.25 for f in shown[:-1])  # the newest frame of a step is always shown
  assert late.sampler.frames_out == out  # the skipped frames still advanced the video clock


def test_live_mode_defaults_to_its_own_steps_and_window(model):
  """Live mode, given no steps or window, uses its own (`stream.LIVE_STEPS`, `live_window_for`); the
  other modes keep the config's DDIM steps and the training window."""
  img = media.load_image(sample.EXAMPLE_IMAGE)
  lv = stream.StreamingSampler(model, img, watermark=None, live_hop=2)
  assert lv.steps == stream.LIVE_STEPS
  assert lv.loop.live_window == stream.live_window_for(model.motion_cfg, 2) <= lv.window
  offline = stream.StreamingSampler(model, img, watermark=None)
  assert offline.steps == model.motion_cfg.diffusion.sample_steps
  assert stream.StreamingSampler(model, img, watermark=None, live_hop=2, steps=7).steps == 7
