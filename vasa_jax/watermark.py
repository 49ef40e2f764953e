"""Invisible watermark: a 64-bit payload in every frame, embedded in JAX, detected in numpy.

Scheme (spread spectrum on a frame-relative grid):
- The frame is divided into a 64x64 grid of cells in normalised coordinates, so the
  grid scales with the frame: a downscaled video still holds the same cells. A
  quarter of the cells are a pilot that always carries +1 (the detector's crop
  search correlates with it without knowing the payload); each other cell carries
  one of the 188 coded bits (ecc.py: 64 payload bits + CRC-24, rate-1/2 K=7
  convolutional code) times a fixed pseudo-random chip (+-1). The cell-to-bit map
  is a fixed permutation, so every bit is spread over ~16 cells all over the frame
  and a crop only erases some of them.
- The mark is a smooth (tent-interpolated) luminance field through those cell
  values: its energy sits at 0.5-32 cycles per frame, low enough to survive H.264
  at crf 28 and a 2x downscale, and is added equally to R, G and B.
- Perceptual masking: a cell's amplitude grows with the luminance texture of that
  cell (cells' standard deviation), so flat skin and background get less.
- Host rejection (improved spread spectrum, Malvar & Florencio 2003): the embedder
  computes the detector's own statistic on the clean frame and subtracts most of
  the host's projection onto each bit, so the face itself does not drown the
  mark. That matters here because a talking head is nearly static: averaging
  frames removes codec noise but not the host.
- Detection averages the luminance of all frames (the mark is the same in each),
  searches crop scale and offset on a grid in normalised coordinates, high-passes
  the cell means, correlates with the chips, and Viterbi-decodes; the CRC-24 and a
  minimum correlation decide "found".

Measured (benchmarks/watermark_robustness.py, 256^2, 25 frames): talking heads are
detected with the right payload after H.264 crf 23 and 28, a 2x downscale, a 10%
off-centre crop, brightness/contrast and 25->15 fps, at ~40 dB PSNR. A *still*,
finely textured photo at 256^2 survives only mild processing (15 fps, lossless):
the host's texture at the mark's frequencies drowns it and frame averaging cannot
help when nothing moves. Zero false positives in 1,000 unmarked clips; the CRC-24
bounds chance matches at ~2e-7 per clip.

Every embedding operation is O(HW) or a small matmul with a 64-row matrix, plus a
median over the 4,096 cells: measured ~1 ms per 128^2 frame and ~5.5 ms per 512^2
frame on this 2-core CPU (0.3% of the paper-config decode, ~3% of the demo's).

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

GRID = 64
STRENGTH = 2.8 / 255.0  # Base amplitude of a cell value, before masking.
HOST_REJECTION = 0.9  # Fraction of the host's projection the embedder cancels.
MIN_PILOT_Z = 2.0  # Sanity floor on the pilot at the decoded crop; the CRC-24 is the real test.
PAYLOAD_VERSION = 1
_KEY = 0x7A5A_1A5E  # Seed of the public chip pattern and bit map.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
# Detector's search over crops: kept fraction of each side and where the crop starts.
_SCALES = (1.0, 0.95, 0.9, 0.85, 0.8)
_OFFSET_STEP = 1.0 / 64
_BUDGET_RMS = 10 ** (-40 / 20)  # Mark RMS of a 40 dB PSNR, the floor for smooth frames.
_CLIP = 2.5  # Detector clips cell residuals at this many robust sigmas.


# --------------------------------------------------------------------------- payload


def checkpoint_tag(checkpoint_hash: str) -> int:
  """24-bit tag of a checkpoint hash (any string; its SHA-256 is taken)."""
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

  A quarter of the cells form the last group, a pilot that always carries +1: the
  detector's crop search correlates with it without knowing the payload.
  """
  rng = np.random.default_rng(_KEY)
  chips_GxG = rng.choice(np.array([-1.0, 1.0], np.float32), size=(GRID, GRID))
  cells = GRID * GRID
  order = rng.permutation(cells)
  pilots = cells // 4
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


def _spread_matrix(n: int) -> np.ndarray:
  """Tent interpolation [n, G] from cell centres to n pixels (rows sum to 1)."""
  u = np.clip((np.arange(n) + 0.5) / n * GRID - 0.5, 0, GRID - 1)
  return np.maximum(0.0, 1.0 - np.abs(u[:, None] - np.arange(GRID)[None, :])).astype(np.float32)


def _highpass(cells, valid, xp):
  """Cell value minus the mean of its valid 8 neighbours (on the last two axes)."""
  pad = [(0, 0)] * (cells.ndim - 2) + [(1, 1), (1, 1)]
  cp, vp = xp.pad(cells * valid, pad), xp.pad(valid * xp.ones_like(cells), pad)
  s = sum(cp[..., i:i + GRID, j:j + GRID] for i in range(3) for j in range(3)) - cells * valid
  n = sum(vp[..., i:i + GRID, j:j + GRID] for i in range(3) for j in range(3)) - valid
  return (cells - s / xp.maximum(n, 1.0)) * valid


@functools.lru_cache(maxsize=None)
def _gain(height: int, width: int) -> float:
  """How much of a cell's own amplitude the detector's statistic sees (tent + averaging + high-pass)."""
  chips_GxG, onehot_CxK = _layout()
  signs_K = np.random.default_rng(1).choice([-1.0, 1.0], size=ecc.CODED_BITS + 1)
  a_GxG = chips_GxG * (onehot_CxK @ signs_K).reshape(GRID, GRID)
  dh, _ = _cell_matrix(height)
  dw, _ = _cell_matrix(width)
  pattern = _spread_matrix(height) @ a_GxG @ _spread_matrix(width).T
  r = _highpass(dh @ pattern @ dw.T, np.ones((GRID, GRID), np.float32), np)
  return float(np.mean(r * a_GxG))


# --------------------------------------------------------------------------- embedding


def coded_signs(payload: int) -> np.ndarray:
  """The 188 coded bits of a payload as +-1 float32, then the pilot's +1."""
  return np.append(2.0 * ecc.encode(payload) - 1.0, 1.0).astype(np.float32)


def _texture_mask(std):
  """Cell amplitude factor: 0.5 on flat cells, up to ~2 on textured ones."""
  return 0.5 + 1.5 * std / (std + 0.04)


@jax.jit
def embed(frames_BxHxWx3, signs_K, strength=STRENGTH, host_rejection=HOST_REJECTION):
  """Adds the watermark of `signs_K` (see `coded_signs`) to float frames in [0, 1]."""
  _, h, w, _ = frames_BxHxWx3.shape
  chips_GxG, onehot_CxK = _layout()
  dh, _ = _cell_matrix(h)
  dw, _ = _cell_matrix(w)
  y_BxHxW = frames_BxHxWx3 @ jnp.asarray(_LUMA)
  mean_BxGxG = jnp.einsum("gh,bhw,kw->bgk", dh, y_BxHxW, dw)
  sq_BxGxG = jnp.einsum("gh,bhw,kw->bgk", dh, y_BxHxW * y_BxHxW, dw)
  mask_BxGxG = _texture_mask(jnp.sqrt(jnp.maximum(sq_BxGxG - mean_BxGxG ** 2, 0.0)))
  b = frames_BxHxWx3.shape[0]
  # The host's share of each bit's detector statistic, as the detector computes it
  # (residuals scaled by their robust spread and clipped), in units of cell amplitude.
  r_BxG2 = _highpass(mean_BxGxG, jnp.ones((GRID, GRID)), jnp).reshape(b, -1)
  sigma_Bx1 = 1.4826 * jnp.median(jnp.abs(r_BxG2), axis=1, keepdims=True) + 1e-6
  clipped_BxG2 = jnp.clip(r_BxG2, -_CLIP * sigma_Bx1, _CLIP * sigma_Bx1)
  host_BxK = (chips_GxG.reshape(-1) * clipped_BxG2) @ onehot_CxK
  # Clipped cells do not pass the mark through, so only the others count as gain.
  open_BxG2 = (jnp.abs(r_BxG2) < _CLIP * sigma_Bx1).astype(jnp.float32)
  weight_BxK = (mask_BxGxG.reshape(b, -1) * open_BxG2) @ onehot_CxK * _gain(h, w) + 1e-3
  beta_BxK = signs_K * strength - host_rejection * host_BxK / weight_BxK
  # Never push against the bit's own sign, and cap the extra energy host rejection may spend.
  beta_BxK = signs_K * jnp.clip(signs_K * beta_BxK, 0.25 * strength, 3.0 * strength)
  cell_BxGxG = mask_BxGxG * chips_GxG * (beta_BxK @ onehot_CxK.T).reshape(b, GRID, GRID)
  mark_BxHxW = jnp.einsum("hg,bgk,wk->bhw", _spread_matrix(h), cell_BxGxG, _spread_matrix(w))
  # Smooth frames leave PSNR headroom: raise their mark up to the 40 dB budget (at most 3x).
  rms_Bx1x1 = jnp.sqrt(jnp.mean(mark_BxHxW ** 2, axis=(1, 2), keepdims=True)) + 1e-8
  mark_BxHxW *= jnp.clip(_BUDGET_RMS * strength / STRENGTH / rms_Bx1x1, 1.0, 3.0)
  return jnp.clip(frames_BxHxWx3 + mark_BxHxW[..., None], 0.0, 1.0)


# --------------------------------------------------------------------------- detection


@dataclasses.dataclass
class Detection:
  """What `detect` found.

  `confidence` is the pilot's correlation as a z-score (about N(0, 1) without a
  watermark); `p_value` bounds the chance that unmarked video gives this result:
  the CRC's 2^-24 per decoding attempt when found, else the pilot's Gaussian tail
  over the crops searched.
  """
  found: bool
  payload: int | None
  confidence: float
  p_value: float
  bit_agreement: float  # Share of soft bits that agree with the decoded codeword.
  frames_used: int
  crop: tuple[float, float, float, float]  # (x offset, y offset, x scale, y scale) of the match.

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
  if sigma is None:  # Robust scale of the host residual, shared by all hypotheses.
    sigma = 1.4826 * np.median(np.abs(r[valid > 0])) + 1e-6
  return np.clip(r / sigma, -_CLIP, _CLIP), sigma  # Edges of the face would otherwise dominate.


def _group_sums(r, chips_GxG, onehot_CxK):
  """Per coded bit (and pilot): chip-weighted sums and noise energies [..., K+1]."""
  flat = r.reshape(r.shape[:-2] + (-1,))
  return (chips_GxG.reshape(-1) * flat) @ onehot_CxK, (flat * flat) @ onehot_CxK


def _pilot_z(y_HxW, hyp_y, hyp_x, sigma=None, chunk=8):
  """Pilot z-score [ny, nx] for every crop hypothesis (chunked to bound memory)."""
  chips_GxG, onehot_CxK = _layout()
  pilot_C = onehot_CxK[:, -1]
  zs = []
  for i in range(0, len(hyp_y), chunk):
    r, sigma = _residuals(y_HxW, hyp_y[i:i + chunk], hyp_x, sigma)
    flat = r.reshape(r.shape[:2] + (-1,))
    corr = (flat * (chips_GxG.reshape(-1) * pilot_C)).sum(-1)
    zs.append(corr / np.sqrt(np.maximum((flat * flat * pilot_C).sum(-1), 1e-6)))
  return np.concatenate(zs), sigma


def _refine(y_HxW, oy, sy, ox, sx, sigma):
  """Coordinate ascent on one axis at a time around a coarse match."""
  for _ in range(2):
    for axis in (0, 1):
      o, s = (oy, sy) if axis == 0 else (ox, sx)
      local = [(o + do, s + ds) for ds in np.linspace(-0.025, 0.025, 5)
               for do in np.linspace(-_OFFSET_STEP, _OFFSET_STEP, 5) if s + ds <= 1.0 + 1e-9]
      hy, hx = (local, [(ox, sx)]) if axis == 0 else ([(oy, sy)], local)
      z, _ = _pilot_z(y_HxW, hy, hx, sigma)
      o, s = local[int(np.argmax(z.reshape(-1)))]
      oy, sy, ox, sx = (o, s, ox, sx) if axis == 0 else (oy, sy, o, s)
  return oy, sy, ox, sx


def _downsample(y_HxW: np.ndarray, most: int) -> np.ndarray:
  """Box-averages so no side exceeds `most` pixels (the mark lives in cells, not pixels)."""
  fy, fx = -(-y_HxW.shape[0] // most), -(-y_HxW.shape[1] // most)
  h, w = y_HxW.shape[0] // fy * fy, y_HxW.shape[1] // fx * fx
  return y_HxW[:h, :w].reshape(h // fy, fy, w // fx, fx).mean((1, 3))


def detect_luma(y_HxW: np.ndarray, frames_used: int = 1, *, attempts: int = 3) -> Detection:
  """Detects the watermark in a (frame-averaged) luminance image in [0, 1]."""
  y_HxW = _downsample(np.asarray(y_HxW, np.float32), 4 * GRID)
  chips_GxG, onehot_CxK = _layout()
  hyps = _hypotheses()
  z_all, sigma = _pilot_z(y_HxW, hyps, hyps)
  # The full frame first (the common case), then the crops whose pilot answers best.
  order = [0] + [int(i) for i in np.argsort(-z_all.reshape(-1)) if i != 0][:attempts - 1]
  best = None
  for n, i in enumerate(order, start=1):
    (oy, sy), (ox, sx) = hyps[i // len(hyps)], hyps[i % len(hyps)]
    if i != 0:
      oy, sy, ox, sx = _refine(y_HxW, oy, sy, ox, sx, sigma)
    r, _ = _residuals(y_HxW, [(oy, sy)], [(ox, sx)], sigma)
    soft, energy = _group_sums(r[0, 0], chips_GxG, onehot_CxK)
    z = float(soft[-1] / np.sqrt(max(energy[-1], 1e-6)))
    payload, recoded = ecc.decode(soft[:-1])
    agree = float(np.mean((soft[:-1] > 0) == (recoded > 0)))
    found = payload is not None and z >= MIN_PILOT_Z
    # Chance of a pilot this strong somewhere in the search, without a watermark.
    tail = min(1.0, z_all.size * 0.5 * math.erfc(z / math.sqrt(2.0)))
    result = Detection(found, payload if found else None, z,
                       n * 2.0 ** -ecc.CRC_BITS if found else tail, agree, frames_used,
                       (float(ox), float(oy), float(sx), float(sy)))
    if found:
      return result
    if best is None or z > best.confidence:
      best = result
  return best


def mean_luma(frames_TxHxWx3) -> np.ndarray:
  """Average luminance over frames, in [0, 1] (uint8 or float input)."""
  frames = np.asarray(frames_TxHxWx3)
  scale = 1.0 / 255.0 if frames.dtype == np.uint8 else 1.0
  total = np.zeros(frames.shape[1:3], np.float64)
  for frame in frames:  # One frame at a time keeps memory flat on long clips.
    total += frame.astype(np.float32) @ _LUMA
  return (total * scale / len(frames)).astype(np.float32)


def detect(frames_or_path, *, max_frames: int = 500) -> Detection:
  """Detects the watermark in frames (TxHxWx3 uint8 or float) or a video file."""
  if isinstance(frames_or_path, (str, bytes)) or hasattr(frames_or_path, "__fspath__"):
    frames, _, _ = media.read_video(frames_or_path, max_frames=max_frames)
  else:
    frames = np.asarray(frames_or_path)[:max_frames]
    if frames.ndim == 3:
      frames = frames[None]
  return detect_luma(mean_luma(frames), len(frames))


class Watermarker:
  """What a sampler holds: one payload, a jittable `embed`, and `detect_video` to check an output."""

  def __init__(self, payload: int, strength: float = STRENGTH, host_rejection: float = HOST_REJECTION):
    self.payload = int(payload)
    self.strength, self.host_rejection = float(strength), float(host_rejection)
    self.signs_K = jnp.asarray(coded_signs(self.payload))

  def embed(self, frames_BxHxWx3):
    """Float frames [B, H, W, 3] in [0, 1] -> watermarked frames (same device, jitted)."""
    return embed(frames_BxHxWx3, self.signs_K, self.strength, self.host_rejection)

  def detect_video(self, path: str) -> Detection:
    """Detects in a file; `found` also requires the payload to be this watermarker's."""
    result = detect(path)
    result.found = result.found and result.payload == self.payload
    return result
