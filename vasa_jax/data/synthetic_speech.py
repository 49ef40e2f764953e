"""Speech-like audio by source-filter synthesis, and speech tracks from any waveform.

`synth_speech` builds phrases of syllables (optional consonant onset + vowel
nucleus), then renders 16 kHz audio: a Rosenberg glottal pulse train following
a pitch contour (phrase declination plus Gaussian accent bumps) through three
Klatt formant resonators whose targets glide between vowels; consonants are
filtered noise bursts (fricatives) or silence + burst (stops) or a quiet
low-passed hum (nasals); pauses separate phrases.

Both functions return a *track*: per-video-frame float32 arrays [T] that the
motion generator consumes (`synthetic.make_motion`):
  energy    syllable loudness envelope at the frame time (0..1)
  open      mouth opening target, = envelope x vowel openness, taken
            MOUTH_LEAD_S ahead of the sound (the mouth moves first)
  width     lip spreading target (/i/ widest), same lead
  round     lip rounding target (/o/, /u/), same lead
  accent    pitch-accent pulse (0..1): drives nods and brow raises
  boundary  phrase-boundary pulse (0..1) at the end of each phrase
  f0        pitch in Hz (0 where unvoiced)
`motion_track_from_audio` estimates the same track from a real waveform.
"""

import numpy as np
from scipy import signal

SAMPLE_RATE = 16000
FPS = 25
MOUTH_LEAD_S = 0.06  # the mouth leads the sound by 1.5 frames at 25 fps

# Vowel: formants F1..F3 (Hz) and mouth shape (open, width, round).
VOWELS = {
    "a": ((730, 1090, 2440), (1.00, 0.25, 0.00)),
    "e": ((530, 1840, 2480), (0.55, 0.65, 0.00)),
    "i": ((280, 2250, 2950), (0.28, 1.00, 0.00)),
    "o": ((570, 840, 2410), (0.62, 0.00, 0.80)),
    "u": ((310, 870, 2240), (0.30, 0.00, 1.00)),
}
_VOWEL_KEYS = tuple(VOWELS)
_BANDWIDTHS = (80.0, 100.0, 140.0)
_MS = 1000  # articulation tracks are built on a 1 ms grid


def samples_per_frame(fps: int = FPS) -> int:
  return SAMPLE_RATE // fps


def _plan(rng, dur_s):
  """Phrases of syllables: list of dicts with times (s) and phonetic choices."""
  syl = []
  t = rng.uniform(0.05, 0.35)
  phrase = 0
  while t < dur_s:
    n = int(rng.integers(3, 9))
    accents = set(rng.choice(n, size=int(rng.integers(1, 3)), replace=False).tolist())
    start = t
    for j in range(n):
      cons = rng.choice(["none", "fric", "stop", "nasal"], p=[0.3, 0.25, 0.3, 0.15])
      c_dur = 0.0 if cons == "none" else rng.uniform(0.04, 0.09)
      v_dur = rng.uniform(0.11, 0.24) * (1.3 if j in accents else 1.0) * (1.25 if j == n - 1 else 1.0)
      syl.append(dict(cons=str(cons), c0=t, v0=t + c_dur, v1=t + c_dur + v_dur,
                      vowel=str(rng.choice(_VOWEL_KEYS)), amp=(1.0 if j in accents else rng.uniform(0.55, 0.85)),
                      accent=j in accents, phrase=phrase, pos=j / max(n - 1, 1), last=j == n - 1,
                      fric_band=rng.uniform(3500, 6000)))
      t += c_dur + v_dur
    syl[-1]["phrase_span"] = (start, t)
    t += rng.uniform(0.25, 0.6)
    phrase += 1
  return syl


def _nucleus_env(n_ms, s):
  """Raised-cosine attack/decay envelope of a vowel nucleus on the ms grid."""
  env = np.zeros(n_ms, np.float64)
  i0, i1 = int(s["v0"] * _MS), int(s["v1"] * _MS)
  i1 = min(i1, n_ms)
  if i1 <= i0:
    return env
  x = (np.arange(i0, i1) - i0) / max(i1 - i0, 1)
  a = np.clip(x / 0.3, 0, 1)
  d = np.clip((1 - x) / 0.4, 0, 1)
  env[i0:i1] = s["amp"] * np.sin(0.5 * np.pi * np.minimum(a, d)) ** 2
  return env


def _gauss_smooth(x, sigma_samples):
  if sigma_samples <= 0:
    return x
  r = int(3 * sigma_samples) + 1
  k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma_samples) ** 2)
  return np.convolve(np.pad(x, r, mode="edge"), k / k.sum(), mode="valid")


def _frame_sample(track_ms, num_frames, fps, lead_s=0.0):
  """Values of a ms-grid track at frame centres (+ lead)."""
  t = (np.arange(num_frames) + 0.5) / fps + lead_s
  return np.interp(t * _MS, np.arange(len(track_ms)), track_ms).astype(np.float32)


def _resonate(x, freqs_blocks, bw, block):
  """Time-varying 2-pole resonator, coefficients updated every `block` samples."""
  y = np.empty_like(x)
  zi = np.zeros(2)
  for i, f in enumerate(freqs_blocks):
    seg = slice(i * block, min((i + 1) * block, len(x)))
    c = -np.exp(-2 * np.pi * bw / SAMPLE_RATE)
    b1 = 2 * np.exp(-np.pi * bw / SAMPLE_RATE) * np.cos(2 * np.pi * f / SAMPLE_RATE)
    y[seg], zi = signal.lfilter([1 - b1 - c], [1, -b1, -c], x[seg], zi=zi)
  return y


def synth_speech(seed: int, num_frames: int, fps: int = FPS):
  """Speech-like audio float32 [num_frames * 16000 / fps] in [-1, 1] and its track."""
  rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5BEEC4]))
  n_samp = num_frames * SAMPLE_RATE // fps
  dur = n_samp / SAMPLE_RATE
  n_ms = int(np.ceil(dur * _MS)) + 400  # margin so the lead never reads past the end
  syl = _plan(rng, dur + 0.4)

  env = np.zeros(n_ms)
  shape = np.zeros((3, n_ms))
  formant = np.zeros((3, n_ms))
  accent = np.zeros(n_ms)
  boundary = np.zeros(n_ms)
  voiced = np.zeros(n_ms)
  nasal = np.zeros(n_ms)
  f0_rel = np.ones(n_ms)
  tt = np.arange(n_ms) / _MS
  last_f = np.array(VOWELS["e"][0], float)
  fill_from = 0
  for s in syl:
    e = _nucleus_env(n_ms, s)
    env = np.maximum(env, e)
    f, sh = VOWELS[s["vowel"]]
    i0, i1 = int(s["c0"] * _MS), min(int(s["v1"] * _MS), n_ms)
    # Formants hold the previous vowel until the consonant, then glide to the next.
    formant[:, fill_from:i0] = last_f[:, None]
    formant[:, i0:i1] = np.array(f, float)[:, None]
    fill_from, last_f = i1, np.array(f, float)
    v0 = min(int(s["v0"] * _MS), n_ms)
    voiced[v0:i1] = 1.0
    if s["cons"] == "nasal":  # a quiet hum with the lips closed
      voiced[i0:v0] = 1.0
      nasal[i0:v0] = 0.12 * s["amp"]
    for k in range(3):
      shape[k] = np.maximum(shape[k], e / s["amp"] * sh[k] * (0.6 + 0.4 * s["amp"]))
    if s["accent"]:
      tc = 0.5 * (s["v0"] + s["v1"])
      accent = np.maximum(accent, np.exp(-0.5 * ((tt - tc) / 0.09) ** 2))
    if "phrase_span" in s:
      p0, p1 = s["phrase_span"]
      inside = (tt >= p0) & (tt < p1 + 0.15)
      f0_rel[inside] = 1.08 - 0.2 * np.clip((tt[inside] - p0) / max(p1 - p0, 1e-3), 0, 1)
      boundary = np.maximum(boundary, np.exp(-0.5 * ((tt - p1) / 0.12) ** 2))
  formant[:, fill_from:] = last_f[:, None]
  formant = np.stack([_gauss_smooth(f, 25) for f in formant])
  env_sm = _gauss_smooth(env, 4)

  # Source: Rosenberg glottal pulses with a continuous phase through the pitch contour.
  f0_base = rng.uniform(95, 230)
  f0_ms = f0_base * f0_rel * (1 + 0.28 * accent) * (1 + 0.015 * np.sin(2 * np.pi * 5.3 * tt))
  t_s = np.arange(n_samp) / SAMPLE_RATE
  to_s = lambda tr: np.interp(t_s * _MS, np.arange(n_ms), tr)
  f0_s = to_s(f0_ms)
  phase = np.cumsum(f0_s / SAMPLE_RATE)
  ph = phase - np.floor(phase)
  flow = np.where(ph < 0.4, 0.5 * (1 - np.cos(np.pi * ph / 0.4)),
                  np.where(ph < 0.6, np.cos(np.pi * (ph - 0.4) / 0.4), 0.0))
  src = np.diff(flow, prepend=0.0) * 20.0 + 0.02 * rng.standard_normal(n_samp)
  src *= to_s(_gauss_smooth(np.minimum(voiced, 1.0), 5))
  block = 160
  n_blocks = (n_samp + block - 1) // block
  centres = (np.arange(n_blocks) * block + block / 2) / SAMPLE_RATE * _MS
  y = src
  for k in range(3):
    fb = np.interp(centres, np.arange(n_ms), formant[k])
    y = _resonate(y, fb, _BANDWIDTHS[k], block)
  voiced_audio = y * to_s(np.maximum(env_sm, _gauss_smooth(nasal, 5)))

  # Consonant noise.
  noise = np.zeros(n_samp)
  for s in syl:
    a, b = int(s["c0"] * SAMPLE_RATE), min(int(s["v0"] * SAMPLE_RATE), n_samp)
    if b <= a or s["cons"] in ("none", "nasal"):
      continue
    n = b - a
    if s["cons"] == "fric":
      sos = signal.butter(2, [s["fric_band"] - 1500, min(s["fric_band"] + 1500, 7900)], "bandpass",
                          fs=SAMPLE_RATE, output="sos")
      burst = signal.sosfilt(sos, rng.standard_normal(n)) * np.hanning(n) * 0.35
    else:  # stop: closure silence then a short broadband release burst
      burst = np.zeros(n)
      r = min(int(0.015 * SAMPLE_RATE), n)
      burst[n - r:] = rng.standard_normal(r) * np.exp(-np.arange(r) / (0.004 * SAMPLE_RATE)) * 0.5
    noise[a:b] += burst * s["amp"]
  audio = voiced_audio / (np.abs(voiced_audio).max() + 1e-9) * 0.8 + noise * 0.25
  audio = np.clip(audio / max(np.abs(audio).max() / 0.9, 1.0), -1, 1).astype(np.float32)

  lead = MOUTH_LEAD_S
  track = {
      "energy": _frame_sample(env_sm, num_frames, fps),
      "open": _frame_sample(_gauss_smooth(shape[0], 12), num_frames, fps, lead),
      "width": _frame_sample(_gauss_smooth(shape[1], 20), num_frames, fps, lead),
      "round": _frame_sample(_gauss_smooth(shape[2], 20), num_frames, fps, lead),
      "accent": _frame_sample(accent, num_frames, fps),
      "boundary": _frame_sample(boundary, num_frames, fps),
      "f0": _frame_sample(f0_ms * (_gauss_smooth(voiced, 5) > 0.5), num_frames, fps),
  }
  return audio, track


# --------------------------------------------------------------------------------------
# Tracks from real audio


def _frames(x, hop, win, num_frames):
  """Centred analysis windows [num_frames, win] (zero-padded)."""
  pad = np.pad(x, (win // 2, win + hop))
  starts = np.arange(num_frames) * hop + hop // 2
  return np.lib.stride_tricks.sliding_window_view(pad, win)[starts]


def _robust_unit(x, lo_pct=10, hi_pct=97):
  lo, hi = np.percentile(x, lo_pct), np.percentile(x, hi_pct)
  return np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1)


def _pitch_autocorr(frames_Txw, lo=70.0, hi=400.0):
  """Per-frame f0 from the normalised autocorrelation peak (0 where unvoiced)."""
  w = frames_Txw * np.hanning(frames_Txw.shape[1])
  n = 2 * frames_Txw.shape[1]
  spec = np.fft.rfft(w, n)
  ac = np.fft.irfft(np.abs(spec) ** 2, n)[:, :frames_Txw.shape[1]]
  ac /= ac[:, :1] + 1e-9
  lag_lo, lag_hi = int(SAMPLE_RATE / hi), int(SAMPLE_RATE / lo)
  seg = ac[:, lag_lo:lag_hi]
  k = np.argmax(seg, 1)
  peak = seg[np.arange(len(seg)), k]
  return np.where(peak > 0.35, SAMPLE_RATE / (k + lag_lo), 0.0)


def motion_track_from_audio(audio_16k, fps: int = FPS):
  """Estimates a speech track (see module docstring) from any 16 kHz waveform."""
  x = np.asarray(audio_16k, np.float64).reshape(-1)
  hop = SAMPLE_RATE // fps
  num_frames = int(np.ceil(len(x) / hop))
  fr = _frames(x, hop, 2 * hop, num_frames)
  rms_db = 10 * np.log10(np.mean(fr ** 2, 1) + 1e-9)
  energy = _robust_unit(rms_db, 20, 98) ** 1.5
  # Vowel quality from band centroids of the spectrum: F1 region -> openness,
  # F2 region -> spreading (high) versus rounding (low).
  n_fft = 1024
  spec = np.abs(np.fft.rfft(_frames(x, hop, n_fft, num_frames) * np.hanning(n_fft), axis=1)) ** 2
  freqs = np.fft.rfftfreq(n_fft, 1 / SAMPLE_RATE)

  def centroid(lo, hi):
    b = (freqs >= lo) & (freqs < hi)
    return (spec[:, b] @ freqs[b]) / (spec[:, b].sum(1) + 1e-12)

  f1 = centroid(200, 1000)
  f2 = centroid(800, 2800)
  openness = 0.3 + 0.7 * np.clip((f1 - 350) / 350, 0, 1)
  width = np.clip((f2 - 1300) / 800, 0, 1)
  rounding = np.clip((1500 - f2) / 500, 0, 1) * (1 - width)
  voiced_e = energy * (f1 > 0)
  f0 = _pitch_autocorr(fr)
  # Accents: pitch well above its local (1 s) median while loud.
  lf0 = np.where(f0 > 0, np.log(np.maximum(f0, 1.0)), np.nan)
  med = np.array([np.nanmedian(lf0[max(0, i - fps // 2):i + fps // 2 + 1])
                  if np.any(np.isfinite(lf0[max(0, i - fps // 2):i + fps // 2 + 1])) else np.nan
                  for i in range(num_frames)])
  accent = np.nan_to_num(np.clip((lf0 - med) / 0.12, 0, 1)) * energy
  silent = energy < 0.08
  # Boundary pulse where a pause of >= 0.2 s starts.
  boundary = np.zeros(num_frames)
  run = 0
  for i in range(num_frames - 1, -1, -1):
    run = run + 1 if silent[i] else 0
    if run >= int(0.2 * fps) and i > 0 and not silent[i - 1]:
      boundary[i] = 1.0
  boundary = _gauss_smooth(boundary, 3 * fps / 25) * 2.5
  lead_frames = MOUTH_LEAD_S * fps
  t = np.arange(num_frames)

  def lead(v):
    return np.interp(t + lead_frames, t, v)

  return {
      "energy": energy.astype(np.float32),
      "open": lead(_gauss_smooth(voiced_e * openness, 0.6)).astype(np.float32),
      "width": lead(_gauss_smooth(voiced_e * width, 1.0)).astype(np.float32),
      "round": lead(_gauss_smooth(voiced_e * rounding, 1.0)).astype(np.float32),
      "accent": np.clip(_gauss_smooth(accent, 1.5) * 1.5, 0, 1).astype(np.float32),
      "boundary": np.clip(boundary, 0, 1).astype(np.float32),
      "f0": f0.astype(np.float32),
  }
