"""Log-mel audio features aligned to video frames, in librosa and in JAX.

Alignment. At 16 kHz and 25 fps a video frame is 640 samples; video frame t
owns samples [t*640, (t+1)*640). Each video frame gets `per_frame` mel frames
(4: hop 160 = 10 ms) and mel frame j (j = 4t..4t+3) is the 400-sample (25 ms)
periodic-Hann window that *ends* at sample (j+1)*160, zero-padded to a 512-point
FFT. So frame t's features see samples [t*640 - 240, (t+1)*640): no lookahead at
all, and 240 samples (`LogMelSpec.left_context`) of the previous frame. The clip
is preceded by digital silence (zeros) and its last partial frame is padded
with zeros, so T = ceil(len / 640). A sound at sample n first changes frame
n // 640; every earlier frame is bit-for-bit what silence gives.

Streaming. Features of a chunk of whole frames depend only on the chunk and the
240 samples before it, so `logmel_per_frame(chunk, left_context=prev)` reproduces
the whole-clip features chunk by chunk. (The sampler streams raw audio and
computes features per window inside its jitted step; see `motion.WindowLoop`.)

Normalisation. Fixed, never data-dependent: `(ln(mel_power + 1e-5) - LOG_OFFSET)
/ LOG_SCALE`, with mel power from librosa's Slaney mel filters on the |STFT|²
of float audio in [-1, 1]. The constants put speech at roughly zero mean, unit
variance (measured once on the bundled speech example); digital silence is
exactly `silence_value()` (about -1.0) in every clip; loud speech peaks
near +3.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import librosa
import numpy as np

from vasa_jax.errors import UserError

LOG_FLOOR = 1e-5
LOG_OFFSET = -8.0
LOG_SCALE = 3.5


@dataclasses.dataclass(frozen=True)
class LogMelSpec:
  """Log-mel geometry: `per_frame` mel frames of `n_mels` bins per video frame."""
  fps: int = 25
  sample_rate: int = 16000
  n_mels: int = 80
  per_frame: int = 4
  fmin: float = 20.0
  fmax: float | None = None  # None: sample_rate / 2

  def __post_init__(self):
    spf = self.sample_rate / self.fps
    if spf != int(spf) or int(spf) % self.per_frame:
      raise UserError(f"log-mel: {self.sample_rate} Hz at {self.fps} fps is {spf:g} samples per frame; "
                      f"it must be a whole number divisible by per_frame={self.per_frame}")
    if self.hop > self.win_length:
      raise UserError(f"log-mel: hop {self.hop} samples is longer than the 25 ms window "
                      f"({self.win_length}); raise per_frame")

  @property
  def samples_per_frame(self) -> int:
    return self.sample_rate // self.fps

  @property
  def hop(self) -> int:
    return self.samples_per_frame // self.per_frame

  @property
  def win_length(self) -> int:
    return round(0.025 * self.sample_rate)

  @property
  def n_fft(self) -> int:
    return 1 << (self.win_length - 1).bit_length()

  @property
  def left_context(self) -> int:
    """Samples before a frame that its features see (240 at the defaults)."""
    return self.win_length - self.hop

  @property
  def feature_dim(self) -> int:
    return self.per_frame * self.n_mels

  def num_frames(self, num_samples: int) -> int:
    return -(-num_samples // self.samples_per_frame)


def silence_value() -> np.float32:
  """Every bin's value for digital silence (exact for librosa, within 1e-6 for JAX)."""
  return (np.log(np.float32(LOG_FLOOR)) - np.float32(LOG_OFFSET)) / np.float32(LOG_SCALE)


@functools.lru_cache(maxsize=8)
def _mel_basis(spec: LogMelSpec) -> np.ndarray:
  """Slaney mel filters `[n_mels, n_fft // 2 + 1]`, float32."""
  return librosa.filters.mel(sr=spec.sample_rate, n_fft=spec.n_fft, n_mels=spec.n_mels, fmin=spec.fmin,
                             fmax=spec.fmax).astype(np.float32)


def _check_audio(audio, spec: LogMelSpec, left_context) -> tuple[np.ndarray, np.ndarray]:
  audio = np.asarray(audio, np.float32)
  if audio.ndim != 1:
    raise UserError(f"log-mel needs mono audio as one array of samples; got shape {audio.shape}")
  if left_context is None:
    left_context = np.zeros(spec.left_context, np.float32)
  left_context = np.asarray(left_context, np.float32)
  if left_context.shape != (spec.left_context,):
    raise UserError(f"log-mel left_context must be the {spec.left_context} samples before the audio; "
                    f"got shape {left_context.shape}")
  return audio, left_context


def _normalise(mel_power):
  return (jnp.log(mel_power + LOG_FLOOR) - LOG_OFFSET) / LOG_SCALE


def logmel_per_frame(audio: np.ndarray, spec: LogMelSpec = LogMelSpec(),
                     left_context: np.ndarray | None = None) -> np.ndarray:
  """Normalised log-mel `[T, per_frame, n_mels]` float32 via librosa; T = ceil(len / samples_per_frame).

  `left_context`: the `spec.left_context` samples that precede `audio` (zeros
  when None, i.e. the clip starts after silence).
  """
  audio, left_context = _check_audio(audio, spec, left_context)
  t = spec.num_frames(audio.size)
  if t == 0:
    return np.zeros((0, spec.per_frame, spec.n_mels), np.float32)
  # librosa centres the window inside the n_fft frame; pad so each window ends
  # exactly on its hop boundary (module docstring) and the last frame fits.
  lpad = (spec.n_fft - spec.win_length) // 2
  rpad = spec.n_fft - spec.win_length - lpad
  x = np.zeros(lpad + spec.left_context + t * spec.samples_per_frame + rpad, np.float32)
  x[lpad:lpad + spec.left_context] = left_context
  x[lpad + spec.left_context:lpad + spec.left_context + audio.size] = audio
  power_FxJ = np.abs(librosa.stft(x, n_fft=spec.n_fft, hop_length=spec.hop, win_length=spec.win_length,
                                  window="hann", center=False)) ** 2
  # einsum's own loop, not BLAS: each frame's sum is then done in the same
  # order whatever the number of frames, so chunked == whole bit for bit.
  mel_JxM = np.einsum("mf,fj->jm", _mel_basis(spec), power_FxJ)
  assert mel_JxM.shape[0] == t * spec.per_frame
  feats = (np.log(mel_JxM + np.float32(LOG_FLOOR)) - np.float32(LOG_OFFSET)) / np.float32(LOG_SCALE)
  return feats.reshape(t, spec.per_frame, spec.n_mels).astype(np.float32)


def logmel_per_frame_jax(audio_BxS: jax.Array, spec: LogMelSpec = LogMelSpec(),
                         left_context_BxC: jax.Array | None = None) -> jax.Array:
  """The same features as `logmel_per_frame` in jittable JAX: `[..., S]` -> `[..., T, per_frame, n_mels]`.

  Leading batch axes are kept. The frames and filters are static, so shapes are
  fixed by S; the partial last frame is zero-padded as in the librosa version.
  Under `jax.jit`, pass a non-default spec as static (`static_argnames="spec"`).
  """
  t = spec.num_frames(audio_BxS.shape[-1])
  batch = audio_BxS.shape[:-1]
  if left_context_BxC is None:
    left_context_BxC = jnp.zeros((*batch, spec.left_context), audio_BxS.dtype)
  pad = t * spec.samples_per_frame - audio_BxS.shape[-1]
  x = jnp.concatenate([left_context_BxC, audio_BxS, jnp.zeros((*batch, pad), audio_BxS.dtype)], -1)
  n_mel_frames = t * spec.per_frame
  # Window j covers x[j*hop : j*hop + win] (x starts `left_context` early).
  idx_JxW = np.arange(n_mel_frames)[:, None] * spec.hop + np.arange(spec.win_length)[None, :]
  window = librosa.filters.get_window("hann", spec.win_length, fftbins=True).astype(np.float32)
  frames = x[..., idx_JxW] * window
  # Zero-padding at the end rather than centred only shifts the phase: |FFT| is the same.
  spectrum = jnp.fft.rfft(frames, n=spec.n_fft, axis=-1)
  power_JxF = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2
  mel_JxM = jnp.einsum("...jf,mf->...jm", power_JxF, _mel_basis(spec),
                       precision=jax.lax.Precision.HIGHEST)
  return _normalise(mel_JxM).reshape(*batch, t, spec.per_frame, spec.n_mels)
