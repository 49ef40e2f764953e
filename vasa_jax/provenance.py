"""Provenance of generated videos: mp4 metadata and an optional visible "AI-generated" label.

The invisible watermark (watermark.py) survives re-encoding; metadata does not
survive most re-uploads but says more (checkpoint, version, whether the mark is
on). Both are written by default. Turning the watermark off takes an explicit
`watermark=False`, and the metadata then says so.
"""

import functools
from importlib import metadata as importlib_metadata

import jax.numpy as jnp
import numpy as np

GENERATOR = "vasa_jax"
DISCLOSURE = "AI-generated: synthetic talking-face video made by vasa_jax; the person did not record it."


def _version() -> str:
  try:
    return importlib_metadata.version("vasa_jax")
  except importlib_metadata.PackageNotFoundError:
    return "unknown"


def provenance_metadata(checkpoint_hash: str, payload: int | None, *, watermark: bool) -> dict[str, str]:
  """mp4 tags for `media.VideoWriter(metadata=...)`; `watermark` must be stated explicitly."""
  if watermark and payload is None:
    raise ValueError("a watermarked video needs its payload in the metadata")
  tags = {
      "generator": GENERATOR,
      "generator_version": _version(),
      "checkpoint_hash": checkpoint_hash,
      "ai_generated": "true",
      "disclosure": DISCLOSURE,
      "watermark": "on" if watermark else "off (disabled by the user)",
      "comment": DISCLOSURE,  # Standard tag: players that hide custom tags still show it.
  }
  if watermark:
    tags["watermark_payload"] = f"{payload:016x}"
  return tags


# --------------------------------------------------------------------------- visible label

# 5x7 glyphs of the label's letters, one string per row.
_GLYPHS = {
    "A": ("01110", "10001", "10001", "11111", "10001", "10001", "10001"),
    "I": ("11111", "00100", "00100", "00100", "00100", "00100", "11111"),
    "-": ("00000", "00000", "00000", "11111", "00000", "00000", "00000"),
    "G": ("01111", "10000", "10000", "10011", "10001", "10001", "01111"),
    "E": ("11111", "10000", "10000", "11110", "10000", "10000", "11111"),
    "N": ("10001", "11001", "10101", "10011", "10001", "10001", "10001"),
    "R": ("11110", "10001", "10001", "11110", "10100", "10010", "10001"),
    "T": ("11111", "00100", "00100", "00100", "00100", "00100", "00100"),
    "D": ("11110", "10001", "10001", "10001", "10001", "10001", "11110"),
}
LABEL = "AI-GENERATED"


@functools.lru_cache(maxsize=None)
def label_overlay(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
  """(alpha HxWx1, colour HxWx3) of a small white-on-dark label in the bottom-right corner."""
  text = np.concatenate([np.pad(np.array([[c == "1" for c in row] for row in _GLYPHS[ch]], np.float32),
                                ((0, 0), (0, 1))) for ch in LABEL], axis=1)[:, :-1]  # 7 x (6n-1)
  px = max(1, height // 160)  # Glyph pixel size: ~1.6% of the frame height per 7-pixel letter.
  text = np.kron(text, np.ones((px, px), np.float32))
  margin = 2 * px
  # Frames narrower than the label (tiny test sizes) show as much of it as fits.
  th, tw = min(text.shape[0] + 2 * margin, height), min(text.shape[1] + 2 * margin, width)
  alpha = np.zeros((height, width, 1), np.float32)
  colour = np.zeros((height, width, 3), np.float32)
  y0, x0 = max(0, height - th - margin), max(0, width - tw - margin)
  alpha[y0:y0 + th, x0:x0 + tw] = 0.55  # Dark backing box keeps the text legible on any background.
  box = np.zeros((th, tw), np.float32)
  inner = text[:max(0, th - 2 * margin), :max(0, tw - 2 * margin)]
  box[margin:margin + inner.shape[0], margin:margin + inner.shape[1]] = inner
  alpha[y0:y0 + th, x0:x0 + tw, 0] = np.maximum(alpha[y0:y0 + th, x0:x0 + tw, 0], 0.9 * box)
  colour[y0:y0 + th, x0:x0 + tw] = box[..., None]
  return alpha, colour


def add_label(frames_BxHxWx3):
  """Draws the visible label on float frames in [0, 1] (jittable; constants per frame size)."""
  alpha, colour = label_overlay(frames_BxHxWx3.shape[1], frames_BxHxWx3.shape[2])
  return frames_BxHxWx3 * (1.0 - alpha) + jnp.asarray(colour) * alpha
