"""`python -m vasa_jax.train.extract_motion`: stage-2 data from a trained stage-1 model.

Runs the stage-1 pose and dynamics encoders over every frame of a clip corpus and
writes a *motion corpus*: the same records without frames, carrying a per-frame
`motion` array `[T, POSE_DIM + Zd]` (`z_pose` then `z_dyn`, `face_model.FaceModel`'s layout), the clip's audio, labels and
attributes. Beside the manifest, `motion_stats.json` holds the per-dimension mean
and standard deviation over the train split (the diffusion model works on
normalised motion) and which stage-1 checkpoint produced it.
"""

import json
import os

import numpy as np
from tqdm import tqdm

from vasa_jax import cli, media, paths
from vasa_jax.data import records
from vasa_jax.errors import UserError
from vasa_jax.face_model import POSE_DIM, FaceModel
from vasa_jax.train import checkpoint

STATS_NAME = "motion_stats.json"


def extract(workdir: str, data_dir: str, out_dir: str, *, batch: int = 32, overwrite: bool = False,
            progress: bool = True) -> dict:
  """Writes the motion corpus; returns the stats dict."""
  cfg, params, step = checkpoint.load_ema(workdir)
  corpus = records.open_corpus(data_dir)
  if not corpus.manifest.get("has_frames", True):
    raise UserError(f"corpus {data_dir} has no frames; give the clip corpus the stage-1 model was trained on")
  if tuple(corpus.manifest["resolution"]) != (cfg.face.image_size,) * 2:
    raise UserError(f"corpus {data_dir} is {corpus.manifest['resolution']} but the stage-1 model works at "
                    f"{cfg.face.image_size}px")
  face = FaceModel(cfg.face)
  total = sum(len(corpus.index(s)) for s in corpus.splits)
  sums = sq = None
  count = 0
  with records.CorpusWriter(out_dir, resolution=None, fps=corpus.manifest["fps"],
                            sample_rate=corpus.manifest["sample_rate"], kind="motion",
                            overwrite=overwrite) as writer:
    bar = tqdm(total=total, unit="clip", desc="extract motion", disable=not progress)
    for split in corpus.splits:
      source = corpus.source(split)
      for i in range(len(source)):
        clip = records.decode_clip(source[i])
        frames = clip.pop("frames").astype(np.float32) / 255.0
        motion = face.motion_of_frames(params, frames, batch)
        clip["motion"] = motion
        writer.add(split, clip)
        if split == "train":
          m64 = motion.astype(np.float64)
          sums = m64.sum(0) + (0.0 if sums is None else sums)
          sq = (m64 ** 2).sum(0) + (0.0 if sq is None else sq)
          count += len(motion)
        bar.update(1)
    bar.close()
    if not count:
      raise UserError(f"corpus {data_dir} has no train split to compute normalisation statistics from")
  mean = sums / count
  std = np.sqrt(np.maximum(sq / count - mean ** 2, 0.0))
  stats = {"mean": mean.tolist(), "std": np.maximum(std, 1e-3).tolist(), "frames": int(count),
           "pose_dims": POSE_DIM, "dyn_dims": int(motion.shape[1] - POSE_DIM),
           "stage1": {"workdir": os.path.abspath(workdir), "step": int(step)}}
  with media.atomic_output(os.path.join(out_dir, STATS_NAME)) as tmp:
    with open(tmp, "w") as f:
      json.dump(stats, f)
  return stats


def load_stats(motion_dir: str) -> dict:
  path = paths.path(motion_dir) / STATS_NAME
  if not path.is_file():
    raise UserError(f"{motion_dir} has no {STATS_NAME}; write the motion corpus with "
                    "python -m vasa_jax.train.extract_motion")
  return json.loads(path.read_text())


def main(args) -> int:
  stats = extract(args.workdir, args.data, args.out, batch=args.batch, overwrite=args.overwrite)
  print(f"wrote motion corpus to {args.out}: {stats['frames']} train frames, "
        f"{stats['pose_dims']} pose + {stats['dyn_dims']} dynamics dims")
  return 0


def parser():
  p = cli.make_parser("python -m vasa_jax.train.extract_motion",
                      "Encode a clip corpus with a trained stage-1 model into a motion corpus for stage 2.")
  p.add_argument("--workdir", required=True, help="stage-1 training run folder (latest checkpoint, EMA weights)")
  p.add_argument("--data", required=True, help="clip corpus (with frames) to encode")
  p.add_argument("--out", required=True, help="folder for the motion corpus")
  p.add_argument("--batch", type=int, default=32, help="frames encoded per call")
  p.add_argument("--overwrite", action="store_true", help="replace a motion corpus already in --out")
  return p


if __name__ == "__main__":
  cli.main_entry(main, parser())
