"""Log-mel alignment, streaming, the JAX log-mel and the learned audio encoder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vasa_jax import audio
from vasa_jax.errors import UserError
from vasa_jax.models.audio_encoder import AudioEncoder

SPEC = audio.LogMelSpec()


def _speechlike(num_samples: int, seed: int = 0) -> np.ndarray:
  """Noise bursts over a gliding tone: broadband and voiced parts, some near-silence."""
  rng = np.random.default_rng(seed)
  t = np.arange(num_samples) / 16000
  tone = 0.3 * np.sin(2 * np.pi * (150 + 40 * np.sin(3 * t)) * t * 3)
  bursts = 0.2 * rng.standard_normal(num_samples) * (np.sin(2 * np.pi * 4 * t) > 0.3)
  return (tone * (np.sin(2 * np.pi * 2 * t) > -0.5) + bursts).astype(np.float32)


def test_geometry_and_shapes():
  assert (SPEC.samples_per_frame, SPEC.hop, SPEC.win_length, SPEC.n_fft, SPEC.left_context) == (
      640, 160, 400, 512, 240)
  feats = audio.logmel_per_frame(np.zeros(641, np.float32))
  assert feats.shape == (2, 4, 80) and feats.dtype == np.float32
  np.testing.assert_array_equal(feats, audio.silence_value())
  np.testing.assert_allclose(audio.logmel_per_frame_jax(jnp.zeros(641)), feats, atol=1e-6)
  assert audio.logmel_per_frame(np.zeros(0, np.float32)).shape == (0, 4, 80)
  with pytest.raises(UserError, match="per_frame"):
    audio.LogMelSpec(per_frame=3)
  with pytest.raises(UserError, match="mono"):
    audio.logmel_per_frame(np.zeros((2, 640), np.float32))


@pytest.mark.parametrize("n", [0, 639, 640, 1000, 1279, 1280 + 160, 3 * 640 + 5])
def test_click_shows_up_first_in_its_frame(n):
  x = np.zeros(5 * 640, np.float32)
  x[n] = 1.0
  for fn in (audio.logmel_per_frame, lambda a: np.asarray(audio.logmel_per_frame_jax(jnp.asarray(a)))):
    feats, silent = fn(x), fn(np.zeros_like(x))
    changed = np.any(feats != silent, axis=(1, 2))
    assert changed.argmax() == n // 640 and changed[n // 640]
    assert not changed[:n // 640].any()


def test_chunked_equals_whole():
  x = _speechlike(16000 + 333)
  whole = audio.logmel_per_frame(x)
  # Explicit left context over whole-frame chunks.
  a, b = x[:7 * 640], x[7 * 640:]
  parts = [audio.logmel_per_frame(a), audio.logmel_per_frame(b, left_context=a[-SPEC.left_context:])]
  np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_jax_matches_librosa():
  x = _speechlike(16000 + 100, seed=1)
  want = audio.logmel_per_frame(x)
  fn = jax.jit(audio.logmel_per_frame_jax)
  got = np.asarray(fn(jnp.asarray(x)))
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=1e-4)
  # Batched, with explicit left context, equals the chunked librosa result.
  ctx = x[6 * 640 - SPEC.left_context:6 * 640]
  batch = np.stack([x[6 * 640:12 * 640], x[6 * 640:12 * 640]])
  got_b = np.asarray(jax.jit(audio.logmel_per_frame_jax)(jnp.asarray(batch), left_context_BxC=jnp.asarray(
      np.stack([ctx, ctx]))))
  np.testing.assert_allclose(got_b[1], want[6:12], atol=1e-4)


def test_normalisation_is_fixed():
  quiet, loud = _speechlike(8000), 4 * _speechlike(8000)
  # Data-independent: 4x amplitude is 16x power, a constant shift of ln(16)/scale where loud.
  diff = audio.logmel_per_frame(loud) - audio.logmel_per_frame(quiet)
  assert np.median(diff) == pytest.approx(np.log(16) / audio.LOG_SCALE, abs=0.05)


@pytest.mark.parametrize("lookahead", [0, 1])
def test_encoder_shapes_and_bounded_context(lookahead):
  enc = AudioEncoder(d_model=24, hidden=16, num_layers=3, kernel_size=3, lookahead=lookahead)
  feats = jax.random.normal(jax.random.key(0), (2, 20, 4, 80))
  params = enc.init(jax.random.key(1), feats)
  out = enc.apply(params, feats)
  assert out.shape == (2, 20, 24)
  past, future = enc.context()
  assert (past, future) == (6 - lookahead, lookahead)
  # Perturbing input frame s changes exactly output frames [s - future, s + past].
  s = 10
  jac = jax.jacobian(lambda f: enc.apply(params, f)[0].sum(-1))(feats)[:, 0, s]  # [T_out, P, M]
  touched = np.flatnonzero(np.abs(np.asarray(jac)).sum((1, 2)) > 0)
  np.testing.assert_array_equal(touched, np.arange(s - future, s + past + 1))
  with pytest.raises(UserError, match="lookahead"):
    AudioEncoder(d_model=8, kernel_size=2, lookahead=2).init(jax.random.key(0), feats)
