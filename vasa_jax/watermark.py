"""Invisible watermark: a 64-bit payload in every frame, embedded in JAX, detected in numpy.

Scheme (spread spectrum, modulated in time so that a still host cancels):
- The frame is divided into a 32x32 grid of cells in normalised coordinates, so the
  grid scales with the frame: a downscaled video still holds the same cells. An
  eighth of the cells are a pilot that always carries +1 (it fixes the sign); each
  other cell carries one of the 188 coded bits (ecc.py: 64 payload bits + CRC-24,
  rate-1/2 K=7 convolutional code) times a fixed pseudo-random chip (+-1). The
  cell-to-bit map is a fixed permutation, so every bit is spread over ~5 cells all
  over the frame and a crop only erases some of them.
- The spatial pattern is nearly flat inside each cell (a box with a short linear
  cross-fade at the edges): H.264 codes a cell-sized offset as a few large DCT
  levels, where a fine pattern of the same energy becomes many small levels that
  the encoder drops. The mark is added equally to R, G and B (luminance only).
- Perceptual masking: a cell's amplitude grows with the luminance texture of that
  cell (its pixels' standard deviation): 0.5x on flat skin and background, up to 2x
  on texture. Each frame's mark is capped at the RMS of a 39 dB PSNR.
- Time: the pattern is multiplied by a smoothed square wave of period 1 s,
  w(t) = sin(pi/2 * clip(3 sin(2 pi t), -1, 1)), t in seconds from the first frame:
  plateaus of +1 and -1, and sign changes spread over ~0.1 s (a cosine ramp, no
  step). Why: a constant mark on a still textured host (a photo animated with a
  near-still head) cannot be told from the host's own texture, and averaging frames
  does not help when nothing moves; with the sign changing in time, the detector
  correlates the frames with the wave and everything constant (the host, and the
  codec's constant error on it) cancels. The flips are what H.264 must code in its
  P-frames; they are abrupt enough (the full 2x amplitude within ~3 frames) for the
  encoder to code them where it would skip a slow drift.
- Detection reads each frame's time stamp (so a 15 fps copy or a trimmed start
  still lines up) and fits each luminance pixel's series by least squares with a
  cubic polynomial in time (a still host, a fade, a slow drift or slow motion) plus
  the cosine and sine of the wave's odd harmonics 1, 3 and 5 Hz; the six coefficient
  images hold the mark as b_k sin(k phase) P and b_k cos(k phase) P (b_k: the wave's
  sine series). The flips live in the 3 and 5 Hz harmonics, where a moving host (head
  or camera motion, smooth in time) leaks far less than into the 1 Hz fundamental.
  The detector searches crop scale and offset on all six with a phase-free energy
  statistic over the 189 bit groups, then tries the wave's phase on a grid with
  matched weights over the images, reweights each harmonic by how much of the mark it
  shows there (motion drowns the fundamental, the codec the upper harmonics), takes
  the sign from the pilot, and Viterbi-decodes; the CRC-24 decides "found" (a false
  match needs the CRC to pass by chance: 2^-24 per decoding attempt, 3 attempts at
  most).

Measured (benchmarks/watermark_robustness.py; README "Responsible use" has the
table): real portraits held still and moving, at 128^2, 256^2 and 512^2, through
H.264 crf 23/28, half size, 10% crop, brightness/contrast, 15 fps and a 720p
re-encode chain. Every embedding operation is a small matmul with a 32-row
matrix per side; cost per frame is in the benchmark.

The key (chips and bit map) is public and fixed, so anyone can verify. It also means
a determined attacker who reads this file can estimate and subtract the mark; the
watermark deters casual misuse and labels honest use, it is not tamper-proof.
"""

import dataclasses
import functools
import hashlib
import math
import secrets

import jax
import jax.numpy as jnp
import numpy as np

from vasa_jax import ecc, media

GRID = 32
STRENGTH = 3.5 / 255.0  # Base amplitude of a cell value, before masking.
PERIOD_S = 1.0  # Period of the wave that modulates the mark in time.
SHARPNESS = 3.0  # How square the wave is: sign changes take ~PERIOD_S / (pi * SHARPNESS).
EDGE = 0.3  # Width of the cross-fade between neighbouring cells, in cells.
PILOT_SHARE = 8  # One cell in PILOT_SHARE is a pilot.
MIN_PILOT_Z = 2.0  # Sanity floor on the pilot at the decoded crop; the CRC-24 is the real test.
ATTEMPTS = 3  # Decoding attempts per video (each can pass the CRC by chance with p = 2^-24).
PAYLOAD_VERSION = 2  # 2: the checkpoint tag is the first 6 hex digits of the checkpoint hash.
_KEY = 0x7A5A_1A5E  # Seed of the public chip pattern and bit map.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
# Detector's search over crops: kept fraction of each side and where the crop starts.
_SCALES = (1.0, 0.95, 0.9, 0.85, 0.8)
_OFFSET_STEP = 1.0 / (2 * GRID)
_BUDGET_RMS = 10 ** (-38 / 20)  # Mark RMS of a 38 dB PSNR: the most any frame gets.
_CLIP = 2.5  # Detector clips cell residuals at this many robust sigmas.
_MIN_SPAN_S = 0.75  # Shorter clips hold less than one flip of the wave each way: not searched.
HARMONICS = (1, 3, 5)  # Of the wave, read by the detector.
_PHASES = 128  # Grid of the wave's phase in the decoder.
TREND = 3  # Degree of the polynomial in time fitted to each pixel (a still host, a fade, slow motion).


# --------------------------------------------------------------------------- payload


def checkpoint_tag(checkpoint_hash: str) -> int:
  """24-bit tag of a checkpoint hash: its first 6 hex digits, so the payload's tag reads as the
  start of the hash in the metadata; a name that is not hex is hashed (SHA-256) first."""
  head = checkpoint_hash[:6].lower()
  if len(head) == 6 and all(c in "0123456789abcdef" for c in head):
    return int(head, 16)
  return int.from_bytes(hashlib.sha256(checkpoint_hash.encode()).digest()[:3], "big")


def make_payload(checkpoint_hash: str, generation_id: int | None = None) -> int:
  """64-bit payload: 4-bit version | 24-bit checkpoint tag | 36-bit generation id (random if None)."""
  if generation_id is None:
    generation_id = secrets.randbits(36)
  if not 0 <= generation_id < 1 << 36:
    raise ValueError(f"generation_id must fit in 36 bits, got {generation_id}")
  return (PAYLOAD_VERSION << 60) | (checkpoint_tag(checkpoint_hash) << 36) | generation_id


def parse_payload(payload: int) -> dict:
  """The fields of a payload made by `make_payload`."""
  return {"version": payload >> 60, "checkpoint_tag": f"{(payload >> 36) & 0xFFFFFF:06x}",
          "generation_id": payload & ((1 << 36) - 1)}


# --------------------------------------------------------------------------- geometry


@functools.lru_cache(maxsize=None)
def _layout():
  """Public key: chips [G, G] (+-1) and the one-hot map [G*G, K+1] from cells to coded bits.

  One cell in PILOT_SHARE forms the last group, a pilot that always carries +1: it
  gives the detector the sign of the wave without knowing the payload.
  """
  rng = np.random.default_rng(_KEY)
  chips_GxG = rng.choice(np.array([-1.0, 1.0], np.float32), size=(GRID, GRID))
  cells = GRID * GRID
  order = rng.permutation(cells)
  pilots = cells // PILOT_SHARE
  bit_of_cell = np.empty(cells, np.int64)
  bit_of_cell[order[:pilots]] = ecc.CODED_BITS
  bit_of_cell[order[pilots:]] = np.arange(cells - pilots) % ecc.CODED_BITS
  onehot_CxK = np.zeros((cells, ecc.CODED_BITS + 1), np.float32)
  onehot_CxK[np.arange(cells), bit_of_cell] = 1.0
  return chips_GxG, onehot_CxK


def _cell_matrix(n: int, offset: float = 0.0, scale: float = 1.0):
  """Averaging matrix [G, n] from n observed pixels to the original frame's cells.

  Observed pixel i sits at `offset + scale * (i + 0.5) / n` of the original side.
  Also returns which cells are covered by at least half their pixels.
  """
  x = offset + scale * (np.arange(n) + 0.5) / n
  cell = np.floor(x * GRID).astype(np.int64)
  inside = (cell >= 0) & (cell < GRID)
  m_Gxn = np.zeros((GRID, n), np.float32)
  m_Gxn[cell[inside], np.arange(n)[inside]] = 1.0
  counts = m_Gxn.sum(1)
  valid = counts >= 0.5 * n / (scale * GRID)
  return m_Gxn / np.maximum(counts, 1.0)[:, None], valid.astype(np.float32)


def _spread_matrix(n: int, edge: float = EDGE) -> np.ndarray:
  """Weights [n, G] from cell values to n pixels (rows sum to 1): each cell's value fills the
  cell, with a linear cross-fade `edge` cells wide across each border between cells."""
  u = (np.arange(n) + 0.5) / n * GRID - 0.5  # Pixel position in cell-centre units.
  d = np.abs(u[:, None] - np.arange(GRID)[None, :])
  w = np.clip((0.5 + edge / 2 - d) / edge, 0.0, 1.0) if edge > 0 else (d < 0.5).astype(np.float64)
  w[:, 0] = np.where(u < 0, 1.0, w[:, 0])  # Beyond the first and last centres: that cell alone.
  w[:, -1] = np.where(u > GRID - 1, 1.0, w[:, -1])
  return (w / w.sum(1, keepdims=True)).astype(np.float32)


def _highpass(cells, valid, xp):
  """Cell value minus the mean of its valid 8 neighbours (on the last two axes)."""
  pad = [(0, 0)] * (cells.ndim - 2) + [(1, 1), (1, 1)]
  cp, vp = xp.pad(cells * valid, pad), xp.pad(valid * xp.ones_like(cells), pad)
  s = sum(cp[..., i:i + GRID, j:j + GRID] for i in range(3) for j in range(3)) - cells * valid
  n = sum(vp[..., i:i + GRID, j:j + GRID] for i in range(3) for j in range(3)) - valid
  return (cells - s / xp.maximum(n, 1.0)) * valid


def wave(t_seconds, xp=np):
  """The mark's sign over time: a smoothed square wave of period PERIOD_S, in [-1, 1]."""
  s = xp.sin(2 * np.pi * xp.asarray(t_seconds) / PERIOD_S)
  return xp.sin(0.5 * np.pi * xp.clip(SHARPNESS * s, -1.0, 1.0))


@functools.lru_cache(maxsize=None)
def _harmonic_amplitudes(harmonics):
  """b_k of the wave's sine series w(t) = sum_k b_k sin(2 pi k t / PERIOD_S), for each k in `harmonics`."""
  t = (np.arange(4096) + 0.5) / 4096 * PERIOD_S
  w = wave(t)
  return np.array([2 * np.mean(w * np.sin(2 * np.pi * k * t / PERIOD_S)) for k in harmonics])


def _template(harmonics, sigmas, phases):
  """Unit weights [phases, 2 * len(harmonics)] over the images (cos, sin of each harmonic): the mark's
  expected z-score in each image when the video's clock is `phase` of a period ahead of the wave's."""
  b = _harmonic_amplitudes(tuple(harmonics))
  th = 2 * np.pi * np.asarray(phases)[:, None] * np.asarray(harmonics)[None, :]
  m = np.stack([b * np.sin(th), b * np.cos(th)], -1).reshape(len(phases), -1) / np.asarray(sigmas)[None, :]
  return m / np.linalg.norm(m, axis=1, keepdims=True)


# --------------------------------------------------------------------------- embedding


def coded_signs(payload: int) -> np.ndarray:
  """The 188 coded bits of a payload as +-1 float32, then the pilot's +1."""
  return np.append(2.0 * ecc.encode(payload) - 1.0, 1.0).astype(np.float32)


def _texture_mask(std):
  """Cell amplitude factor: 0.5 on flat cells, up to ~2 on textured ones."""
  return 0.5 + 1.5 * std / (std + 0.04)


@jax.jit
def embed(frames_BxHxWx3, signs_K, times_B, strength=STRENGTH):
  """Adds the watermark of `signs_K` (see `coded_signs`) to float frames in [0, 1].

  `times_B`: each frame's time in seconds from the video's first frame (frame index / fps);
  the same frame at the same time gets the same mark however the video is cut into batches.
  """
  _, h, w, _ = frames_BxHxWx3.shape
  chips_GxG, onehot_CxK = _layout()
  dh, _ = _cell_matrix(h)
  dw, _ = _cell_matrix(w)
  y_BxHxW = frames_BxHxWx3 @ jnp.asarray(_LUMA)
  mean_BxGxG = jnp.einsum("gh,bhw,kw->bgk", dh, y_BxHxW, dw)
  sq_BxGxG = jnp.einsum("gh,bhw,kw->bgk", dh, y_BxHxW * y_BxHxW, dw)
  mask_BxGxG = _texture_mask(jnp.sqrt(jnp.maximum(sq_BxGxG - mean_BxGxG ** 2, 0.0)))
  cell_BxGxG = strength * mask_BxGxG * (chips_GxG * (onehot_CxK @ signs_K).reshape(GRID, GRID))
  mark_BxHxW = jnp.einsum("hg,bgk,wk->bhw", _spread_matrix(h), cell_BxGxG, _spread_matrix(w))
  rms_Bx1x1 = jnp.sqrt(jnp.mean(mark_BxHxW ** 2, axis=(1, 2), keepdims=True)) + 1e-8
  mark_BxHxW *= jnp.minimum(1.0, _BUDGET_RMS * strength / STRENGTH / rms_Bx1x1)
  mark_BxHxW *= wave(times_B, jnp)[:, None, None]
  return jnp.clip(frames_BxHxWx3 + mark_BxHxW[..., None], 0.0, 1.0)


# --------------------------------------------------------------------------- detection


@dataclasses.dataclass
class Detection:
  """What `detect` found.

  `found` needs a decoded payload whose CRC-24 holds. `signal` is the search's
  phase-free energy statistic at the chosen crop, about N(0, 1) on unmarked video
  (a few units at most after the crop search) and far above on marked video; it is
  a strength reading, not a probability. `false_match` is the chance that an
  unmarked video passes the CRC check in this many attempts (None when not found).
  """
  found: bool
  payload: int | None
  signal: float
  false_match: float | None
  bit_agreement: float  # Share of soft bits that agree with the decoded codeword.
  frames_used: int
  crop: tuple[float, float, float, float]  # (x offset, y offset, x scale, y scale) of the match.
  seconds: float = 0.0  # Time span of the frames used.
  soft: np.ndarray | None = dataclasses.field(default=None, repr=False)  # Coded soft bits at the crop.

  @property
  def fields(self) -> dict | None:
    return parse_payload(self.payload) if self.payload is not None else None


def _hypotheses(scales=_SCALES, step=_OFFSET_STEP):
  return [(float(o), s) for s in scales for o in np.arange(0.0, 1.0 - s + 1e-9, step)]


def _bounds(n: int, hyps) -> tuple[np.ndarray, np.ndarray]:
  """Pixel ranges [hyps, G+1] of each cell under each (offset, scale), and which cells count.

  Same assignment as `_cell_matrix` (pixel centre -> cell), as integer bounds so that
  cell means come from cumulative sums.
  """
  o = np.array([h[0] for h in hyps])[:, None]
  s = np.array([h[1] for h in hyps])[:, None]
  edges = np.arange(GRID + 1)[None, :] / GRID
  b = np.clip(np.ceil((edges - o) / s * n - 0.5), 0, n).astype(np.int64)
  counts = np.diff(b, axis=1)
  return b, (counts >= 0.5 * n / (s * GRID)).astype(np.float32)


def _residuals(y_HxW, hyp_y, hyp_x, sigma=None):
  """High-passed, normalised cell means [ny, nx, G, G] under every crop hypothesis."""
  h, w = y_HxW.shape
  by, vy = _bounds(h, hyp_y)
  bx, vx = _bounds(w, hyp_x)
  cum = np.concatenate([np.zeros((1, w)), np.cumsum(y_HxW, 0, dtype=np.float64)])
  rows_YxGxW = (cum[by[:, 1:]] - cum[by[:, :-1]]) / np.maximum(np.diff(by, axis=1), 1)[..., None]
  cum = np.concatenate([np.zeros(rows_YxGxW.shape[:2] + (1,)), np.cumsum(rows_YxGxW, -1)], -1)
  cells = (cum[:, :, bx[:, 1:]] - cum[:, :, bx[:, :-1]]) / np.maximum(np.diff(bx, axis=1), 1)
  cells = cells.transpose(0, 2, 1, 3).astype(np.float32)  # [ny, nx, G, G]
  valid = vy[:, None, :, None] * vx[None, :, None, :]
  r = _highpass(cells, valid, np)
  if sigma is None:  # Robust scale of the residual, shared by all hypotheses.
    sigma = float(1.4826 * np.median(np.abs(r[valid > 0])) + 1e-12)
  return np.clip(r / np.float32(sigma), -_CLIP, _CLIP), sigma  # Edges of the face would otherwise dominate.


@functools.lru_cache(maxsize=None)
def _groups():
  """Cells sorted by their group, and where each group starts in that order (for reduceat)."""
  _, onehot_CxK = _layout()
  group = onehot_CxK.argmax(1)
  order = np.argsort(group, kind="stable")
  return order, np.searchsorted(group[order], np.arange(onehot_CxK.shape[1]))


def _group_sums(r, chips_GxG, onehot_CxK):
  """Per coded bit (and pilot): chip-weighted sums and noise energies [..., K+1]."""
  flat = r.reshape(r.shape[:-2] + (-1,))
  if onehot_CxK is not _layout()[1]:  # Another map (tests): the plain matrix product.
    return (chips_GxG.reshape(-1) * flat) @ onehot_CxK, (flat * flat) @ onehot_CxK
  order, starts = _groups()
  flat = flat[..., order]
  return (np.add.reduceat(flat * chips_GxG.reshape(-1)[order], starts, axis=-1),
          np.add.reduceat(flat * flat, starts, axis=-1))


def _energy_z(pair, hyp_y, hyp_x, sigmas, chunk=8):
  """Phase-free statistic [ny, nx]: the bit groups' normalised sums, squared and summed over both
  quadrature images, standardised (about N(0, 1) without a mark)."""
  chips_GxG, onehot_CxK = _layout()
  k = onehot_CxK.shape[1]
  zs = []
  for i in range(0, len(hyp_y), chunk):
    q = 0.0
    for img, sigma in zip(pair, sigmas):
      r, _ = _residuals(img, hyp_y[i:i + chunk], hyp_x, sigma)
      soft, energy = _group_sums(r, chips_GxG, onehot_CxK)
      q = q + (soft * soft / np.maximum(energy, 1e-9)).sum(-1)
    zs.append((q - len(pair) * k) / np.sqrt(2 * len(pair) * k))
  return np.concatenate(zs)


def _refine(pair, sigmas, oy, sy, ox, sx):
  """Coordinate ascent on one axis at a time around a coarse match."""
  for _ in range(2):
    for axis in (0, 1):
      o, s = (oy, sy) if axis == 0 else (ox, sx)
      local = [(o + do, s + ds) for ds in np.linspace(-0.025, 0.025, 5)
               for do in np.linspace(-_OFFSET_STEP, _OFFSET_STEP, 5) if s + ds <= 1.0 + 1e-9]
      hy, hx = (local, [(ox, sx)]) if axis == 0 else ([(oy, sy)], local)
      z = _energy_z(pair, hy, hx, sigmas)
      o, s = local[int(np.argmax(z.reshape(-1)))]
      oy, sy, ox, sx = (o, s, ox, sx) if axis == 0 else (oy, sy, o, s)
  return oy, sy, ox, sx


def _decode_at(pair, sigmas, oy, sy, ox, sx, harmonics=None):
  """Payload (None unless the CRC holds), pilot z, agreement and the groups' z-scores at one crop."""
  chips_GxG, onehot_CxK = _layout()
  harmonics = HARMONICS if harmonics is None else harmonics
  sums = []
  for img, sigma in zip(pair, sigmas):
    r, _ = _residuals(img, [(oy, sy)], [(ox, sx)], sigma)
    sums.append(_group_sums(r[0, 0], chips_GxG, onehot_CxK))
  soft_NxK = np.stack([s for s, _ in sums])
  energy_NxK = np.stack([e for _, e in sums])
  # The mark is b_k P sin(k theta) in harmonic k's cos image and b_k P cos(k theta) in its sin image
  # (theta: the wave's phase at the video's time 0, unknown after a trimmed start). Each phase on a
  # grid gives matched weights over the images; the one whose bit groups answer most is taken, the
  # pilot (always +1) picks between theta and theta + pi (the same wave, negated).
  xy = soft_NxK / np.sqrt(np.maximum(energy_NxK, 1e-9))  # Per image and group: a z-score.
  u = _template(harmonics, sigmas, np.arange(_PHASES) / _PHASES)
  zs = u @ xy
  best = int(np.argmax((zs[:, :-1] ** 2).sum(1) * np.sign(zs[:, -1])))
  z_K = zs[best]
  # Reweight each harmonic by how much of the mark it shows at that phase (a moving host drowns
  # the fundamental in some videos, the codec the upper harmonics in others).
  th = 2 * np.pi * best / _PHASES * np.asarray(harmonics)
  unit = np.stack([np.sin(th), np.cos(th)], -1).reshape(-1)
  decided = np.sign(z_K)
  seen = ((unit[:, None] * xy) * decided).reshape(len(harmonics), 2, -1).sum(1).mean(-1)
  if seen.max() > 0:
    u = unit * np.repeat(np.maximum(seen, 0.0), 2)
    z_K = (u / np.linalg.norm(u)) @ xy  # Per group: a z-score (~N(0, 1) without a mark).
  payload, recoded = ecc.decode(z_K[:-1])
  agree = float(np.mean((z_K[:-1] > 0) == (recoded > 0)))
  return payload, float(z_K[-1]), agree, z_K


def _downsample(y_HxW: np.ndarray, most: int) -> np.ndarray:
  """Box-averages so no side exceeds `most` pixels (the mark lives in cells, not pixels)."""
  fy, fx = -(-y_HxW.shape[0] // most), -(-y_HxW.shape[1] // most)
  h, w = y_HxW.shape[0] // fy * fy, y_HxW.shape[1] // fx * fx
  return y_HxW[:h, :w].reshape(h // fy, fy, w // fx, fx).mean((1, 3))


class Demodulator:
  """Accumulates luminance frames with their times; `images()` gives the quadrature images.

  Each pixel's series is fitted by least squares with a polynomial in time (degree TREND:
  a still host, a fade, a slow drift or slow motion) plus the cosine and sine of each of
  the wave's HARMONICS; the images are the harmonics' coefficients. The flips of the
  wave live in its odd harmonics (3, 5 Hz), where smooth head or camera motion, which
  leaks into the 1 Hz fundamental, has little energy. Memory is constant in the number
  of frames: only sums over frames are kept.
  """

  def __init__(self, most: int = 4 * GRID, harmonics=None, trend=None):
    self.most = most
    self.harmonics = tuple(HARMONICS if harmonics is None else harmonics)
    self.trend = TREND if trend is None else trend
    self.count = 0
    self.t0 = None
    p = self.trend + 1 + 2 * len(self.harmonics)
    self._gram = np.zeros((p, p))
    self._images = None  # sums of basis_j * Y

  def _basis(self, t, t_abs):
    ph = 2 * np.pi * t_abs / PERIOD_S
    out = [t ** d for d in range(self.trend + 1)]
    for k in self.harmonics:
      out += [math.cos(k * ph), math.sin(k * ph)]
    return np.array(out)

  def add(self, frame_HxWx3, t_seconds: float) -> None:
    f = np.asarray(frame_HxWx3)
    scale = 1.0 / 255.0 if f.dtype == np.uint8 else 1.0
    y = _downsample(f.astype(np.float32) @ _LUMA * scale, self.most).astype(np.float64)
    if self.t0 is None:
      self.t0 = float(t_seconds)
    t = float(t_seconds) - self.t0
    b = self._basis(t, float(t_seconds))
    if self._images is None:
      self._images = np.zeros((len(b),) + y.shape)
    self._images += b[:, None, None] * y[None]
    self._gram += np.outer(b, b)
    self.count += 1
    self.span = t

  def images(self):
    """[cos, sin] image of each harmonic in turn (2 per harmonic), in luminance units; None for too
    few frames to fit."""
    p = self._gram.shape[0]
    if self.count < p + 1:
      return None
    inv = np.linalg.pinv(self._gram, rcond=1e-10)
    q = self.trend + 1
    coef = np.tensordot(inv[q:], self._images, axes=1)
    return [c.astype(np.float32) for c in coef]


def _pair_sigmas(images):
  """Robust noise scale of each image, shared within each harmonic's cos/sin pair (the mark's share
  between them is its phase)."""
  raw = [_residuals(p, [(0.0, 1.0)], [(0.0, 1.0)])[1] for p in images]
  out = []
  for i in range(0, len(raw), 2):
    s = float(np.sqrt(np.mean(np.square(raw[i:i + 2]))))
    out += [s] * len(raw[i:i + 2])
  return out


def detect_pair(pair, frames_used: int = 0, seconds: float = 0.0, *, attempts: int = ATTEMPTS) -> Detection:
  """Detects the watermark in the quadrature images of a `Demodulator` (cos and sin per harmonic)."""
  none = Detection(False, None, 0.0, None, 0.0, frames_used, (0.0, 0.0, 1.0, 1.0), seconds)
  if pair is None or not all(np.isfinite(p).all() for p in pair):
    return none
  sigmas = _pair_sigmas(pair)
  if max(sigmas) < 1e-7:  # Nothing changes between frames (a still image or a frozen video).
    return none
  sigmas = [max(s, 1e-7) for s in sigmas]
  hyps = _hypotheses()
  z_all = _energy_z(pair, hyps, hyps, sigmas)
  # The full frame first (the common case), then the crops that answer best.
  order = [0] + [int(i) for i in np.argsort(-z_all.reshape(-1)) if i != 0][:attempts - 1]
  best = None
  for n, i in enumerate(order, start=1):
    (oy, sy), (ox, sx) = hyps[i // len(hyps)], hyps[i % len(hyps)]
    if i != 0:
      oy, sy, ox, sx = _refine(pair, sigmas, oy, sy, ox, sx)
    z = float(_energy_z(pair, [(oy, sy)], [(ox, sx)], sigmas)[0, 0])
    payload, z_pilot, agree, soft = _decode_at(pair, sigmas, oy, sy, ox, sx)
    found = payload is not None and z_pilot >= MIN_PILOT_Z
    result = Detection(found, payload if found else None, z, n * 2.0 ** -ecc.CRC_BITS if found else None,
                       agree, frames_used, (float(ox), float(oy), float(sx), float(sy)), seconds, soft[:-1])
    if found:
      return result
    if best is None or z > best.signal:
      best = result
  return best


def _frames_with_times(path, max_frames):
  """(frame, time in seconds) of a video file's first `max_frames` frames, by their time stamps."""
  import av  # pylint: disable=import-outside-toplevel
  media.require_file(path, "video", "an mp4/mov/mkv/webm video")
  try:
    with av.open(str(path), metadata_errors="ignore") as container:
      if not container.streams.video:
        raise media.UserError(f"video {path!r} has no video track")
      stream = container.streams.video[0]
      fps = float(stream.average_rate) if stream.average_rate else 25.0
      for i, frame in enumerate(container.decode(stream)):
        if i >= max_frames:
          break
        t = frame.time if frame.time is not None else i / fps
        yield frame.to_ndarray(format="rgb24"), float(t)
  except av.error.FFmpegError as e:
    raise media.UserError(f"video {path!r} is truncated or corrupt ({media._short(e)})") from None


def detect(frames_or_path, *, fps: float = 25.0, times=None, max_frames: int = 500) -> Detection:
  """Detects the watermark in frames (TxHxWx3 uint8 or float, at `fps` or at `times` seconds)
  or in a video file (whose frames' own time stamps are used)."""
  demod = Demodulator()
  if isinstance(frames_or_path, (str, bytes)) or hasattr(frames_or_path, "__fspath__"):
    for frame, t in _frames_with_times(frames_or_path, max_frames):
      demod.add(frame, t)
    if demod.count == 0:
      raise media.UserError(f"video {frames_or_path!r} contains no decodable frames")
  else:
    frames = np.asarray(frames_or_path)[:max_frames]
    if frames.ndim == 3:
      frames = frames[None]
    ts = np.arange(len(frames)) / fps if times is None else np.asarray(times, np.float64)[:len(frames)]
    for frame, t in zip(frames, ts):
      demod.add(frame, t)
  span = float(getattr(demod, "span", 0.0))
  pair = demod.images() if span >= _MIN_SPAN_S * PERIOD_S else None
  return detect_pair(pair, demod.count, span)


class Watermarker:
  """What a sampler holds: one payload, a jittable `embed`, and `detect_video` to check an output."""

  def __init__(self, payload: int, strength: float = STRENGTH):
    self.payload = int(payload)
    self.strength = float(strength)
    self.signs_K = jnp.asarray(coded_signs(self.payload))

  def embed(self, frames_BxHxWx3, first_frame: int = 0, fps: float = 25.0):
    """Float frames [B, H, W, 3] in [0, 1], the video's frames `first_frame`.. at `fps` ->
    watermarked frames (same device, jitted)."""
    times = (first_frame + jnp.arange(frames_BxHxWx3.shape[0])) / fps
    return embed(frames_BxHxWx3, self.signs_K, times, self.strength)

  def detect_video(self, path: str) -> Detection:
    """Detects in a file; `found` also requires the payload to be this watermarker's."""
    result = detect(path)
    result.found = result.found and result.payload == self.payload
    return result
