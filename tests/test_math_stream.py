"""The streaming sampler's own arithmetic on a fake sampler: decode batching, denormalisation, still mode, crops.

The jitted steps are replaced by recorders, so every batch bound, padding row and
frame count is checked by value without compiling a network.
"""

import time
import types

import numpy as np

from vasa_jax import label_motion, stream
from vasa_jax.data.synthetic import LABEL_NAMES
from vasa_jax.face_model import POSE_DIM


def _sampler(decode_batch=4, mean=0.0, std=1.0, still=False):
  s = object.__new__(stream.StreamingSampler)
  s.bundle = types.SimpleNamespace(face_params="params")
  s.portrait, s.signs, s.decode_batch, s.still = "portrait", "signs", decode_batch, still
  s.live_hop = None
  s.frames_out, s.first_frame_latency, s._window_started = 0, None, 0.0
  s.timings = {"diffusion": [], "decode": []}
  s.mean, s.std, s.label_space = np.float32(mean), np.float32(std), False
  s.calls, s.times, s.fps = [], [], 25

  def decode_step(params, app, motion_BxM, signs, times_B):
    assert (params, app, signs) == ("params", "portrait", "signs")
    s.calls.append(np.asarray(motion_BxM))
    s.times.append(np.asarray(times_B))
    return np.asarray(motion_BxM)[:, :1, None, None] * np.ones((1, 2, 2, 3))   # Frame i: all its motion[0].

  s.decode_step = decode_step
  return s


def test_render_decodes_the_first_frame_alone_then_full_padded_batches():
  s = _sampler()
  motion = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3))
  s._window_started = time.perf_counter()
  frames = list(s.render(motion))
  assert [c.shape[0] for c in s.calls] == [1, 4, 4, 4]
  np.testing.assert_array_equal(s.calls[3][:, 0], [9, 9, 9, 9])        # Padding repeats the last row.
  # The watermark's frame times: index in the video / fps, padding included (it is cut off).
  np.testing.assert_allclose(np.concatenate(s.times), np.arange(13) / 25, rtol=1e-6)
  np.testing.assert_array_equal([f[0, 0, 0] for f in frames], np.arange(10))
  assert s.frames_out == 10 and len(s.timings["decode"]) == 4
  assert 0 <= s.first_frame_latency < 60 and all(0 <= t < 60 for t in s.timings["decode"])   # Durations in s.
  s.calls.clear()
  frames = list(s.render(motion[:9]))                                   # Not the first frame: no lone decode.
  assert [c.shape[0] for c in s.calls] == [4, 4, 4] and s.frames_out == 19
  np.testing.assert_array_equal([f[0, 0, 0] for f in frames], np.arange(9))
  np.testing.assert_array_equal(s.calls[2][:, 0], [8, 8, 8, 8])


def test_render_with_batch_one_and_short_windows():
  s = _sampler(decode_batch=1)
  assert len(list(s.render(np.zeros((3, 2))))) == 3 and [c.shape[0] for c in s.calls] == [1, 1, 1]
  s = _sampler(decode_batch=5)
  assert len(list(s.render(np.zeros((1, 2))))) == 1 and [c.shape[0] for c in s.calls] == [1]
  assert len(list(s.render(np.zeros((5, 2))))) == 5 and [c.shape[0] for c in s.calls] == [1, 5]
  assert len(list(s.render(np.zeros((6, 2))))) == 6 and [c.shape[0] for c in s.calls] == [1, 5, 5, 5]
  s = _sampler(decode_batch=2)
  assert len(list(s.render(np.zeros((3, 2))))) == 3 and [c.shape[0] for c in s.calls] == [1, 2]


def _with_windows(s, windows):
  s.loop = types.SimpleNamespace(windows=lambda final: iter([np.asarray(w, np.float32) for w in windows]))
  return s


def test_motion_windows_denormalise_and_still_keeps_the_pose():
  m = POSE_DIM + 2
  window = np.arange(3 * m, dtype=np.float32).reshape(3, m)
  s = _with_windows(_sampler(mean=1.0, std=2.0), [window, window[:1]])
  out = list(s.motion_windows(final=True))
  np.testing.assert_array_equal(out[0], window * 2.0 + 1.0)
  np.testing.assert_array_equal(out[1], window[:1] * 2.0 + 1.0)
  assert len(s.timings["diffusion"]) == 2 and all(0 <= t < 60 for t in s.timings["diffusion"])
  s = _with_windows(_sampler(mean=1.0, std=2.0, still=True), [window])
  s.stage2_motion, s.pose_cols = -np.arange(m, dtype=np.float32), [0, 2]
  out = list(s.motion_windows(final=False))[0]
  np.testing.assert_array_equal(out[:, [0, 2]], np.tile([0.0, -2.0], (3, 1)))
  np.testing.assert_array_equal(out[:, 1], window[:, 1] * 2.0 + 1.0)


def test_motion_windows_in_label_space_write_into_the_portraits_latents():
  names = list(LABEL_NAMES)
  rng = np.random.default_rng(0)
  labels = rng.normal(size=(2, len(names))).astype(np.float32)
  s = _with_windows(_sampler(mean=0.5, std=3.0), [labels])
  s.label_space, s.portrait_motion = True, rng.normal(size=POSE_DIM + 12).astype(np.float32)
  out = list(s.motion_windows(final=True))[0]
  want = label_motion.to_latents(labels * 3.0 + 0.5, names, s.portrait_motion[POSE_DIM:])
  np.testing.assert_array_equal(out, want)


def test_center_square_crops_the_middle_of_either_side():
  img = np.arange(4 * 6 * 3).reshape(4, 6, 3)
  np.testing.assert_array_equal(stream.center_square(img), img[:, 1:5])
  tall = np.arange(2 * 7 * 2 * 3).reshape(2, 7, 2, 3)               # A video: [T, H, W, 3].
  np.testing.assert_array_equal(stream.center_square(tall), tall[:, 2:4])
  assert stream.center_square(np.zeros((5, 5, 3))).shape == (5, 5, 3)


def test_drive_from_video_reads_motion_per_batch_and_still_keeps_the_portraits_pose():
  s = _sampler(decode_batch=3, still=True)
  s.portrait_motion = np.full(POSE_DIM + 2, -1.0, np.float32)
  seen = []

  def motion_of_frames(params, chunk, b):
    seen.append((chunk.shape[0], b, float(chunk.max())))
    return np.tile(np.arange(POSE_DIM + 2, dtype=np.float32), (len(chunk), 1)) + 10 * len(seen)

  s.face = types.SimpleNamespace(motion_of_frames=motion_of_frames)
  video = np.full((5, 4, 6, 3), 255, np.uint8)
  frames = list(stream.drive_from_video(s, video))
  assert len(frames) == 5 and [n for n, _, _ in seen] == [3, 2] and {b for _, b, _ in seen} == {3}
  assert max(m for _, _, m in seen) == 1.0                                # Pixels scaled to [0, 1].
  decoded = np.concatenate(s.calls)
  np.testing.assert_array_equal(decoded[:, 0], -1.0)                      # Pose from the portrait.
  np.testing.assert_array_equal(decoded[[1, 2], POSE_DIM], [10 + POSE_DIM, 10 + POSE_DIM])


def test_generate_feeds_every_chunk_then_flushes():
  pushed, s = [], _sampler()
  s.push = lambda chunk: (pushed.append(np.asarray(chunk).copy()), iter([len(chunk)]))[1]
  s.flush = lambda: iter(["end"])
  audio = np.arange(10, dtype=np.float32)
  assert list(stream.generate(s, audio, chunk_samples=4)) == [4, 4, 2, "end"]
  np.testing.assert_array_equal(np.concatenate(pushed), audio)
  pushed.clear()
  assert list(stream.generate(s, audio)) == [10, "end"] and len(pushed) == 1


def test_push_renders_only_whole_windows_and_flush_the_rest():
  s, asked = _sampler(), []

  def windows(final):
    asked.append(final)
    return iter([np.full((2, 3), 5.0)] if final else [np.full((3, 3), 7.0)])

  s.loop = types.SimpleNamespace(windows=windows, add_audio=lambda chunk: asked.append(len(chunk)))
  assert [f[0, 0, 0] for f in s.push(np.zeros(4))] == [7.0] * 3
  assert [f[0, 0, 0] for f in s.flush()] == [5.0] * 2
  assert asked == [4, False, True] and s.frames_out == 5
