"""Watermark robustness on real portraits, false positives, invisibility and embedding cost.

    python benchmarks/watermark_robustness.py --json /tmp/watermark.json [--parts robust,short,fp,quality,cost]

Robustness: three real portraits (the bundled portrait.jpg; scikit-image's astronaut,
NASA, public domain; matplotlib's Grace Hopper, US Navy, public domain) at 128^2,
256^2 and 512^2, each held still (the hardest case: nothing moves, so only the
mark's own changes in time carry it) and moving (the photo panned and zoomed
smoothly, as a head moves), and at 128^2 the demo model's own output animating the
portrait (`--still` and normal). Each clip is watermarked with several payloads,
written as H.264 (crf 18) unless the attack re-encodes itself, attacked, read
back and detected. Detection means found with the right payload; bit accuracy is
over the 188 coded bits before the ECC, at the crop the detector chose; payload
bits are the 64 decoded bits after the ECC (Viterbi), found or not.
Shortest clip: the shortest prefix of still portraits that still verifies.
False positives: unmarked clips (synthetic heads, noise, real photos held still,
panned, faded and flickering at the mark's own 1 Hz, unmarked demo output), all
through H.264. Quality: PSNR, the 99th percentile of the change on flat areas and
its largest step between frames. Cost: the jitted embed per frame at the
decoder's batch size against the demo decoder, in the same run.
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

from vasa_jax import ecc, media, watermark as wm
from vasa_jax.data import synthetic

EXAMPLES = os.path.join(os.path.dirname(wm.__file__), "examples")
PORTRAIT = os.path.join(EXAMPLES, "portrait.jpg")
FPS = 25


# --------------------------------------------------------------------------- hosts


def _square(im: Image.Image) -> Image.Image:
  w, h = im.size
  s = min(w, h)
  return im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))


def _astronaut():
  import skimage.data  # scikit-image (test extra); the image is NASA's, public domain.
  return Image.fromarray(skimage.data.astronaut())


def _hopper():
  import matplotlib  # matplotlib (test extra); the photo is the US Navy's, public domain.
  return Image.open(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"))


REAL_PORTRAITS = {
    "portrait": lambda: Image.open(PORTRAIT),
    "astronaut": _astronaut,
    "hopper": _hopper,
}


def real_photo(name: str, size: int) -> np.ndarray:
  """A real portrait, centre square, resized to `size`^2, float [0, 1]."""
  im = _square(REAL_PORTRAITS[name]().convert("RGB")).resize((size, size), Image.LANCZOS)
  return np.asarray(im, np.float32) / 255.0


def portrait_frames(resolution, n, name="portrait"):
  """A real photo held still for n frames (float [0, 1])."""
  return np.repeat(real_photo(name, resolution)[None], n, 0)


def panned_frames(photo, resolution, n, seed=0, amount=0.04):
  """A real photo (a name in REAL_PORTRAITS or an image) panned and zoomed smoothly, as a head moves
  slowly: n frames, float [0, 1]."""
  rng = np.random.default_rng(seed)
  big = int(resolution * (1 + 3 * amount))
  im = REAL_PORTRAITS[photo]() if isinstance(photo, str) else photo
  src = _square(im.convert("RGB")).resize((big, big), Image.LANCZOS)
  t = np.arange(n) / FPS
  f = rng.uniform(0.2, 1.2, 3)
  ph = rng.uniform(0, 2 * np.pi, 3)
  out = []
  for ti in t:
    dx, dy = (amount * big * np.sin(2 * np.pi * f[:2] * ti + ph[:2]))
    z = 1 + 0.5 * amount * np.sin(2 * np.pi * f[2] * ti + ph[2])
    side = resolution * (1 + amount) / z
    x0, y0 = (big - side) / 2 + dx, (big - side) / 2 + dy
    im = src.transform((resolution, resolution), Image.EXTENT, (x0, y0, x0 + side, y0 + side), Image.BILINEAR)
    out.append(np.asarray(im, np.float32) / 255.0)
  return np.stack(out)


_DEMO = {}


def demo_frames(name, seconds, still, payload):
  """The demo model animating a real portrait with the bundled speech (128^2), marked with `payload`."""
  from vasa_jax import bundle, stream  # pylint: disable=import-outside-toplevel
  if "model" not in _DEMO:
    _DEMO["model"] = bundle.load(bundle.DEMO_BUNDLE)
    _DEMO["speech"] = media.load_audio(os.path.join(EXAMPLES, "speech.wav"))
  model = _DEMO["model"]
  marker = None if payload is None else wm.Watermarker(payload)
  photo = np.asarray(_square(REAL_PORTRAITS[name]().convert("RGB")), np.float32) / 255.0
  sampler = stream.StreamingSampler(model, photo, steps=4, seed=1, still=still, watermark=marker)
  audio = _DEMO["speech"][:int(seconds * 16000)]
  return np.stack(list(stream.generate(sampler, audio)))


# --------------------------------------------------------------------------- attacks


def _u8(frames):
  return np.clip(np.round(np.asarray(frames, np.float32) * 255.0), 0, 255).astype(np.uint8)


def h264(frames_u8, crf, fps=FPS, folder=None):
  """Round trip through an H.264 mp4 at `crf`."""
  with tempfile.TemporaryDirectory(dir=folder) as tmp:
    path = os.path.join(tmp, "clip.mp4")
    media.write_video(path, frames_u8, int(fps), crf=crf)
    return media.read_video(path)[0]


def _resize(frames_u8, w, h):
  return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in frames_u8])


def _even(n):
  return n // 2 * 2


def _half(f):
  return _resize(f, _even(f.shape[2] // 2), _even(f.shape[1] // 2))


def _crop(f):
  """Keep 90% of each side, off centre, and scale back up to the original size."""
  h, w = f.shape[1:3]
  y0, x0 = int(0.03 * h), int(0.07 * w)
  return _resize(f[:, y0:y0 + _even(int(0.9 * h)), x0:x0 + _even(int(0.9 * w))], w, h)


def _fps15(f, fps):
  """fps -> 15: keep the frame nearest each 1/15 s tick."""
  return f[np.minimum(np.round(np.arange(0, len(f), fps / 15)).astype(int), len(f) - 1)]


def _screen(f):
  """Scale to 720 lines, H.264 crf 28 (as a screen recording or an upload would), and back."""
  h, w = f.shape[1:3]
  return _resize(h264(_resize(f, _even(round(w * 720 / h)), 720), 28), w, h)


# Each attack: (uint8 frames, fps) -> (uint8 frames, fps).
ATTACKS = {
    "none (crf 18)": lambda f, fps: (h264(f, 18, fps), fps),
    "h264 crf23": lambda f, fps: (h264(f, 23, fps), fps),
    "h264 crf28": lambda f, fps: (h264(f, 28, fps), fps),
    "half size": lambda f, fps: (h264(_half(f), 18, fps), fps),
    "half + crf28": lambda f, fps: (h264(_half(f), 28, fps), fps),
    "crop 10%": lambda f, fps: (h264(_crop(f), 18, fps), fps),
    "brightness/contrast": lambda f, fps: (h264(_u8(np.clip(1.25 * (f / 255.0 - 0.5) + 0.5 + 0.06, 0, 1)), 23, fps),
                                           fps),
    "15 fps": lambda f, fps: (h264(_fps15(f, fps), 23, 15), 15),
    "720p crf28 chain": lambda f, fps: (h264(_screen(f), 18, fps), fps),
}


def attack(name, frames_u8, fps=FPS):
  return ATTACKS[name](frames_u8, fps)


def bit_accuracy(result, payload):
  """(coded bits right before the ECC, payload bits right after the Viterbi decoder) at the detected crop."""
  if result.soft is None:
    return 0.5, 0.5
  coded = float(np.mean(np.sign(result.soft) == wm.coded_signs(payload)[:-1]))
  bits = ecc.viterbi(result.soft)[:ecc.PAYLOAD_BITS]
  return coded, float(np.mean(bits == ecc.int_to_bits(payload, ecc.PAYLOAD_BITS)))


# --------------------------------------------------------------------------- measurements


def _marked(frames, payload):
  return _u8(wm.Watermarker(payload).embed(jnp.asarray(frames, jnp.float32)))


def robustness(resolutions, seconds, payloads, portraits, demo=True, attacks=None, log=print):
  """Rows: {portrait, resolution, motion, attack, detection_rate, bit_accuracy, payload_bits, signal, runs}."""
  n = int(round(seconds * FPS))
  cases = []
  for name in portraits:
    for res in resolutions:
      cases.append((name, res, "still", lambda p, name=name, res=res: _marked(portrait_frames(res, n, name), p)))
      cases.append((name, res, "panned", lambda p, name=name, res=res: _marked(panned_frames(name, res, n, 1), p)))
    if demo:
      cases.append((name, 128, "demo --still", lambda p, name=name: demo_frames(name, seconds, True, p)))
      cases.append((name, 128, "demo talking", lambda p, name=name: demo_frames(name, seconds, False, p)))
  rows = []
  for name, res, motion, make in cases:
    t0 = time.time()
    results = {a: [] for a in (attacks or ATTACKS)}
    for k in range(payloads):
      payload = wm.make_payload("b026f98220889c71", 1000 + 7919 * k)
      marked = make(payload)
      for a in results:
        frames, fps = attack(a, marked)
        result = wm.detect(frames, fps=fps)
        coded, bits = bit_accuracy(result, payload)
        results[a].append((bool(result.found and result.payload == payload), coded, bits, result.signal))
    for a, v in results.items():
      rows.append({"portrait": name, "resolution": res, "motion": motion, "attack": a, "runs": len(v),
                   "detection_rate": float(np.mean([r[0] for r in v])),
                   "bit_accuracy": float(np.mean([r[1] for r in v])),
                   "payload_bits": float(np.mean([r[2] for r in v])),
                   "signal": float(np.mean([r[3] for r in v]))})
    log(f"  {name:9s} {res:3d} {motion:12s} " + " ".join(
        f"{r['detection_rate']:.0%}/{r['bit_accuracy']:.2f}" for r in rows[-len(results):]) +
        f"  ({time.time() - t0:.0f} s)")
  return rows


def shortest_clip(resolutions, portraits, payloads=2, durations=(1.0, 1.5, 2.0, 3.0, 4.0),
                  attacks=("none (crf 18)", "h264 crf28", "half size")):
  """Per (portrait, resolution, attack): the shortest still clip (from `durations`) that verifies for every payload."""
  out = {}
  for name in portraits:
    for res in resolutions:
      marks = [(wm.make_payload("b026f98220889c71", 77 + k),) for k in range(payloads)]
      clips = [(p, _marked(portrait_frames(res, int(max(durations) * FPS), name), p)) for (p,) in marks]
      for a in attacks:
        best = None
        for d in durations:
          ok = True
          for p, marked in clips:
            frames, fps = attack(a, marked[:int(round(d * FPS))])
            r = wm.detect(frames, fps=fps)
            ok &= bool(r.found and r.payload == p)
          if ok:
            best = d
            break
        out[f"{name} {res} {a}"] = best
  return out


def false_positives(count, resolution=64, frames=50, seed=0, demo_clips=0):
  """Detections on unmarked clips through H.264 crf 23: synthetic heads, noise (still and changing),
  real photos held still, panned, faded and flickering at 1 Hz, and unmarked demo output."""
  rng = np.random.default_rng(seed)
  photos = []
  for name in REAL_PORTRAITS:
    try:
      photos.append(np.asarray(_square(REAL_PORTRAITS[name]().convert("RGB")), np.float32) / 255.0)
    except ImportError:
      pass
  try:
    import sklearn.datasets  # Two more natural photos (scikit-learn ships them).
    photos += [sklearn.datasets.load_sample_image(f) / 255.0 for f in ("china.jpg", "flower.jpg")]
  except ImportError:
    pass
  kinds = ("synthetic head", "noise", "photo still", "photo panned", "photo fading", "photo flicker 1 Hz")
  hits, signals, per_kind = 0, [], {k: 0 for k in kinds}
  t = np.arange(frames) / FPS
  for i in range(count):
    kind = kinds[i % len(kinds)]
    if kind == "synthetic head":
      clip = synthetic.make_clip(5000 + i, 9000 + i, frames, resolution, split="train")["frames"]
    elif kind == "noise":
      smooth = int(rng.integers(1, 8))  # From white to blotchy; still or changing every frame.
      n_base = frames if rng.random() < 0.5 else 1
      base = rng.random((n_base, resolution // smooth + 1, resolution // smooth + 1, 3))
      clip = _u8(np.kron(base, np.ones((1, smooth, smooth, 1)))[:, :resolution, :resolution])
      clip = np.repeat(clip, frames // len(clip), 0)
    else:
      photo = photos[int(rng.integers(len(photos)))]
      side = int(rng.integers(min(photo.shape[:2]) // 3, min(photo.shape[:2])))
      y0, x0 = rng.integers(0, photo.shape[0] - side + 1), rng.integers(0, photo.shape[1] - side + 1)
      img = np.asarray(Image.fromarray(_u8(photo[y0:y0 + side, x0:x0 + side])).resize(
          (resolution, resolution), Image.LANCZOS), np.float32) / 255.0
      if kind == "photo panned":
        clip = _u8(panned_frames(Image.fromarray(_u8(photo[y0:y0 + side, x0:x0 + side])), resolution, frames,
                                 seed=i))
      elif kind == "photo fading":
        clip = _u8(img[None] * np.linspace(1.0, 0.3, frames)[:, None, None, None])
      elif kind == "photo flicker 1 Hz":
        clip = _u8(img[None] * (1 + 0.05 * np.sin(2 * np.pi * t + rng.uniform(0, 6)))[:, None, None, None])
      else:
        clip = np.repeat(_u8(img)[None], frames, 0)
    result = wm.detect(h264(clip, 23))
    hits += result.found
    per_kind[kind] += result.found
    signals.append(result.signal)
  for k in range(demo_clips):  # Unmarked demo output, still and talking.
    name = list(REAL_PORTRAITS)[k % len(REAL_PORTRAITS)]
    clip = demo_frames(name, frames / FPS, bool(k % 2), None)
    result = wm.detect(h264(clip, 23))
    hits += result.found
    per_kind.setdefault("demo output, unmarked", 0)
    per_kind["demo output, unmarked"] += result.found
    signals.append(result.signal)
  total = count + demo_clips
  return {"clips": total, "false_positives": int(hits), "rate": hits / total, "per_kind": per_kind,
          "max_signal": float(np.max(signals)), "mean_signal": float(np.mean(signals))}


def _flat_mask(clean_HxWx3, levels=1.0, size=7):
  """Pixels whose luminance varies by less than `levels` (std, 8-bit) over a size x size window."""
  y = clean_HxWx3 @ np.array([0.299, 0.587, 0.114]) * 255.0
  pad = size // 2
  yp = np.pad(y, pad, mode="edge")
  win = np.lib.stride_tricks.sliding_window_view(yp, (size, size))
  return win.std(axis=(-1, -2)) < levels


def quality(resolutions=(128, 256, 512), seconds=2.0):
  """PSNR over a still clip, the change on flat areas (99th percentile, levels) and its largest step
  between consecutive frames, per host and resolution."""
  hosts = {name: (lambda res, name=name: real_photo(name, res)) for name in REAL_PORTRAITS}
  hosts["synthetic portrait (flat background)"] = lambda res: np.asarray(Image.open(
      os.path.join(EXAMPLES, "synthetic_portrait.png")).convert("RGB").resize((res, res), Image.LANCZOS),
      np.float32) / 255.0
  hosts["flat grey"] = lambda res: np.full((res, res, 3), 0.5, np.float32)
  n = int(seconds * FPS)
  out = {}
  for name, make in hosts.items():
    for res in resolutions:
      clean = make(res)
      marked = _marked(np.repeat(clean[None], n, 0), wm.make_payload("psnr", 1)).astype(np.float32)
      ref = _u8(clean).astype(np.float32)
      diff = marked - ref[None]
      psnr = 10 * np.log10(255.0 ** 2 / np.mean(diff ** 2))
      flat = _flat_mask(clean)
      row = {"psnr_db": float(psnr), "flat_share": float(flat.mean())}
      if flat.any():
        row["flat_p99_levels"] = float(np.percentile(np.abs(diff[:, flat]), 99))
        row["flat_step_p99_levels"] = float(np.percentile(np.abs(np.diff(diff[:, flat], axis=0)), 99))
      out[f"{name} {res}"] = row
  # The wave's temporal spectrum at 25 fps: the share of the mark's energy above 3 Hz (flicker band).
  w = wm.wave(np.arange(250) / FPS)
  spec = np.abs(np.fft.rfft(w)) ** 2
  freqs = np.fft.rfftfreq(250, 1 / FPS)
  out["wave energy above 3 Hz"] = float(spec[freqs > 3].sum() / spec.sum())
  out["wave largest step per frame"] = float(np.abs(np.diff(w)).max())
  return out


def _median_time(fn, repeats):
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def embed_ms(resolution, batch=10, repeats=7):
  frames = jax.random.uniform(jax.random.key(0), (batch, resolution, resolution, 3))
  marker = wm.Watermarker(wm.make_payload("timing", 1))
  jax.block_until_ready(marker.embed(frames))
  return 1000 * _median_time(lambda: marker.embed(frames), repeats) / batch


def cost(repeats=5, rounds=6):
  """Per frame at the demo's decode batch (10), same run: the demo decode step with the watermark off and
  on (the mark is embedded inside that jitted step), and the embed alone. The two decodes alternate for
  `rounds` rounds of `repeats` calls each, so that a change in the machine's load reaches both alike;
  each figure is the median over rounds of a round's median."""
  from vasa_jax import bundle, stream  # pylint: disable=import-outside-toplevel
  model = bundle.load(bundle.DEMO_BUNDLE)
  photo = real_photo("portrait", 128)
  fns, batch, motion = {}, None, None
  for label, marker in (("decode, watermark off", None), ("decode, watermark on", wm.Watermarker(1))):
    s = stream.StreamingSampler(model, photo, steps=2, watermark=marker)
    batch = s.decode_batch
    if motion is None:
      motion = jnp.asarray(np.repeat(s.portrait_motion[None], batch, 0))
    times = jnp.arange(batch, dtype=jnp.float32) / s.fps
    fns[label] = lambda s=s, times=times: s.decode_step(model.face_params, s.portrait, motion, s.signs, times)  # noqa: E731
    jax.block_until_ready(fns[label]())
  per_round = {label: [] for label in fns}
  for _ in range(rounds):
    for label, fn in fns.items():
      per_round[label].append(1000 * _median_time(fn, repeats) / batch)
  out = {label: float(np.median(v)) for label, v in per_round.items()}
  out["batch"] = batch
  out["rounds (ms per frame)"] = {label: [round(x, 2) for x in v] for label, v in per_round.items()}
  out["embed alone"] = embed_ms(128, batch=batch, repeats=repeats * rounds)
  off, on = out["decode, watermark off"], out["decode, watermark on"]
  out["embed share (alone / decode off)"] = out["embed alone"] / off
  out["embed share (on - off) / off"] = (on - off) / off
  out["embed ms per 512^2 frame"] = embed_ms(512, batch=4, repeats=5)
  return out


def print_robustness(rows):
  attacks = list(dict.fromkeys(r["attack"] for r in rows))
  print(f"  {'portrait':9s} {'size':>4s} {'motion':12s} " + " ".join(f"{a[:12]:>12s}" for a in attacks))
  keys = list(dict.fromkeys((r["portrait"], r["resolution"], r["motion"]) for r in rows))
  for key in keys:
    sub = {r["attack"]: r for r in rows if (r["portrait"], r["resolution"], r["motion"]) == key}
    print(f"  {key[0]:9s} {key[1]:4d} {key[2]:12s} " + " ".join(
        f"{sub[a]['detection_rate']:>5.0%} {sub[a]['bit_accuracy']:.2f}{'' if sub[a]['payload_bits'] >= 0.99 else '*':1s}"
        if a in sub else f"{'':>12s}" for a in attacks))
  print("  (detection rate, coded-bit accuracy before ECC; * payload bits after ECC below 99%)")


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
  ap.add_argument("--parts", default="robust,short,fp,quality,cost")
  ap.add_argument("--resolutions", type=int, nargs="+", default=[128, 256, 512])
  ap.add_argument("--portraits", nargs="+", default=list(REAL_PORTRAITS))
  ap.add_argument("--seconds", type=float, default=2.0, help="length of the robustness clips")
  ap.add_argument("--payloads", type=int, default=3, help="payloads (generation ids) per case")
  ap.add_argument("--no-demo", action="store_true", help="skip the demo model's own outputs")
  ap.add_argument("--fp-clips", type=int, default=1000, help="unwatermarked clips for the false-positive count")
  ap.add_argument("--fp-demo-clips", type=int, default=6, help="of which unmarked demo outputs")
  ap.add_argument("--json", help="write the results here (updated after each part)")
  args = ap.parse_args()
  out = {"machine": platform.platform(), "device": str(jax.devices()[0]), "cpus": os.cpu_count()}
  parts = args.parts.split(",")

  def save():
    if args.json:
      with open(args.json, "w") as f:
        json.dump(out, f, indent=2)

  if "robust" in parts:
    t0 = time.time()
    print(f"robustness, {args.seconds:g} s clips, {args.payloads} payloads per case:", flush=True)
    out["robustness"] = robustness(args.resolutions, args.seconds, args.payloads, args.portraits,
                                   demo=not args.no_demo, log=lambda s: print(s, flush=True))
    print_robustness(out["robustness"])
    print(f"  ({time.time() - t0:.0f} s)")
    save()
  if "short" in parts:
    out["shortest_clip_s"] = shortest_clip(args.resolutions, args.portraits)
    print("shortest still clip that verifies (s): " + json.dumps(out["shortest_clip_s"], indent=1), flush=True)
    save()
  if "quality" in parts:
    out["quality"] = quality(tuple(args.resolutions))
    print("quality: " + json.dumps(out["quality"], indent=1), flush=True)
    save()
  if "cost" in parts:
    out["cost_ms_per_frame"] = cost()
    print("cost (ms per frame): " + json.dumps(out["cost_ms_per_frame"], indent=1), flush=True)
    save()
  if "fp" in parts:
    t0 = time.time()
    fp = out["false_positives"] = false_positives(args.fp_clips, demo_clips=args.fp_demo_clips)
    print(f"false positives: {fp['false_positives']} of {fp['clips']} unmarked clips {fp['per_kind']} "
          f"(signal mean {fp['mean_signal']:.1f}, max {fp['max_signal']:.1f}; {time.time() - t0:.0f} s)", flush=True)
    save()


if __name__ == "__main__":
  main()
