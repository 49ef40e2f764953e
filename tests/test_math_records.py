"""Record audio: int16 PCM within half a step of the input, loud input clipped rather than wrapped."""

import numpy as np

from vasa_jax.data import records

FPS, SR, T = 25, 16000, 3


def _clip(audio):
  return {"clip_id": "loud", "identity": 0, "source": "synthetic", "fps": FPS, "sample_rate": SR,
          "audio": audio.astype(np.float32), "labels": {"yaw": np.zeros(T, np.float32)}, "attrs": {}}


def test_audio_round_trip_is_within_half_a_pcm_step():
  audio = np.random.default_rng(0).uniform(-1, 1, T * SR // FPS)
  out = records.decode_clip(records.encode_clip(_clip(audio)))["audio"]
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, audio, atol=0.5 / 32767 + 1e-7)


def test_loud_audio_is_clipped_not_wrapped():
  t = np.arange(T * SR // FPS) / SR
  loud = 3.0 * np.sin(2 * np.pi * 220 * t)            # Peaks at 3x full scale.
  loud[:4] = [1.0, -1.0, 2.0, -2.0]
  out = records.decode_clip(records.encode_clip(_clip(loud)))["audio"]
  np.testing.assert_allclose(out, np.clip(loud, -1.0, 1.0), atol=0.5 / 32767 + 1e-7)
  assert np.all(np.sign(out[np.abs(loud) > 0.01]) == np.sign(loud[np.abs(loud) > 0.01]))
