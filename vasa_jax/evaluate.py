"""`python -m vasa_jax.evaluate`: quality of trained models on the held-out benchmark split.

Stage 1 (`--stage 1`), over identities never seen in training:
  self-reenactment   source = a clip's first frame, drivers = its other frames;
                     PSNR/SSIM of D(V_src, id_src, pose_drv, dyn_drv) against the driver
  cross-identity     identity A driven by clip B's frames, scored against the corpus'
                     own render of A with B's exact motion (`benchmark_cross`)
  pose following     yaw/pitch/roll read back from each output by the pose encoder,
                     against the driver's true pose (degrees); the encoder on the real
                     driver frames gives the reference row
"""

import json

import jax
import jax.numpy as jnp
import numpy as np

from vasa_jax.data import records
from vasa_jax.errors import UserError

ANGLES = ("yaw", "pitch", "roll")


def _metrics_fn(model):
  from vasa_jax.train import stage1

  @jax.jit
  def reenact(params, src_1xHxWx3, drv_BxHxWx3, gt_BxHxWx3):
    app = model.apply(params, src_1xHxWx3, method=model.encode)
    motion = model.apply(params, drv_BxHxWx3, method=model.encode_motion)
    b = drv_BxHxWx3.shape[0]
    app = jax.tree.map(lambda x: jnp.repeat(x, b, axis=0), app)
    out = model.apply(params, app["v_app"], app["z_id"], motion["z_pose"], motion["z_dyn"], method=model.decode)
    psnr = jax.vmap(stage1.psnr)(out, gt_BxHxWx3)
    ssim = jax.vmap(lambda a, b_: stage1.ssim(a[None], b_[None]))(out, gt_BxHxWx3)
    pose_out = model.apply(params, out, method=model.encode_motion)["z_pose"][:, :3]
    return psnr, ssim, pose_out, motion["z_pose"][:, :3]

  return reenact


def evaluate_stage1(workdir: str, data_dir: str, *, max_clips: int | None = None, frame_stride: int = 4,
                    batch: int = 16) -> dict:
  """Runs the stage-1 benchmark; returns a dict of metric -> value."""
  from vasa_jax.models import face_latent
  from vasa_jax.train import checkpoint
  cfg, params, step = checkpoint.load_ema(workdir)
  corpus = records.open_corpus(data_dir)
  for split in ("benchmark", "benchmark_cross"):
    if split not in corpus.splits:
      raise UserError(f"corpus {data_dir} has no {split!r} split (it has {', '.join(corpus.splits)}); "
                      "write one with python -m vasa_jax.data.synthetic")
  if tuple(corpus.manifest["resolution"]) != (cfg.face.image_size,) * 2:
    raise UserError(f"corpus {data_dir} is {corpus.manifest['resolution']} but the model renders "
                    f"{cfg.face.image_size}px")
  model = face_latent.FaceLatent(cfg.face)
  reenact = _metrics_fn(model)
  bench = corpus.source("benchmark")
  index = corpus.index("benchmark")
  n = len(index) if max_clips is None else min(len(index), max_clips)
  by_id = {}
  acc: dict[str, list] = {k: [] for k in ("self_psnr", "self_ssim", "cross_psnr", "cross_ssim",
                                          "pose_err_out", "pose_err_drv")}

  def run(src, drv, gt, true_angles, prefix):
    for start in range(0, len(drv), batch):
      sl = slice(start, start + batch)
      psnr, ssim, pose_out, pose_drv = reenact(params, src[None], drv[sl], gt[sl])
      acc[f"{prefix}_psnr"].extend(np.asarray(psnr).tolist())
      acc[f"{prefix}_ssim"].extend(np.asarray(ssim).tolist())
      if true_angles is not None:
        acc["pose_err_out"].extend(np.abs(np.asarray(pose_out) - true_angles[sl]).mean(-1).tolist())
        acc["pose_err_drv"].extend(np.abs(np.asarray(pose_drv) - true_angles[sl]).mean(-1).tolist())

  for i in range(n):
    clip = records.decode_clip(bench[i])
    frames = clip["frames"].astype(np.float32) / 255.0
    by_id.setdefault(clip["identity"], frames[0])
    idx = np.arange(frame_stride, len(frames), frame_stride)
    angles = None
    if all(a in clip["labels"] for a in ANGLES):
      angles = np.stack([clip["labels"][a] for a in ANGLES], -1)[idx]
    run(frames[0], frames[idx], frames[idx], angles, "self")

  bench_by_clip = {str(cid): i for i, cid in enumerate(index.clip_id)}
  cross = corpus.source("benchmark_cross")
  cross_index = corpus.index("benchmark_cross")
  m = len(cross_index) if max_clips is None else min(len(cross_index), max_clips)
  for i in range(m):
    clip = records.decode_clip(cross[i])
    motion_clip = records.decode_clip(bench[bench_by_clip[str(clip["attrs"]["motion_source"])]])
    src = by_id.get(clip["identity"])
    if src is None:  # The identity's own clip was not among the evaluated ones.
      continue
    idx = np.arange(frame_stride, len(clip["frames"]), frame_stride)
    gt = clip["frames"].astype(np.float32)[idx] / 255.0
    drv = motion_clip["frames"].astype(np.float32)[idx] / 255.0
    run(src, drv, gt, None, "cross")

  out = {"step": step, "clips": n, "cross_clips": m}
  for k, v in acc.items():
    if v:
      out[k] = float(np.mean(v))
      if k.startswith("pose_err"):
        out[k] = float(np.degrees(out[k]))
  return out


def format_stage1(res: dict) -> str:
  rows = [
      ("self-reenactment (unseen identities)", f"{res.get('self_psnr', float('nan')):.2f}",
       f"{res.get('self_ssim', float('nan')):.4f}"),
      ("cross-identity vs ground truth", f"{res.get('cross_psnr', float('nan')):.2f}",
       f"{res.get('cross_ssim', float('nan')):.4f}"),
  ]
  lines = [f"stage 1 at step {res['step']}: {res['clips']} benchmark clips, {res['cross_clips']} cross clips",
           f"{'':40s} {'PSNR dB':>8s} {'SSIM':>7s}"]
  lines += [f"{a:40s} {b:>8s} {c:>7s}" for a, b, c in rows]
  if "pose_err_out" in res:
    lines.append(f"pose of output vs driver truth: {res['pose_err_out']:.2f} deg mean abs (yaw/pitch/roll); "
                 f"encoder on the real driver: {res['pose_err_drv']:.2f} deg")
  return "\n".join(lines)


def main(args) -> int:
  if args.stage != 1:
    raise UserError("only --stage 1 can be evaluated so far")
  res = evaluate_stage1(args.workdir, args.data, max_clips=args.max_clips, frame_stride=args.frame_stride)
  print(format_stage1(res))
  if args.json:
    from vasa_jax import media
    with media.atomic_output(args.json) as tmp:
      with open(tmp, "w") as f:
        json.dump(res, f, indent=1)
  return 0


def parser():
  from vasa_jax import cli
  p = cli.make_parser("python -m vasa_jax.evaluate",
                      "Evaluate a trained run on the synthetic benchmark split (unseen identities and audio).")
  p.add_argument("--stage", type=int, default=1, choices=(1, 2), help="which stage's model to evaluate")
  p.add_argument("--workdir", required=True, help="training run folder (its latest checkpoint is used)")
  p.add_argument("--data", required=True, help="corpus folder with benchmark and benchmark_cross splits")
  p.add_argument("--max-clips", type=int, default=None, help="evaluate at most this many clips per split")
  p.add_argument("--frame-stride", type=int, default=4, help="use every Nth frame as a driver")
  p.add_argument("--json", help="also write the numbers to this JSON file")
  return p


if __name__ == "__main__":
  from vasa_jax import cli
  cli.main_entry(main, parser())
