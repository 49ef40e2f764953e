"""Inference bundles: what sampling loads (and what ships inside the package as the demo).

A bundle is a folder with the EMA weights of both stages as Orbax checkpoints and
their configs, nothing a sampler does not need (no optimiser state, no
discriminator):

  BUNDLE/stage1/   Orbax: {"params": face-latent EMA weights}
  BUNDLE/stage2/   Orbax: {"params": motion EMA weights, "mean": [M], "std": [M]}
  BUNDLE/bundle.json   both configs, where each stage came from, a content hash

`python -m vasa_jax.bundle --stage1 RUN1 --stage2 RUN2 --out DIR` exports one from
two training run folders.
"""

import dataclasses
import hashlib
import json
import os
import shutil
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from vasa_jax.errors import UserError

BUNDLE_JSON = "bundle.json"
DEMO_BUNDLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoints", "demo")


@dataclasses.dataclass
class Bundle:
  face_cfg: ml_collections.ConfigDict      # the stage-1 run config
  motion_cfg: ml_collections.ConfigDict    # the stage-2 run config
  face_params: Any
  motion_params: Any
  mean: np.ndarray
  std: np.ndarray
  digest: str                              # identifies the weights (watermark payload, metadata)
  path: str


def _digest(tree) -> str:
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(tree):
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(str(a.shape).encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]


def export(stage1_workdir: str, stage2_workdir: str, out_dir: str, *, overwrite: bool = False) -> str:
  """Writes a bundle from two training runs (their latest checkpoints); returns its digest."""
  from vasa_jax.train import checkpoint
  cfg1, ema1, step1 = checkpoint.load_ema(stage1_workdir)
  cfg2, state2, step2 = checkpoint.load_run(stage2_workdir)
  if "stats" not in state2:
    raise UserError(f"{stage2_workdir!r} is not a stage-2 run (its state has no motion statistics)")
  motion_dim = int(np.asarray(state2["stats"]["mean"]).size)
  if cfg2.motion_train.motion_source == "labels":
    # Label-space motion is written into the portrait's latents (label_motion): stage 1 must
    # have tied its latents to those labels.
    from vasa_jax.data.synthetic import LABEL_NAMES
    if motion_dim != len(LABEL_NAMES):
      raise UserError(f"stage-2 run {stage2_workdir!r} generates {motion_dim}-d label motion; "
                      f"expected the {len(LABEL_NAMES)} labels {', '.join(LABEL_NAMES)}")
    if not (cfg1.loss.get("pose_sup", 0) and cfg1.loss.get("dyn_sup", 0)):
      raise UserError(f"stage-1 run {stage1_workdir!r} was trained without pose_sup and dyn_sup, so its "
                      "latents are not tied to labels; train stage 2 on its extract_motion corpus instead")
  elif motion_dim != 6 + cfg1.face.z_dyn:
    raise UserError(f"stage-2 run {stage2_workdir!r} generates {motion_dim}-d motion but stage 1 expects "
                    f"6 + {cfg1.face.z_dyn}; train stage 2 on this stage-1 run's extract_motion corpus")
  if os.path.exists(out_dir):
    if not overwrite:
      raise UserError(f"{out_dir} already exists; choose a new folder or pass --overwrite")
    shutil.rmtree(out_dir)
  tmp = out_dir.rstrip("/") + ".partial"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  ckptr = ocp.StandardCheckpointer()
  stage2 = {"params": state2["ema"], "mean": np.asarray(state2["stats"]["mean"], np.float32),
            "std": np.asarray(state2["stats"]["std"], np.float32)}
  ckptr.save(os.path.join(os.path.abspath(tmp), "stage1"), {"params": ema1})
  ckptr.save(os.path.join(os.path.abspath(tmp), "stage2"), stage2)
  ckptr.wait_until_finished()
  digest = _digest([ema1, stage2])
  meta = {"format": "vasa_jax.bundle", "version": 1, "digest": digest,
          "stage1": {"config": cfg1.to_dict(), "source": os.path.abspath(stage1_workdir), "step": step1},
          "stage2": {"config": cfg2.to_dict(), "source": os.path.abspath(stage2_workdir), "step": step2}}
  with open(os.path.join(tmp, BUNDLE_JSON), "w") as f:
    json.dump(meta, f, indent=1)
  os.replace(tmp, out_dir)
  return digest


def load(path: str) -> Bundle:
  """Loads a bundle folder; a clear error names what is missing."""
  meta_path = os.path.join(path, BUNDLE_JSON)
  if not os.path.isdir(path):
    raise UserError(f"checkpoint {path!r} does not exist; give a bundle folder written by "
                    "python -m vasa_jax.bundle")
  if not os.path.isfile(meta_path):
    raise UserError(f"checkpoint {path!r} has no {BUNDLE_JSON}; it is not a vasa_jax bundle "
                    "(export one with python -m vasa_jax.bundle --stage1 RUN --stage2 RUN --out DIR)")
  with open(meta_path) as f:
    try:
      meta = json.load(f)
    except json.JSONDecodeError as e:
      raise UserError(f"{meta_path} is corrupt ({e})") from None
  ckptr = ocp.StandardCheckpointer()
  try:
    s1 = ckptr.restore(os.path.join(os.path.abspath(path), "stage1"))
    s2 = ckptr.restore(os.path.join(os.path.abspath(path), "stage2"))
  except Exception as e:  # Orbax raises many types for damaged folders.
    raise UserError(f"checkpoint {path!r} could not be read ({type(e).__name__}: {str(e)[:200]})") from None
  return Bundle(face_cfg=ml_collections.ConfigDict(meta["stage1"]["config"]),
                motion_cfg=ml_collections.ConfigDict(meta["stage2"]["config"]),
                face_params=s1["params"], motion_params=s2["params"],
                mean=np.asarray(s2["mean"]), std=np.asarray(s2["std"]), digest=meta["digest"], path=path)


def size_bytes(path: str) -> int:
  """Total size of the files in a bundle folder."""
  return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def main(args) -> int:
  digest = export(args.stage1, args.stage2, args.out, overwrite=args.overwrite)
  print(f"wrote bundle {args.out} ({size_bytes(args.out) / 2**20:.1f} MiB, digest {digest})")
  return 0


def parser():
  from vasa_jax import cli
  p = cli.make_parser("python -m vasa_jax.bundle",
                      "Export the EMA weights of a stage-1 and a stage-2 run as one inference bundle.")
  p.add_argument("--stage1", required=True, help="stage-1 training run folder")
  p.add_argument("--stage2", required=True, help="stage-2 training run folder")
  p.add_argument("--out", required=True, help="bundle folder to write")
  p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
  return p


if __name__ == "__main__":
  from vasa_jax import cli
  cli.main_entry(main, parser())
