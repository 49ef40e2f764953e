"""`python -m vasa_jax.evaluate`: quality of trained models on the held-out benchmark split.

Stage 2 (`--stage 2`), on held-out identities and held-out audio: motion generated
from each clip's audio and controls is read back as labels (directly when the model
was trained on labels, else through a linear probe fitted on the train split) and
compared with the corpus' ground truth: mouth-opening correlation (lip sync),
mean pose change between frames (VASA's dP) and its ratio to the truth, gaze and
distance errors against the requested controls; over guidance scales and steps.

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
import numpy as np

from vasa_jax import cli, media
from vasa_jax.data import records, synthetic
from vasa_jax.errors import UserError
from vasa_jax.face_model import FaceModel, join_motion
from vasa_jax.motion import Controls, MotionModel
from vasa_jax.train import checkpoint, stage1

ANGLES = ("yaw", "pitch", "roll")


def _metrics_fn(face: FaceModel):
  @jax.jit
  def reenact(params, src_1xHxWx3, drv_BxHxWx3, gt_BxHxWx3):
    app = face.encode(params, src_1xHxWx3)
    motion = face.encode_motion(params, drv_BxHxWx3)
    out = face.decode_motion(params, app, join_motion(motion))
    psnr = jax.vmap(stage1.psnr)(out, gt_BxHxWx3)
    ssim = jax.vmap(lambda a, b_: stage1.ssim(a[None], b_[None]))(out, gt_BxHxWx3)
    pose_out = face.encode_motion(params, out)["z_pose"][:, :3]
    return psnr, ssim, pose_out, motion["z_pose"][:, :3]

  return reenact


def evaluate_stage1(workdir: str, data_dir: str, *, max_clips: int | None = None, frame_stride: int = 4,
                    batch: int = 16) -> dict:
  """Runs the stage-1 benchmark; returns a dict of metric -> value."""
  cfg, params, step = checkpoint.load_ema(workdir)
  corpus = records.open_corpus(data_dir)
  for split in ("benchmark", "benchmark_cross"):
    if split not in corpus.splits:
      raise UserError(f"corpus {data_dir} has no {split!r} split (it has {', '.join(corpus.splits)}); "
                      "write one with python -m vasa_jax.data.synthetic")
  if tuple(corpus.manifest["resolution"]) != (cfg.face.image_size,) * 2:
    raise UserError(f"corpus {data_dir} is {corpus.manifest['resolution']} but the model renders "
                    f"{cfg.face.image_size}px")
  reenact = _metrics_fn(FaceModel(cfg.face))
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


# ---------------------------------------------------------------------------- stage 2


def _load_stage2(workdir: str):
  cfg, state, step = checkpoint.load_run(workdir)
  if "stats" not in state:
    raise UserError(f"{workdir!r} is not a stage-2 run (its state has no motion statistics)")
  mean, std = np.asarray(state["stats"]["mean"]), np.asarray(state["stats"]["std"])
  return cfg, MotionModel(cfg, motion_dim=mean.size), state["ema"], mean, std, step


def _fit_probe(corpus, names, max_clips=400):
  """Ridge regression from motion latents to labels, fitted on the train split."""
  source = corpus.source("train")
  xs, ys = [], []
  for i in range(min(len(source), max_clips)):
    clip = records.decode_clip(source[i], frame_indices=[])
    xs.append(clip["motion"])
    ys.append(np.stack([clip["labels"][n] for n in names], -1))
  x, y = np.concatenate(xs), np.concatenate(ys)
  x1 = np.concatenate([x, np.ones((len(x), 1), np.float32)], -1)
  w = np.linalg.solve(x1.T @ x1 + 1e-2 * np.eye(x1.shape[1]), x1.T @ y)
  r2 = 1 - ((x1 @ w - y) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)
  return (lambda m: np.concatenate([m, np.ones((len(m), 1), np.float32)], -1) @ w), dict(zip(names, r2))


def clip_motion(model: MotionModel, params, clip: dict, first_M: np.ndarray, rng, *, steps: int,
                guidance) -> np.ndarray:
  """What stage-2 evaluation scores for one clip: normalised motion [T, M] generated from its
  audio and controls by the window loop that `sample` streams (`motion.WindowLoop`), starting
  from its first frame's (normalised) motion, for as many frames as the clip has."""
  attrs = clip["attrs"]
  controls = Controls(gaze=tuple(np.asarray(attrs["gaze"], float)), distance=float(attrs["distance"]),
                      emotion=int(attrs["emotion"]))
  num_frames = len(next(iter(clip["labels"].values())))
  return model.sample_sequence(params, clip["audio"], first_M, controls, rng, steps=steps, guidance=guidance,
                               num_frames=num_frames)


def delta_p_deg(labels_TxL: np.ndarray, pose_cols) -> float:
  """VASA's dP: mean absolute frame-to-frame change of yaw/pitch/roll (radians in), in degrees."""
  return float(np.degrees(np.abs(np.diff(labels_TxL[:, pose_cols], axis=0)).mean()))


def motion_metrics(clips, gen_list, names) -> dict:
  """Generated label rows `[T, L]` per clip against each clip's truth and requested controls.

  Mouth-opening correlation, dP and its ratio to the truth's dP, gaze error (degrees,
  from radian labels) and distance error.
  """
  col = {n: i for i, n in enumerate(names)}
  pose_cols = [col["yaw"], col["pitch"], col["roll"]]
  mouth, dps, gaze_err, dist_err = [], [], [], []
  for clip, gen in zip(clips, gen_list):
    truth = np.stack([clip["labels"][nm] for nm in names], -1)
    a, b = gen[:, col["mouth_open"]], truth[:, col["mouth_open"]]
    mouth.append(float(np.corrcoef(a, b)[0, 1]) if a.std() > 1e-6 and b.std() > 1e-6 else 0.0)
    dps.append(delta_p_deg(gen, pose_cols))
    g = np.asarray(clip["attrs"]["gaze"], np.float32)
    gaze_err.append(float(np.degrees(np.abs(gen[:, [col["gaze_theta"], col["gaze_phi"]]].mean(0) - g).mean())))
    dist_err.append(float(abs(gen[:, col["distance"]].mean() - float(clip["attrs"]["distance"]))))
  truth_dp = np.mean([delta_p_deg(np.stack([c["labels"][nm] for nm in names], -1), pose_cols) for c in clips])
  return {"mouth_corr": float(np.mean(mouth)), "delta_p_deg": float(np.mean(dps)),
          "delta_p_ratio": float(np.mean(dps) / truth_dp), "gaze_err_deg": float(np.mean(gaze_err)),
          "distance_err": float(np.mean(dist_err))}


def evaluate_stage2(workdir: str, data_dir: str, *, cfg_audio=(0.0, 0.5, 1.0), steps=(10, 50),
                    max_clips: int | None = None, seed: int = 0) -> dict:
  """Lip sync, pose variation and control following of generated motion on held-out audio."""
  cfg, model, params, mean, std, step = _load_stage2(workdir)
  corpus = records.open_corpus(data_dir)
  if "benchmark" not in corpus.splits:
    raise UserError(f"corpus {data_dir} has no benchmark split (it has {', '.join(corpus.splits)})")
  names = list(synthetic.LABEL_NAMES)
  if cfg.motion_train.motion_source == "labels":
    to_labels, probe_r2 = (lambda m: m), None
    motion_of = lambda clip: np.stack([clip["labels"][n] for n in names], -1)  # noqa: E731
  else:
    to_labels, probe_r2 = _fit_probe(corpus, names)
    motion_of = lambda clip: clip["motion"]  # noqa: E731
  source = corpus.source("benchmark")
  n = len(source) if max_clips is None else min(len(source), max_clips)
  clips = [records.decode_clip(source[i], frame_indices=[]) for i in range(n)]
  summarise = lambda gen_list: motion_metrics(clips, gen_list, names)  # noqa: E731

  truth_rows = [np.stack([c["labels"][nm] for nm in names], -1) for c in clips]
  out = {"step": step, "clips": n, "motion_source": cfg.motion_train.motion_source, "probe_r2": probe_r2,
         "ground_truth": summarise(truth_rows), "runs": []}
  for n_steps in steps:
    for lam in cfg_audio:
      guidance = (lam, cfg.diffusion.cfg_gaze, 0.0, 0.0, 0.0)
      rng = jax.random.key(seed)
      gens = []
      for clip in clips:
        rng, sub = jax.random.split(rng)
        z = clip_motion(model, params, clip, (motion_of(clip)[0] - mean) / std, sub, steps=n_steps,
                        guidance=guidance)
        gens.append(to_labels(z * std + mean))
      out["runs"].append({"steps": n_steps, "cfg_audio": lam, **summarise(gens)})
  return out


def format_stage2(res: dict) -> str:
  lines = [f"stage 2 at step {res['step']}: {res['clips']} held-out clips (unseen identities and audio), "
           f"motion read {'directly (labels)' if res['probe_r2'] is None else 'through a linear probe'}"]
  if res["probe_r2"]:
    lines.append("probe R^2 on train: " + ", ".join(f"{k} {v:.2f}" for k, v in res["probe_r2"].items()))
  lines.append(f"{'':22s} {'mouth corr':>10s} {'dP deg':>7s} {'dP ratio':>8s} {'gaze err':>8s} {'dist err':>8s}")
  g = res["ground_truth"]
  lines.append(f"{'ground truth':22s} {g['mouth_corr']:10.3f} {g['delta_p_deg']:7.3f} {g['delta_p_ratio']:8.2f} "
               f"{g['gaze_err_deg']:8.2f} {g['distance_err']:8.3f}")
  for r in res["runs"]:
    name = f"steps {r['steps']}, lambda_A {r['cfg_audio']:g}"
    lines.append(f"{name:22s} {r['mouth_corr']:10.3f} {r['delta_p_deg']:7.3f} {r['delta_p_ratio']:8.2f} "
                 f"{r['gaze_err_deg']:8.2f} {r['distance_err']:8.3f}")
  return "\n".join(lines)


def main(args) -> int:
  if args.stage == 1:
    res = evaluate_stage1(args.workdir, args.data, max_clips=args.max_clips, frame_stride=args.frame_stride)
    print(format_stage1(res))
  else:
    res = evaluate_stage2(args.workdir, args.data, max_clips=args.max_clips, steps=tuple(args.steps),
                          cfg_audio=tuple(args.cfg_audio))
    print(format_stage2(res))
  if args.json:
    with media.atomic_output(args.json) as tmp:
      with open(tmp, "w") as f:
        json.dump(res, f, indent=1)
  return 0


def parser():
  p = cli.make_parser("python -m vasa_jax.evaluate",
                      "Evaluate a trained run on the synthetic benchmark split (unseen identities and audio).")
  p.add_argument("--stage", type=int, default=1, choices=(1, 2), help="which stage's model to evaluate")
  p.add_argument("--workdir", required=True, help="training run folder (its latest checkpoint is used)")
  p.add_argument("--data", required=True, help="corpus folder with benchmark and benchmark_cross splits")
  p.add_argument("--max-clips", type=int, default=None, help="evaluate at most this many clips per split")
  p.add_argument("--frame-stride", type=int, default=4, help="use every Nth frame as a driver")
  p.add_argument("--steps", type=int, nargs="+", default=[10, 50], help="stage 2: DDIM steps to compare")
  p.add_argument("--cfg-audio", type=float, nargs="+", default=[0.0, 0.5, 1.0],
                 help="stage 2: audio guidance scales to compare")
  p.add_argument("--json", help="also write the numbers to this JSON file")
  return p


if __name__ == "__main__":
  cli.main_entry(main, parser())
