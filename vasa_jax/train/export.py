"""`python -m vasa_jax.train.export`: two training runs -> one inference bundle.

Reads the latest checkpoint of a stage-1 and a stage-2 run folder and writes the
bundle that `bundle.load` reads (the layout is described in `vasa_jax/bundle.py`):
the EMA weights of both stages, the motion statistics, both configs, and a digest
of the weights. Export lives on the training side because it reads training
checkpoints; inference loads the result without importing the trainer.
"""

import json

import numpy as np
import orbax.checkpoint as ocp

from vasa_jax import bundle, cli, interrupt, paths
from vasa_jax.data.synthetic import LABEL_NAMES
from vasa_jax.errors import UserError
from vasa_jax.face_model import POSE_DIM
from vasa_jax.train import checkpoint


def export(stage1_workdir: str, stage2_workdir: str, out_dir: str, *, overwrite: bool = False) -> str:
  """Writes a bundle from two training runs (their latest checkpoints); returns its digest. Either
  may be a bundle instead, whose stage is taken over as it is."""
  bundles = {}  # A bundle given for both stages is read once.
  cfg1, ema1, step1, source1 = _load_stage1(stage1_workdir, bundles)
  cfg2, stage2, step2, source2 = _load_stage2(stage2_workdir, bundles)
  motion_dim = int(stage2["mean"].size)
  if cfg2.motion_train.motion_source == "labels":
    # Label-space motion is written into the portrait's latents (label_motion): stage 1 must
    # have tied its latents to those labels.
    if motion_dim != len(LABEL_NAMES):
      raise UserError(f"stage-2 run {stage2_workdir!r} generates {motion_dim}-d label motion; "
                      f"expected the {len(LABEL_NAMES)} labels {', '.join(LABEL_NAMES)}")
    if not (cfg1.loss.pose_sup and cfg1.loss.dyn_sup):
      raise UserError(f"stage-1 run {stage1_workdir!r} was trained without pose_sup and dyn_sup, so its "
                      "latents are not tied to labels; train stage 2 on its extract_motion corpus instead")
  elif motion_dim != POSE_DIM + cfg1.face.z_dyn:
    raise UserError(f"stage-2 run {stage2_workdir!r} generates {motion_dim}-d motion but stage 1 expects "
                    f"{POSE_DIM} + {cfg1.face.z_dyn}; train stage 2 on this stage-1 run's extract_motion corpus")
  out = paths.path(out_dir)
  if out.exists():
    if not overwrite:
      raise UserError(f"{out_dir} already exists; choose a new folder or pass --overwrite")
    out.rmtree()
  tmp = out.parent / (out.name + ".partial")  # Appears under its name only when complete.
  if tmp.exists():
    tmp.rmtree()
  paths.make_folder(tmp)
  with interrupt.removed_on_interrupt(str(tmp)):  # Ctrl-C leaves no half-written bundle behind.
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(tmp / "stage1", {"params": ema1})
    ckptr.save(tmp / "stage2", stage2)
    ckptr.wait_until_finished()
    digest = bundle.digest([ema1, stage2])
    meta = {"format": "vasa_jax.bundle", "version": 1, "digest": digest,
            "stage1": {"config": cfg1.to_dict(), "source": source1, "step": step1},
            "stage2": {"config": cfg2.to_dict(), "source": source2, "step": step2}}
    (tmp / bundle.BUNDLE_JSON).write_text(json.dumps(meta, indent=1))
    tmp.rename(out)
  return digest


def _bundle(path: str, bundles: dict):
  """(the loaded bundle, its bundle.json) at `path`, or None when `path` is not a bundle; read once per
  `bundles` cache."""
  if path not in bundles:
    meta_path = paths.path(path) / bundle.BUNDLE_JSON
    bundles[path] = (bundle.load(path), json.loads(meta_path.read_text())) if meta_path.is_file() else None
  return bundles[path]


def _load_stage1(path: str, bundles: dict):
  """Stage 1's EMA weights from a run folder, or taken over from a bundle (a retrained stage 2
  ships with the stage 1 a bundle already has, when that run folder is not at hand).

  Returns (config, weights, step, where they came from).
  """
  if (found := _bundle(path, bundles)) is not None:
    b, meta = found
    return b.face_cfg, b.face_params, meta["stage1"]["step"], meta["stage1"]["source"]
  cfg1, ema1, step1 = checkpoint.load_ema(path)
  return cfg1, ema1, step1, str(paths.path(path))


def _load_stage2(path: str, bundles: dict):
  """Stage 2 from a run folder, or taken over from a bundle (label-space stage 2 does not
  depend on stage 1, so a retrained stage 1 can ship with the stage 2 it already had).

  Returns (config, {"params", "mean", "std"}, step, where it came from).
  """
  if (found := _bundle(path, bundles)) is not None:
    b, meta = found
    stage2 = {"params": b.motion_params, "mean": np.asarray(b.mean, np.float32), "std": np.asarray(b.std, np.float32)}
    return b.motion_cfg, stage2, meta["stage2"]["step"], meta["stage2"]["source"]
  cfg2, state2, step2 = checkpoint.load_run(path)
  if "stats" not in state2:
    raise UserError(f"{path!r} is not a stage-2 run (its state has no motion statistics)")
  stage2 = {"params": state2["ema"], "mean": np.asarray(state2["stats"]["mean"], np.float32),
            "std": np.asarray(state2["stats"]["std"], np.float32)}
  return cfg2, stage2, step2, str(paths.path(path))


def main(args) -> int:
  digest = export(args.stage1, args.stage2, args.out, overwrite=args.overwrite)
  print(f"wrote bundle {args.out} ({bundle.size_bytes(args.out) / 2**20:.1f} MiB, digest {digest})")
  return 0


def parser():
  p = cli.make_parser("python -m vasa_jax.train.export",
                      "Export the EMA weights of a stage-1 and a stage-2 run as one inference bundle.")
  p.add_argument("--stage1", required=True,
                 help="stage-1 training run folder, or a bundle whose stage 1 is taken over as it is")
  p.add_argument("--stage2", required=True,
                 help="stage-2 training run folder, or a bundle whose stage 2 is taken over as it is")
  p.add_argument("--out", required=True, help="bundle folder to write")
  p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
  return p


if __name__ == "__main__":
  cli.main_entry(main, parser())
