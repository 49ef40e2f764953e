"""Watermark robustness, false positives, PSNR and embedding cost.

    python benchmarks/watermark_robustness.py --json /tmp/watermark.json

Robustness: synthetic talking heads (and the example portrait, still, the hardest
case) are watermarked, written as H.264 (crf 18) unless the attack re-encodes
itself, attacked, read back and detected. Bit accuracy is over the 188 coded bits at
the crop the detector chose; detection means found with the right payload. False
positives: unwatermarked synthetic heads, noise and natural images at 64 px.
Timing: jitted embed per frame at 128^2 and 512^2, as a share of the stage-1
decoder's time per frame at the demo and paper configs (or --decode-ms).
"""

import argparse
import json
import os
import platform
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from vasa_jax import media, watermark as wm
from vasa_jax.data import synthetic

PORTRAIT = os.path.join(os.path.dirname(wm.__file__), "examples", "portrait.jpg")


# --------------------------------------------------------------------------- attacks


def _u8(frames):
  return np.clip(np.round(np.asarray(frames, np.float32) * 255.0), 0, 255).astype(np.uint8)


def h264(frames_u8, crf, fps=25, folder=None):
  """Round trip through an H.264 mp4 at `crf`."""
  with tempfile.TemporaryDirectory(dir=folder) as tmp:
    path = os.path.join(tmp, "clip.mp4")
    media.write_video(path, frames_u8, fps, crf=crf)
    return media.read_video(path)[0]


def _resize(frames_u8, w, h):
  return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in frames_u8])


def _even(n):
  return n // 2 * 2


ATTACKS = {
    "none": lambda f: h264(f, 18),
    "h264 crf23": lambda f: h264(f, 23),
    "h264 crf28": lambda f: h264(f, 28),
    "half size": lambda f: h264(_resize(f, _even(f.shape[2] // 2), _even(f.shape[1] // 2)), 18),
    # Keep 90% of each side, off centre, and scale back up to the original size.
    "crop 10%": lambda f: h264(_resize(f[:, int(0.03 * f.shape[1]):int(0.03 * f.shape[1]) + _even(int(0.9 * f.shape[1])),
                                        int(0.07 * f.shape[2]):int(0.07 * f.shape[2]) + _even(int(0.9 * f.shape[2]))],
                                      f.shape[2], f.shape[1]), 18),
    "brightness/contrast": lambda f: h264(_u8(np.clip(1.25 * (f / 255.0 - 0.5) + 0.5 + 0.06, 0, 1)), 23),
    # 25 -> 15 fps: keep the frame nearest each 1/15 s tick, re-encode at 15 fps.
    "15 fps": lambda f: h264(f[np.minimum(np.round(np.arange(0, len(f), 25 / 15)).astype(int), len(f) - 1)], 23, fps=15),
}


def coded_bit_accuracy(frames_u8, result, payload):
  """Share of the 188 coded bits whose soft value has the right sign at the detected crop."""
  chips, onehot = wm._layout()
  ox, oy, sx, sy = result.crop
  y = wm._downsample(wm.mean_luma(frames_u8), 4 * wm.GRID)
  r, _ = wm._residuals(y, [(oy, sy)], [(ox, sx)])
  soft, _ = wm._group_sums(r[0, 0], chips, onehot)
  return float(np.mean(np.sign(soft[:-1]) == wm.coded_signs(payload)[:-1]))


# --------------------------------------------------------------------------- measurements


def portrait_frames(resolution, n):
  img = Image.open(PORTRAIT).convert("RGB").resize((resolution, resolution), Image.LANCZOS)
  return np.repeat(np.asarray(img, np.float32)[None] / 255.0, n, 0)


def robustness(resolution, frames, clips):
  sources = [(f"synthetic id {i}", lambda i=i: synthetic.make_clip(100 + i, 7 + i, frames, resolution, split="train")
              ["frames"].astype(np.float32) / 255.0) for i in range(clips)]
  sources.append(("portrait (still)", lambda: portrait_frames(resolution, frames)))
  rows = {name: {"synthetic": [], "portrait": []} for name in ATTACKS}
  for k, (src, make) in enumerate(sources):
    payload = wm.make_payload("bench-checkpoint", 1000 + k)
    marked = _u8(wm.Watermarker(payload).embed(jnp.asarray(make())))
    kind = "portrait" if src.startswith("portrait") else "synthetic"
    for name, attack in ATTACKS.items():
      attacked = attack(marked)
      result = wm.detect(attacked)
      rows[name][kind].append((coded_bit_accuracy(attacked, result, payload),
                               bool(result.found and result.payload == payload), result.confidence))
  table = {}
  for name, kinds in rows.items():
    table[name] = {kind: {"bit_accuracy": float(np.mean([r[0] for r in v])),
                          "detection_rate": float(np.mean([r[1] for r in v])),
                          "pilot_z": float(np.mean([r[2] for r in v])), "clips": len(v)}
                   for kind, v in kinds.items()}
  return table


def false_positives(count, resolution=64, frames=4, seed=0):
  """Detections on unwatermarked clips: a third synthetic heads, a third noise, a third natural crops."""
  rng = np.random.default_rng(seed)
  natural = np.asarray(Image.open(PORTRAIT).convert("RGB"), np.float32) / 255.0
  hits, zs = 0, []
  for i in range(count):
    kind = i % 3
    if kind == 0:
      clip = synthetic.make_clip(5000 + i, 9000 + i, frames, resolution, split="train")["frames"]
    elif kind == 1:
      smooth = rng.integers(1, 8)  # Noise from white to blotchy.
      base = rng.random((frames, resolution // smooth + 1, resolution // smooth + 1, 3))
      clip = _u8(np.kron(base, np.ones((1, smooth, smooth, 1)))[:, :resolution, :resolution])
    else:
      side = int(rng.integers(resolution, natural.shape[0]))
      y0, x0 = rng.integers(0, natural.shape[0] - side + 1), rng.integers(0, natural.shape[1] - side + 1)
      crop = _u8(natural[y0:y0 + side, x0:x0 + side])
      clip = np.repeat(_resize(crop[None], resolution, resolution), frames, 0)
    result = wm.detect(clip)
    hits += result.found
    zs.append(result.confidence)
  return {"clips": count, "false_positives": int(hits), "rate": hits / count,
          "max_pilot_z": float(np.max(zs)), "mean_pilot_z": float(np.mean(zs))}


def psnr_table(resolution=512, frames=4):
  out = {}
  sources = {"portrait": portrait_frames(resolution, 1)}
  for i in range(3):
    sources[f"synthetic id {i}"] = synthetic.make_clip(i, i, frames, resolution, split="train")["frames"] / 255.0
  for name, clean in sources.items():
    clean = np.asarray(clean, np.float32)
    marked = _u8(wm.Watermarker(wm.make_payload("psnr", 1)).embed(jnp.asarray(clean))) / 255.0
    reference = _u8(clean) / 255.0  # Compare 8-bit frames with 8-bit frames.
    out[name] = float(10 * np.log10(1.0 / np.mean((marked - reference) ** 2)))
  return out


def _median_time(fn, repeats):
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def embed_ms(resolution, batch=8, repeats=7):
  frames = jax.random.uniform(jax.random.key(0), (batch, resolution, resolution, 3))
  marker = wm.Watermarker(wm.make_payload("timing", 1))
  jax.block_until_ready(marker.embed(frames))
  return 1000 * _median_time(lambda: marker.embed(frames), repeats) / batch


def decode_ms(name, repeats):
  from vasa_jax import config
  from vasa_jax.models import face_latent
  cfg = config.load(name)
  res = cfg.face.image_size
  model = face_latent.FaceLatent(cfg.face)
  img = jax.random.uniform(jax.random.key(0), (1, res, res, 3))
  params = model.init(jax.random.key(1), img, img)
  lat = model.apply(params, img, method=model.encode)
  decode = jax.jit(lambda p, l: model.apply(p, l["v_app"], l["z_id"], l["z_pose"], l["z_dyn"], method=model.decode))
  jax.block_until_ready(decode(params, lat))
  return res, 1000 * _median_time(lambda: decode(params, lat), repeats)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
  ap.add_argument("--resolution", type=int, default=256, help="robustness clips' side")
  ap.add_argument("--frames", type=int, default=25, help="frames per robustness clip (25 = 1 s)")
  ap.add_argument("--clips", type=int, default=3, help="synthetic clips per attack")
  ap.add_argument("--fp-clips", type=int, default=1000, help="unwatermarked clips for the false-positive count")
  ap.add_argument("--decode-ms", type=float, nargs=2, metavar=("DEMO_MS", "PAPER_MS"),
                  help="decoder time per frame instead of measuring it")
  ap.add_argument("--json", help="write the results here")
  args = ap.parse_args()
  out = {"machine": platform.platform(), "device": str(jax.devices()[0]), "cpus": os.cpu_count()}

  t0 = time.time()
  out["robustness"] = robustness(args.resolution, args.frames, args.clips)
  print(f"robustness at {args.resolution}^2, {args.frames} frames ({time.time() - t0:.0f} s)")
  print(f"  {'attack':22s} {'synthetic bits':>14s} {'detected':>9s} {'z':>6s}  {'portrait bits':>13s} "
        f"{'detected':>9s} {'z':>6s}")
  for name, kinds in out["robustness"].items():
    s, p = kinds["synthetic"], kinds["portrait"]
    print(f"  {name:22s} {s['bit_accuracy']:14.1%} {s['detection_rate']:9.0%} {s['pilot_z']:6.1f}  "
          f"{p['bit_accuracy']:13.1%} {p['detection_rate']:9.0%} {p['pilot_z']:6.1f}")

  out["psnr_db"] = psnr_table()
  print("PSNR at 512^2: " + ", ".join(f"{k} {v:.2f} dB" for k, v in out["psnr_db"].items()))

  out["embed_ms_per_frame"] = {str(r): embed_ms(r) for r in (128, 512)}
  if args.decode_ms:
    decode = {"demo": (128, args.decode_ms[0]), "paper": (512, args.decode_ms[1])}
  else:
    decode = {"demo": decode_ms("demo", 3), "paper": decode_ms("paper", 1)}
  out["decode_ms_per_frame"] = {k: {"resolution": r, "ms": ms} for k, (r, ms) in decode.items()}
  for k, (r, ms) in decode.items():
    e = out["embed_ms_per_frame"][str(r)]
    out["decode_ms_per_frame"][k]["embed_share"] = e / ms
    print(f"embed {e:.2f} ms/frame at {r}^2 vs {k} decode {ms:.0f} ms/frame: {e / ms:.2%} of decode time")

  t0 = time.time()
  out["false_positives"] = false_positives(args.fp_clips)
  fp = out["false_positives"]
  print(f"false positives: {fp['false_positives']} of {fp['clips']} unwatermarked clips "
        f"(pilot z mean {fp['mean_pilot_z']:.1f}, max {fp['max_pilot_z']:.1f}; {time.time() - t0:.0f} s)")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(out, f, indent=2)


if __name__ == "__main__":
  main()
