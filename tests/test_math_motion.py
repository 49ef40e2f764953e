"""The window loop's bookkeeping and the motion helpers, on fake models whose outputs are known exactly.

No network runs here: the fakes record what the loop hands them (audio, context, masks, keys)
and return numbered windows, so every slice and offset of `motion.py` is checked by value.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vasa_jax import motion
from vasa_jax.models import motion_dit

K, W, SPF, M = 2, 3, 4, 7


class _FakeModel:
  """What `WindowLoop` needs of a `MotionModel`; its step records its arguments and returns numbered rows."""
  context, window, samples_per_frame = K, W, SPF

  def __init__(self, pose_smooth=0.0):
    self.cfg = ml_collections.ConfigDict({"diffusion": {"pose_smooth": pose_smooth}})
    self.calls, self.keys = [], []

  def with_frozen(self, params):  # A log-mel model: its params as they are (no frozen wav2vec2 to add).
    return params

  def window_step_fn(self, steps, guidance):
    self.keys.append((steps, guidance))

    def step(params, wav, prev, valid, gaze, dist, emo, present, first, rng):
      self.calls.append({"wav": np.asarray(wav[0]), "prev": np.asarray(prev[0]), "valid": np.asarray(valid[0]),
                         "controls": [np.asarray(a) for a in (gaze, dist, emo, present)],
                         "first": bool(first[0]), "rng": rng})
      return jnp.asarray(100.0 * len(self.calls) + np.arange(W * M, dtype=np.float32).reshape(1, W, M))

    return step


def _audio(frames_short_by_one_sample=10):
  """Frame f's samples all hold f + 1; the last frame is one sample short."""
  return np.repeat(np.arange(1, frames_short_by_one_sample + 1, dtype=np.float32), SPF)[:-1]


def _window(n):
  return 100.0 * n + np.arange(W * M, dtype=np.float32).reshape(W, M)


def test_controls_arrays_are_the_given_values_or_zeros_with_present_flags():
  gaze, dist, emo, present = motion.Controls(gaze=(0.25, -0.5), emotion=3).arrays(2)
  np.testing.assert_array_equal(gaze, [[0.25, -0.5], [0.25, -0.5]])
  np.testing.assert_array_equal(dist, [0.0, 0.0])
  np.testing.assert_array_equal(emo, np.tile(np.eye(motion.EMOTION_DIM)[3], (2, 1)))
  np.testing.assert_array_equal(present, [[True, False, True]] * 2)
  gaze, dist, emo, present = motion.Controls(distance=1.5, emotion=[0.5, 0, 0, 0, 0.5]).arrays(1)
  np.testing.assert_array_equal(gaze, [[0.0, 0.0]])
  np.testing.assert_array_equal(dist, [1.5])
  np.testing.assert_array_equal(emo, [[0.5, 0, 0, 0, 0.5]])
  np.testing.assert_array_equal(present, [[False, True, True]])
  assert gaze.shape == (1, 2) and emo.shape == (1, motion.EMOTION_DIM)
  _, _, emo, present = motion.Controls().arrays(3)
  np.testing.assert_array_equal(emo, np.zeros((3, motion.EMOTION_DIM)))
  assert not present.any() and present.shape == (3, 3)


def test_audio_valid_mask_marks_frames_before_the_audio_end():
  np.testing.assert_array_equal(motion.audio_valid_mask(6, 8, 2, 3), [True, True, True, True, False])
  np.testing.assert_array_equal(motion.audio_valid_mask(0, 0, 1, 2), [True, False, False])


def test_smooth_pose_is_a_normalised_gaussian_with_edge_padding():
  g = np.exp(-0.5 * np.arange(4.0) ** 2)          # sigma 1: radius 3.
  z = g[0] + 2 * g[1:].sum()
  # An impulse in the window's pose spreads as the taps; the context (zeros, K >= radius) adds nothing.
  prev, window = np.zeros((4, M)), np.zeros((6, M))
  height = np.arange(1.0, motion.POSE_DIMS + 1)   # Each pose dim its own impulse height.
  window[2, :motion.POSE_DIMS] = height
  window[:, motion.POSE_DIMS:] = 7.0
  out = motion.smooth_pose(prev, window, 1.0)
  want = g[np.abs(np.arange(6) - 2)] / z
  np.testing.assert_allclose(out[:, :motion.POSE_DIMS], want[:, None] * height[None], rtol=1e-6)
  np.testing.assert_array_equal(out[:, motion.POSE_DIMS:], 7.0)
  assert window[2, 0] == 1.0                       # The input is not changed in place.
  # One context frame of ones, repeated to the left (edge padding), leaks into the first frames.
  out = motion.smooth_pose(np.ones((1, M)), np.zeros((6, M)), 1.0)[:, 0]
  np.testing.assert_allclose(out, [g[1:].sum() / z, g[2:].sum() / z, g[3] / z, 0, 0, 0], atol=1e-9)
  # The window's last frame is repeated to the right.
  last = np.zeros((6, M))
  last[-1] = 1.0
  out = motion.smooth_pose(np.zeros((3, M)), last, 1.0)[:, 0]
  np.testing.assert_allclose(out, [0, 0, g[3] / z, g[2:].sum() / z, g[1:].sum() / z, g.sum() / z], atol=1e-9)
  # sigma 2: radius 6, the whole impulse response inside a 13-frame window.
  taps = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
  impulse = np.zeros((13, M))
  impulse[6] = 1.0
  np.testing.assert_allclose(motion.smooth_pose(np.zeros((6, M)), impulse, 2.0)[:, 0], taps / taps.sum(), rtol=1e-6)


def test_window_loop_feeds_each_window_its_audio_context_mask_and_key():
  fake = _FakeModel()
  controls = motion.Controls(gaze=(0.1, 0.2), distance=1.25, emotion=1)
  first = np.arange(M, dtype=np.float32)
  loop = motion.WindowLoop(fake, None, first, controls, jax.random.key(7), steps=2, guidance=[1.0, 0.5, 0, 0, 0])
  assert fake.keys == [(2, (1.0, 0.5, 0, 0, 0))]
  loop.add_audio(_audio()[:17])
  loop.add_audio(_audio()[17:])                    # Chunks join: 10 frames, the last one sample short.
  assert loop.received == 39
  out = list(loop.windows())                        # (K + 10) frames of audio: three whole windows.
  assert len(out) == 3 and loop.consumed == 9
  out += list(loop.windows(final=True))            # The last, partial window: one frame.
  assert loop.consumed == 10 and [len(o) for o in out] == [3, 3, 3, 1]
  np.testing.assert_array_equal(np.concatenate(out), np.concatenate([_window(1), _window(2), _window(3),
                                                                     _window(4)[:1]]))
  rng = jax.random.key(7)
  for i, call in enumerate(fake.calls):
    # Window i covers clip frames i*W - K .. i*W + W - 1; frames before the clip are silence.
    frames = i * W - K + np.arange(K + W)
    want = np.repeat(np.where(frames >= 0, frames + 1.0, 0.0), SPF)
    if i == 3:
      want[(10 - frames[0]) * SPF - 1:] = 0.0      # The missing sample and past the end: zero padding.
    np.testing.assert_array_equal(call["wav"], want)
    np.testing.assert_array_equal(call["valid"], frames < 10)
    np.testing.assert_array_equal(call["prev"], np.tile(first, (K, 1)) if i == 0 else _window(i)[-K:])
    assert call["first"] is False
    for got, want_c in zip(call["controls"], controls.arrays(1)):
      np.testing.assert_array_equal(got, want_c)
    rng, sub = jax.random.split(rng)
    np.testing.assert_array_equal(jax.random.key_data(call["rng"]), jax.random.key_data(sub))
  assert list(loop.windows(final=True)) == []       # Nothing is left.


def test_window_loop_without_seed_context_drops_only_the_first_windows_context():
  fake = _FakeModel()
  loop = motion.WindowLoop(fake, None, np.zeros(M), motion.Controls(), jax.random.key(0), steps=1,
                           guidance=(0, 0, 0, 0, 0), seed_context=False)
  loop.add_audio(np.zeros(2 * W * SPF))
  assert len(list(loop.windows())) == 2
  assert [c["first"] for c in fake.calls] == [True, False]


def test_window_loop_continues_with_the_audio_null_up_to_num_frames():
  fake = _FakeModel()
  loop = motion.WindowLoop(fake, None, np.zeros(M), motion.Controls(), jax.random.key(0), steps=1,
                           guidance=(0, 0, 0, 0, 0))
  loop.add_audio(np.ones(2 * SPF))                  # Two frames of audio, eight frames asked.
  sizes = [len(o) for o in loop.windows(final=True, num_frames=8)]
  assert sizes == [3, 3, 2] and loop.consumed == 8
  np.testing.assert_array_equal([c["valid"].sum() for c in fake.calls], [K + 2, 1, 0])


def test_window_loop_smooths_each_window_against_the_frames_before_it():
  fake = _FakeModel(pose_smooth=1.5)
  first = np.linspace(0, 1, M).astype(np.float32)
  loop = motion.WindowLoop(fake, None, first, motion.Controls(), jax.random.key(0), steps=1,
                           guidance=(0, 0, 0, 0, 0))
  loop.add_audio(np.zeros(2 * W * SPF))
  out = list(loop.windows())
  want1 = motion.smooth_pose(np.tile(first, (K, 1)), _window(1), 1.5)
  np.testing.assert_allclose(out[0], want1, rtol=1e-6)
  np.testing.assert_allclose(out[1], motion.smooth_pose(want1[-K:], _window(2), 1.5), rtol=1e-6)
  np.testing.assert_array_equal(fake.calls[1]["prev"], want1[-K:])


def test_sample_sequence_is_the_loop_cut_to_the_frames_generated():
  fake = _FakeModel()
  z = motion.MotionModel.sample_sequence(fake, None, np.ones(4 * SPF), np.zeros(M), motion.Controls(),
                                         jax.random.key(0), steps=1, guidance=(0, 0, 0, 0, 0))
  np.testing.assert_array_equal(z, np.concatenate([_window(1), _window(2)[:1]]))
  assert [c["first"] for c in fake.calls] == [False, False]          # The portrait's motion is the context.
  z = motion.MotionModel.sample_sequence(fake, None, np.ones(4 * SPF), np.zeros(M), motion.Controls(),
                                         jax.random.key(0), steps=1, guidance=(0, 0, 0, 0, 0), num_frames=7)
  assert z.shape == (7, M)


def test_guided_denoiser_batches_every_variant_with_the_base_drop():
  b, v, c = 2, 3, len(motion_dit.CONDITIONS)
  seen = {}

  def denoise(params, x_t, t, ctx, drop, valid):
    seen.update(t=np.asarray(t), prev=np.asarray(ctx["prev"]), valid=np.asarray(valid), drop=np.asarray(drop))
    code = (np.asarray(drop) * 2.0 ** np.arange(c)).sum(-1)     # Each drop row as a number.
    return x_t + code[:, None, None]

  fake = type("Fake", (), {"denoise": staticmethod(denoise)})()
  x_t = jnp.asarray(np.arange(b * 4 * 1, dtype=np.float32).reshape(b, 4, 1))
  base = np.zeros((b, c), bool)
  base[1, 0] = True
  masks = np.zeros((v, c), bool)
  masks[1, 2] = masks[2, 4] = True
  ctx = {"prev": jnp.asarray([[1.0], [2.0]])}
  valid = jnp.asarray([[True, False], [True, True]])
  out = np.asarray(motion.MotionModel.guided_denoiser(fake, None, ctx, jnp.asarray(base), valid)(
      x_t, jnp.asarray([5, 6]), jnp.asarray(masks)))
  assert out.shape == (v, b, 4, 1)
  for i in range(v):
    for j in range(b):
      drop = masks[i] | base[j]
      np.testing.assert_array_equal(seen["drop"][i * b + j], drop)
      np.testing.assert_array_equal(out[i, j], np.asarray(x_t[j]) + (drop * 2.0 ** np.arange(c)).sum())
  np.testing.assert_array_equal(seen["t"], [5, 6] * v)
  np.testing.assert_array_equal(seen["prev"][:, 0], [1.0, 2.0] * v)
  np.testing.assert_array_equal(seen["valid"], np.tile(np.asarray(valid), (v, 1)))


def test_window_step_drops_the_controls_not_given_and_the_first_context():
  fake = type("Fake", (), {})()
  fake.window, fake.motion_dim = W, M
  fake.features = lambda params, wav: wav.reshape(wav.shape[0], -1, SPF).mean(-1)
  fake.sample_window = lambda params, ctx, noise, *, steps, guidance, base_drop_BxC, audio_valid_BxL: {
      "ctx": ctx, "noise": noise, "base": base_drop_BxC, "valid": audio_valid_BxL, "steps": steps,
      "guidance": jnp.asarray(guidance)}
  step = motion.MotionModel.window_step_fn(fake, 3, (1.0, 0, 0, 0, 0))
  assert motion.MotionModel.window_step_fn(fake, 3, (1.0, 0, 0, 0, 0)) is step
  assert motion.MotionModel.window_step_fn(fake, 4, (1.0, 0, 0, 0, 0)) is not step
  wav = jnp.arange(2 * (K + W) * SPF, dtype=jnp.float32).reshape(2, -1)
  prev, valid = jnp.ones((2, K, M)), jnp.ones((2, K + W), bool)
  present = jnp.asarray([[True, False, True], [False, True, False]])
  out = step(None, wav, prev, valid, jnp.ones((2, 2)), jnp.ones(2), jnp.ones((2, 5)), present,
             jnp.asarray([False, True]), jax.random.key(1))
  want = np.zeros((2, len(motion_dit.CONDITIONS)), bool)
  want[1, motion_dit.GAZE] = want[0, motion_dit.DISTANCE] = want[1, motion_dit.EMOTION] = True
  want[1, motion_dit.PREV] = True
  np.testing.assert_array_equal(out["base"], want)
  assert out["noise"].shape == (2, W, M) and float(jnp.std(out["noise"])) > 0.5
  np.testing.assert_array_equal(out["noise"], jax.random.normal(jax.random.key(1), (2, W, M)))
  np.testing.assert_array_equal(out["ctx"]["audio"], np.asarray(wav).reshape(2, -1, SPF).mean(-1))
  np.testing.assert_array_equal(out["ctx"]["prev"], prev)
  assert int(out["steps"]) == 3


@pytest.mark.parametrize("n", [1, 3])
def test_window_loop_add_audio_counts_samples(n):
  loop = motion.WindowLoop(_FakeModel(), None, np.zeros(M), motion.Controls(), jax.random.key(0), steps=1,
                           guidance=(0, 0, 0, 0, 0))
  loop.add_audio(np.ones((n, 5)))
  assert loop.received == 5 * n and loop.audio.size == K * SPF + 5 * n
  np.testing.assert_array_equal(loop.audio[:K * SPF], 0.0)


@pytest.mark.parametrize("seed", [1, 2])
def test_the_seed_reaches_the_motion_through_the_initial_noise(seed):
  """The real window step and DDIM on a denoiser that answers half its input: one DDIM step returns
  that answer, so each window is exactly half the noise its key draws, and another seed moves the
  motion by half the difference of the two noises (an untrained network hides this: it hardly
  listens to its input, which is why the tiny bundle's seeds differ by ~1e-4 in test_sample)."""
  from vasa_jax import config
  cfg = config.load("tiny")
  with cfg.unlocked():
    cfg.diffusion.pose_smooth = 0.0
  mm = motion.MotionModel(cfg, motion_dim=M)
  mm.features = lambda params, wav: jnp.zeros((wav.shape[0], mm.context + mm.window, 4))
  mm.denoise = lambda params, x_t, t, ctx, drop, valid: 0.5 * x_t
  loop = motion.WindowLoop(mm, None, np.zeros(M), motion.Controls(), jax.random.key(seed), steps=1,
                           guidance=(1.0, 0.5, 0, 0, 0))
  loop.add_audio(np.zeros(2 * mm.window * mm.samples_per_frame))
  rng, windows = jax.random.key(seed), list(loop.windows())
  assert len(windows) == 2
  for window in windows:
    rng, sub = jax.random.split(rng)
    noise = np.asarray(jax.random.normal(sub, (1, mm.window, M)))[0]
    np.testing.assert_allclose(window, 0.5 * noise, rtol=1e-5, atol=1e-6)


def test_frame_noise_is_anchored_to_frame_indices():
  """Live windows overlap: the frames they share start from the same noise, wherever the window starts."""
  rng = jax.random.key(3)
  a = np.asarray(motion.frame_noise(rng, 0, 2, 8, 5))
  b = np.asarray(motion.frame_noise(rng, 3, 2, 8, 5))
  assert a.shape == (2, 8, 5)
  np.testing.assert_array_equal(a[:, 3:], b[:, :5])
  assert not np.allclose(a[:, :5], b[:, :5])  # and frames differ from one another
  assert abs(a.std() - 1) < 0.4
