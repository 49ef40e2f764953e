"""A label read-out network: what a frame shows, measured from its pixels.

    python -m vasa_jax.readout --data data/syn128 --out runs/readout

Evaluation must score what a user sees, the generated pixels, not the latents that
produced them. This small CNN is trained on the synthetic corpus' exact per-frame
labels (pose, distance, mouth, blink, gaze, brow, smile) and then reads those
labels back from any frame: real renders, reconstructions or generated video.
Its own accuracy on identities it never saw is measured on the benchmark split
and stored beside its weights, so every number read through it can be judged
against the read-out's own error.
"""

import json
import os
import time

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vasa_jax import media
from vasa_jax.data import records
from vasa_jax.data.synthetic import EMOTIONS, LABEL_NAMES
from vasa_jax.errors import UserError
from vasa_jax.models.face_latent import VectorEncoder

WEIGHTS, META = "readout.msgpack", "readout.json"
# (smile, brow) at the centre of each emotion's cluster, as read from clips (see `emotion_of`).
_EMOTION_SMILE_BROW = {"neutral": (0.0, 0.0), "happy": (0.7, 0.2), "sad": (-0.45, -0.2),
                       "surprised": (0.05, 0.85), "angry": (-0.35, -0.75)}


class ReadoutNet(nn.Module):
  """Frame [B, H, W, 3] in [0, 1] -> normalised labels [B, L]."""
  num_labels: int
  widths: tuple = (32, 64, 128, 128)
  input_size: int = 64

  @nn.compact
  def __call__(self, img):
    return VectorEncoder(self.widths, self.num_labels, self.input_size, s2d=True)(img)


def _load_frames(corpus, split: str, stride: int):
  """Every `stride`-th frame of a split (offset per clip) with its labels [N, L]."""
  source = corpus.source(split)
  frames, labels = [], []
  for i in range(len(source)):
    clip = records.decode_clip(source[i])
    idx = np.arange(i % stride, len(clip["frames"]), stride)
    frames.append(clip["frames"][idx])
    labels.append(np.stack([clip["labels"][k][idx] for k in LABEL_NAMES], -1))
  return np.concatenate(frames), np.concatenate(labels).astype(np.float32)


class Readout:
  """A trained read-out: `readout(frames)` -> {label name: [N]} in label units."""

  def __init__(self, params, meta: dict):
    self.meta = meta
    self.names = tuple(meta["labels"])
    self.net = ReadoutNet(len(self.names))
    self.params = params
    self.mean = np.asarray(meta["mean"], np.float32)
    self.std = np.asarray(meta["std"], np.float32)
    self._apply = jax.jit(lambda p, x: self.net.apply(p, x))

  @classmethod
  def load(cls, folder: str) -> "Readout":
    meta_path, w_path = os.path.join(folder, META), os.path.join(folder, WEIGHTS)
    if not (os.path.isfile(meta_path) and os.path.isfile(w_path)):
      raise UserError(f"{folder!r} holds no read-out network ({META} and {WEIGHTS}); train one with "
                      "python -m vasa_jax.readout --data CORPUS --out FOLDER")
    with open(meta_path) as f:
      meta = json.load(f)
    template = ReadoutNet(len(meta["labels"])).init(
        jax.random.key(0), jnp.zeros((1, meta["resolution"], meta["resolution"], 3)))
    with open(w_path, "rb") as f:
      params = flax.serialization.from_bytes(template, f.read())
    return cls(params, meta)

  def __call__(self, frames, batch: int = 64) -> dict[str, np.ndarray]:
    """Frames uint8 or float [N, H, W, 3] -> labels; a fixed batch shape compiles once."""
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
      frames = frames.astype(np.float32) / 255.0
    if frames.shape[1:3] != (self.meta["resolution"],) * 2:
      raise UserError(f"the read-out reads {self.meta['resolution']}px frames, got {frames.shape[1]}px")
    outs = []
    for start in range(0, len(frames), batch):
      chunk = frames[start:start + batch]
      pad = batch - len(chunk)
      if pad:
        chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
      outs.append(np.asarray(self._apply(self.params, jnp.asarray(chunk)))[:batch - pad])
    pred = np.concatenate(outs) * self.std + self.mean
    return {k: pred[:, i] for i, k in enumerate(self.names)}


def emotion_centre(name: str) -> tuple[float, float]:
  """The (smile, brow) an emotion is drawn with at rest (the corpus' baselines)."""
  return _EMOTION_SMILE_BROW[name]


def emotion_of(smile, brow) -> int:
  """The emotion whose (smile, brow) centre is nearest the clip's mean read-out."""
  centres = np.array([_EMOTION_SMILE_BROW[e] for e in EMOTIONS])
  point = np.array([float(np.mean(smile)), float(np.mean(brow))])
  return int(np.argmin(((centres - point) ** 2).sum(-1)))


def accuracy(readout: Readout, frames, labels_NxL) -> dict:
  """Per-label mean absolute error and correlation of the read-out against the true labels."""
  pred = readout(frames)
  out = {}
  for i, k in enumerate(LABEL_NAMES):
    if k not in pred:
      continue
    a, b = pred[k], labels_NxL[:, i]
    corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 1e-6 and b.std() > 1e-6 else 0.0
    out[k] = {"mae": float(np.abs(a - b).mean()), "corr": corr}
  return out


def train(data_dir: str, out_dir: str, *, steps: int = 2000, batch: int = 32, lr: float = 1e-3,
          stride: int = 4, seed: int = 0, log=print) -> dict:
  """Trains on the train split, measures on the benchmark split (unseen identities), saves."""
  corpus = records.open_corpus(data_dir)
  for split in ("train", "benchmark"):
    if split not in corpus.splits:
      raise UserError(f"corpus {data_dir} has no {split!r} split (it has {', '.join(corpus.splits)})")
  missing = sorted(set(LABEL_NAMES) - set(corpus.manifest.get("label_names", ())))
  if missing:
    raise UserError(f"corpus {data_dir} lacks the labels {missing}; the read-out trains on a labelled corpus")
  frames, labels = _load_frames(corpus, "train", stride)
  res = int(frames.shape[1])
  mean, std = labels.mean(0), np.maximum(labels.std(0), 1e-3)
  target = (labels - mean) / std
  net = ReadoutNet(len(LABEL_NAMES))
  params = net.init(jax.random.key(seed), jnp.zeros((1, res, res, 3)))
  tx = optax.adam(optax.cosine_decay_schedule(lr, steps, 0.05))
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, x_u8, y):
    def loss_fn(p):
      x = x_u8.astype(jnp.float32) / 255.0
      # Squared error, not L1: L1 learns the median, and the median of a blink label (eyes
      # closed in ~5% of frames) is "open" in every context, so an L1 read-out never sees blinks.
      return jnp.mean(jnp.square(net.apply(p, x) - y))
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  rng = np.random.default_rng(seed)
  t0 = time.time()
  for i in range(steps):
    take = rng.integers(0, len(frames), batch)
    # No mirror augmentation: yaw, roll, tx and gaze_theta would change sign.
    params, opt, loss = step(params, opt, frames[take], target[take])
    if (i + 1) % 200 == 0 or i + 1 == steps:
      log(f"read-out step {i + 1}/{steps}: MSE {float(loss):.3f} (normalised), {time.time() - t0:.0f} s")
  meta = {"labels": list(LABEL_NAMES), "mean": mean.tolist(), "std": std.tolist(), "resolution": res,
          "steps": steps, "data": os.path.abspath(data_dir)}
  readout = Readout(params, meta)
  b_frames, b_labels = _load_frames(corpus, "benchmark", stride)
  meta["benchmark_accuracy"] = accuracy(readout, b_frames, b_labels)
  os.makedirs(out_dir, exist_ok=True)
  with media.atomic_output(os.path.join(out_dir, WEIGHTS)) as tmp:
    with open(tmp, "wb") as f:
      f.write(flax.serialization.to_bytes(params))
  with media.atomic_output(os.path.join(out_dir, META)) as tmp:
    with open(tmp, "w") as f:
      json.dump(meta, f, indent=1)
  return meta


def format_accuracy(acc: dict) -> str:
  lines = [f"{'label':14s} {'MAE':>7s} {'corr':>6s}   (read-out on unseen identities' real renders)"]
  lines += [f"{k:14s} {v['mae']:7.3f} {v['corr']:6.3f}" for k, v in acc.items()]
  return "\n".join(lines)


def main(args) -> int:
  meta = train(args.data, args.out, steps=args.steps, batch=args.batch)
  print(format_accuracy(meta["benchmark_accuracy"]))
  print(f"wrote the read-out network to {args.out}")
  return 0


def parser():
  from vasa_jax import cli
  p = cli.make_parser("python -m vasa_jax.readout",
                      "Train the label read-out network that evaluation uses to measure generated pixels.")
  p.add_argument("--data", required=True, help="labelled clip corpus (train and benchmark splits)")
  p.add_argument("--out", required=True, help="folder to write the read-out network to")
  p.add_argument("--steps", type=int, default=2000, help="training steps")
  p.add_argument("--batch", type=int, default=32, help="frames per step")
  return p


if __name__ == "__main__":
  from vasa_jax import cli
  cli.main_entry(main, parser())
