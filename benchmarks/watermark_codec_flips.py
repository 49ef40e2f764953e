"""What H.264 keeps of a watermark's flips on a still host: the experiment behind the README's
"Responsible use" notes on why half size + crf 28 defeats the mark at 128^2.

    python benchmarks/watermark_codec_flips.py [--part carried,texture,sparse,burst,chroma]

A bare pattern of square cells, each +-A levels with a fixed random sign, flips sign sharply every
half second on a host held still for 2 s (the shipped mark's rhythm, without its masking or
ramps). Each clip and its unmarked twin go through the same attack; their difference, projected on
the pattern and on the flip's sign, is the share of the flips that survived: 1 when every flip is
coded, 0 when the codec keeps the first frame's state. `sparse` and `burst` compare designs at the
same per-frame RMS by a matched-filter score (the surviving mark correlated with the intended one,
in units of the intended one's norm, per frame): a share of the cells at a larger amplitude, or
every cell on for a share of the period at a larger amplitude. `chroma` scores the same pattern
added along a colour direction instead of equally to R, G and B, at the same RGB RMS.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import watermark_robustness as wr  # noqa: E402  (hosts and attacks)

FRAMES, PERIOD = 50, 25  # 2 s at 25 fps; a flip every half period


def _chips(grid, seed=0):
  return np.random.default_rng(seed).choice([-1.0, 1.0], size=(grid, grid))


def _upsample(cells_TxGxG, n):
  idx = np.arange(n) * cells_TxGxG.shape[-1] // n
  return cells_TxGxG[..., idx, :][..., idx]


def _square():
  return np.where((np.arange(FRAMES) % PERIOD) / PERIOD < 0.5, 1.0, -1.0)


# Directions in RGB with a mean square of 1 per channel: luminance (the shipped mark's), and two
# nearly isoluminant colour directions (red-cyan ~ Cr, blue-yellow ~ Cb).
COLOURS = {"luma": np.array([1.0, 1.0, 1.0]),
           "red-cyan": np.array([2.0, -1.0, -1.0]) / np.sqrt(2.0),
           "blue-yellow": np.array([-1.0, -1.0, 2.0]) / np.sqrt(2.0)}


def _difference(host, mark_TxHxW, attack, colour=COLOURS["luma"]):
  """What survives of the mark (added along `colour`), read along the same direction."""
  clean = wr._u8(np.repeat(host[None], FRAMES, 0))
  marked = wr._u8(np.clip(host[None] + mark_TxHxW[..., None] * colour / 255.0, 0, 1))
  a, _ = wr.attack(attack, marked)
  b, _ = wr.attack(attack, clean)
  return (a.astype(np.float32) - b.astype(np.float32)) @ colour / 3.0


def carried(host, grid, amp, attack):
  """Share of the flips that survive, over the whole frame."""
  w = _square()
  cells = w[:, None, None] * _chips(grid)[None]
  d = _difference(host, amp * _upsample(cells, host.shape[0]), attack)
  m = _upsample(cells, d.shape[1])
  return float((d * m).sum() / (m * m).sum() / amp)


def carried_by_texture(host, grid, amp, attack):
  """The same, per quartile of the host's luminance std in each cell."""
  n = host.shape[0]
  w = _square()
  cells = w[:, None, None] * _chips(grid)[None]
  d = _difference(host, amp * _upsample(cells, n), attack)
  k = d.shape[1] // grid
  m = _upsample(cells, d.shape[1])
  per_cell = (d * m)[:, :k * grid, :k * grid].reshape(FRAMES, grid, k, grid, k).mean((0, 2, 4)) / amp
  y = host @ np.array([0.299, 0.587, 0.114]) * 255
  std = y.reshape(grid, n // grid, grid, n // grid).std((1, 3)).ravel()
  return [(float(std[q].mean()), float(per_cell.ravel()[q].mean())) for q in np.array_split(np.argsort(std), 4)]


def score(host, grid, rms, attack, share=1.0, burst=1, colour="luma"):
  """Matched-filter score at a per-frame RMS of `rms` levels: `share` of the cells carry the mark
  (at 1/sqrt(share) the amplitude), each on for 1/`burst` of the period (at sqrt(burst)), added along
  a direction in COLOURS."""
  rng = np.random.default_rng(1)
  chips = _chips(grid) * (rng.random((grid, grid)) < share) / np.sqrt(share)
  t = np.arange(FRAMES)
  if burst == 1:
    seq = np.repeat(_square()[:, None, None], grid, 1).repeat(grid, 2)
  else:
    group = rng.integers(0, burst, (grid, grid))
    slot = PERIOD / burst
    seq = np.zeros((FRAMES, grid, grid))
    for i in t:
      g = int((i % PERIOD) // slot)
      sign = 1.0 if (i % PERIOD) - g * slot < slot / 2 else -1.0
      seq[i][group == g] = sign * np.sqrt(burst)
  cells = seq * chips[None]
  d = _difference(host, rms * _upsample(cells, host.shape[0]), attack, COLOURS[colour])
  m = _upsample(cells, d.shape[1])
  return float((d * m).sum() / np.sqrt((m * m).sum()) / np.sqrt(FRAMES) / rms)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--part", default="carried,texture,sparse,burst,chroma")
  args = parser.parse_args(argv)
  parts = args.part.split(",")
  attacks = ("h264 crf28", "half + crf28")
  if "carried" in parts:
    print("share of the flips that survive (A = 2 / 4 / 8 levels):")
    for name in ("astronaut", "flat"):
      host = wr.real_photo("astronaut", 128) if name != "flat" else np.full((128, 128, 3), 0.5, np.float32)
      for attack in attacks:
        for grid in (32, 16, 8):
          print(f"  {name:9s} 128 {attack:13s} {grid}x{grid} cells: " +
                " / ".join(f"{carried(host, grid, a, attack):.2f}" for a in (2, 4, 8)), flush=True)
  if "texture" in parts:
    print("by texture quartile (16x16 cells, A = 4): cell std -> share")
    for name in ("astronaut", "portrait", "hopper"):
      for attack in attacks:
        q = carried_by_texture(wr.real_photo(name, 128), 16, 4, attack)
        print(f"  {name:9s} 128 {attack:13s} " + "  ".join(f"{s:.0f}: {c:+.2f}" for s, c in q), flush=True)
  if "sparse" in parts or "burst" in parts:
    print("matched-filter score at RMS 3 levels:")
    for name in ("astronaut", "portrait"):
      for res in (128, 256):
        host = wr.real_photo(name, res)
        for attack in attacks:
          for grid in (32, 16):
            row = []
            if "sparse" in parts:
              row += [f"share {f}: {score(host, grid, 3.0, attack, share=f):.1f}" for f in (1, 0.5, 0.25, 0.125)]
            if "burst" in parts:
              row += [f"on 1/{b}: {score(host, grid, 3.0, attack, burst=b):.1f}" for b in (2, 4, 8)]
            print(f"  {name:9s} {res} {attack:13s} {grid}x{grid}: " + "  ".join(row), flush=True)

  if "chroma" in parts:
    print("matched-filter score at RMS 3 levels, by colour direction of the mark (luma / red-cyan / blue-yellow):")
    for name, res, attack in (("astronaut", 128, "h264 crf23"), ("astronaut", 128, "h264 crf28"),
                              ("portrait", 128, "h264 crf28"), ("astronaut", 128, "half + crf28"),
                              ("hopper", 128, "half + crf28"), ("astronaut", 256, "h264 crf28"),
                              ("astronaut", 256, "half + crf28"), ("portrait", 256, "half + crf28"),
                              ("hopper", 256, "half + crf28")):
      host = wr.real_photo(name, res)
      row = [f"{grid}x{grid}: " + " / ".join(f"{score(host, grid, 3.0, attack, colour=c):.1f}" for c in COLOURS)
             for grid in (32, 16, 8)]
      print(f"  {name:9s} {res} {attack:13s} " + "  ".join(row), flush=True)


if __name__ == "__main__":
  main()
