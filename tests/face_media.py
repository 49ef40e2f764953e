"""Test media with real faces, made by the tests themselves: scikit-image's astronaut (a public-domain
photo of Eileen Collins) cut out, moved and zoomed over backgrounds, synthetic heads composited
off-centre, and videos written with PyAV (constant or variable frame rate, with or without sound)."""

import fractions

import av
import numpy as np
from PIL import Image


def astronaut() -> np.ndarray:
  from skimage import data  # pylint: disable=import-outside-toplevel
  return data.astronaut()


def head() -> np.ndarray:
  """The astronaut's head and shoulders (240x230; the face's centre near (105, 100))."""
  return astronaut()[30:270, 110:340]


def background(h: int, w: int, seed: int = 0) -> np.ndarray:
  """A smooth coloured gradient with soft blobs: no face, some texture."""
  yy, xx = np.mgrid[:h, :w] / max(h, w)
  rng = np.random.default_rng(seed)
  img = np.stack([60 + 120 * xx, 80 + 60 * yy, 140 - 80 * xx * yy], -1)
  for _ in range(6):
    cy, cx, r = rng.random(3) * (1, 1, 0.2) + (0, 0, 0.05)
    img += 40 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / r ** 2)[..., None] * (rng.random(3) - 0.5)
  return np.clip(img, 0, 255).astype(np.uint8)


def paste(canvas: np.ndarray, patch: np.ndarray, center, scale: float = 1.0) -> np.ndarray:
  """`patch` resized by `scale` with its centre at `center` (x, y) on a copy of `canvas`; clipped."""
  out = canvas.copy()
  ph, pw = max(1, round(patch.shape[0] * scale)), max(1, round(patch.shape[1] * scale))
  p = np.asarray(Image.fromarray(patch).resize((pw, ph), Image.BILINEAR))
  x0, y0 = int(round(center[0] - pw / 2)), int(round(center[1] - ph / 2))
  sx0, sy0 = max(0, -x0), max(0, -y0)
  dx0, dy0 = max(0, x0), max(0, y0)
  dx1, dy1 = min(out.shape[1], x0 + pw), min(out.shape[0], y0 + ph)
  if dx1 > dx0 and dy1 > dy0:
    out[dy0:dy1, dx0:dx1] = p[sy0:sy0 + dy1 - dy0, sx0:sx0 + dx1 - dx0]
  return out


def moving_head_frames(num_frames: int, h: int = 360, w: int = 480, *, fps: float = 25.0,
                       patch: np.ndarray | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """The head drifting and zooming slowly over a background: frames [T, h, w, 3] and the patch's
  centre per frame [T, 2] (x, y)."""
  patch = head() if patch is None else patch
  bg = background(h, w, seed)
  t = np.arange(num_frames) / fps
  cx = w * (0.42 + 0.08 * np.sin(2 * np.pi * 0.3 * t))
  cy = h * (0.52 + 0.05 * np.sin(2 * np.pi * 0.2 * t + 1.0))
  scale = 0.9 + 0.12 * np.sin(2 * np.pi * 0.25 * t)
  frames = np.stack([paste(bg, patch, (x, y), s) for x, y, s in zip(cx, cy, scale)])
  return frames, np.stack([cx, cy], -1)


def write_video(path, frames: np.ndarray, fps: float, audio: np.ndarray | None = None, *,
                sample_rate: int = 16000, times: np.ndarray | None = None) -> str:
  """H.264 mp4 (+ AAC). `times`: each frame's time in seconds (a variable frame rate)."""
  with av.open(str(path), "w") as c:
    v = c.add_stream("libx264", rate=fractions.Fraction(fps).limit_denominator(1000))
    v.width, v.height, v.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    v.options = {"crf": "18", "preset": "ultrafast"}
    if times is not None:
      v.codec_context.time_base = fractions.Fraction(1, 1000)
    a = None
    if audio is not None:
      a = c.add_stream("aac", rate=sample_rate)
      a.layout = "mono"
    for i, f in enumerate(frames):
      frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
      if times is not None:
        frame.pts, frame.time_base = int(round(times[i] * 1000)), fractions.Fraction(1, 1000)
      for p in v.encode(frame):
        c.mux(p)
    for p in v.encode():
      c.mux(p)
    if a is not None:
      pcm = np.clip(audio, -1, 1).astype(np.float32)[None]
      step = 1024
      for i in range(0, pcm.shape[1], step):
        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, i:i + step]), format="fltp", layout="mono")
        af.sample_rate, af.pts = sample_rate, i
        for p in a.encode(af):
          c.mux(p)
      for p in a.encode():
        c.mux(p)
  return str(path)
