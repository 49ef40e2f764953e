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

Both stages, where the `identity` extra is installed: identity similarity of the portrait and
the generated frames with a real-face recogniser (`face_identity`: dlib's 128-D ResNet), the
portrait against the clip's own true frames as the reference row. It is meant for real faces
(dlib finds some synthetic heads, uncalibrated); where it finds no face the row says n/a and why.
"""

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from vasa_jax import bundle as bundle_lib
from vasa_jax import cli, face_identity, label_motion, media, stream
from vasa_jax import readout as readout_lib
from vasa_jax.data import records, synthetic
from vasa_jax.errors import UserError
from vasa_jax.face_model import POSE_DIM, FaceModel, join_motion
from vasa_jax.label_motion import DYN_LABELS, POSE_LABELS
from vasa_jax.motion import Controls, MotionModel
from vasa_jax.train import checkpoint, stage1

ANGLES = ("yaw", "pitch", "roll")


def _with_labels(z_pose, z_dyn, pose_lab, dyn_lab):
  """Latents with the pose and the labelled z_dyn dims replaced by true labels (the rest kept)."""
  n = dyn_lab.shape[-1]
  return pose_lab, jnp.concatenate([dyn_lab, z_dyn[:, n:]], -1)


# --motion-from: which parts of the source's and the driver's latents are their true labels.
MOTION_FROM = {"encoders": (False, False), "labels": (True, True),
               "labels-pose": (True, False), "labels-expression": (False, True)}


def chunk_rows(n: int, batch: int) -> int:
  """Rows per call for `n` drivers at most `batch` at a time, in equal chunks: a clip's drivers (and
  the cross-identity pass over the same frames) then need one compiled shape, not a second for the
  remainder (compiling costs more than the few padded rows, `pad_rows`)."""
  return -(-n // -(-n // batch)) if n else batch


def pad_rows(arrays, rows: int) -> tuple:
  """Each array's rows up to `rows`, repeating its last row (the extra outputs are dropped)."""
  return tuple(np.concatenate([a, np.repeat(a[-1:], rows - len(a), axis=0)]) if len(a) < rows else a
               for a in arrays)


def _metrics_fn(face: FaceModel, true_pose: bool = True, true_expression: bool = True):
  @jax.jit
  def reenact(params, src_1xHxWx3, drv_BxHxWx3, gt_BxHxWx3, labels=None):
    """`labels`: (src pose [1, 6], src dyn [1, L], drv pose [B, 6], drv dyn [B, L]) decode the true
    labels instead of what the encoders read, as teacher-label training does: the decoder's ceiling.
    `true_pose` / `true_expression` say which of the two is replaced (the other stays as read)."""
    app = face.encode(params, src_1xHxWx3)
    motion = face.encode_motion(params, drv_BxHxWx3)
    if labels is not None:
      src_pose, src_dyn, drv_pose, drv_dyn = labels
      z_pose, z_dyn = _with_labels(motion["z_pose"], motion["z_dyn"], drv_pose, drv_dyn)
      motion = {"z_pose": z_pose if true_pose else motion["z_pose"],
                "z_dyn": z_dyn if true_expression else motion["z_dyn"]}
      app = dict(app)
      if "z_pose" in face.app_keys and true_pose:
        app["z_pose"] = src_pose
      if "src_dyn" in face.app_keys and true_expression:
        app["src_dyn"] = _with_labels(src_pose, app["src_dyn"], src_pose, src_dyn)[1]
    out = face.decode_motion(params, app, join_motion(motion))
    psnr = jax.vmap(stage1.psnr)(out, gt_BxHxWx3)
    ssim = jax.vmap(lambda a, b_: stage1.ssim(a[None], b_[None]))(out, gt_BxHxWx3)
    pose_out = face.encode_motion(params, out)["z_pose"][:, :3]
    return out, psnr, ssim, pose_out, motion["z_pose"][:, :3]

  return reenact


TRANSFER_CLIPS = 5    # portraits asked for every emotion by `evaluate --stage 1`
TRANSFER_FRAMES = 3   # frames drawn per portrait and emotion


def expression_transfer(draw, identity_id: int, labels: dict) -> list[tuple[int, float, float, int]]:
  """Stage 1 asked for each emotion in turn, whatever the portrait shows: `labels` (a few frames of a
  synthetic clip) with smile and brow set to each emotion's centre are drawn by `draw(labels) -> frames`,
  and smile and brow are read back from the pixels with the corpus' renders as the ruler
  (`synthetic.read_controls`). Returns per emotion (asked, drawn smile, drawn brow, recognised)."""
  rows = []
  for e, name in enumerate(synthetic.EMOTIONS):
    smile, brow = readout_lib.emotion_centre(name)
    asked = dict(labels, smile=np.full_like(labels["smile"], smile), brow=np.full_like(labels["brow"], brow))
    read = synthetic.read_controls(identity_id, asked, draw(asked), stride=1, keys=("smile", "brow"))
    rows.append((e, float(np.mean(read["smile"])), float(np.mean(read["brow"])),
                 readout_lib.emotion_of(read["smile"], read["brow"])))
  return rows


def transfer_summary(rows) -> dict:
  """Recognised share overall and per emotion, and how much of the asked smile and brow the drawn
  ones follow (least-squares slope of drawn on asked: 1 = all of it, 0 = none)."""
  rows = np.asarray(rows, np.float64)
  asked = np.array([readout_lib.emotion_centre(synthetic.EMOTIONS[int(e)]) for e in rows[:, 0]])
  slope = lambda x, y: float(np.polyfit(x, y, 1)[0])  # noqa: E731
  return {"emotion_transfer_acc": float(np.mean(rows[:, 3] == rows[:, 0])),
          "emotion_transfer_per": {name: float(np.mean(rows[rows[:, 0] == e, 3] == e))
                                   for e, name in enumerate(synthetic.EMOTIONS)},
          "smile_slope": slope(asked[:, 0], rows[:, 1]), "brow_slope": slope(asked[:, 1], rows[:, 2])}


def region_psnr(out_NxHxWx3, gt_NxHxWx3, mask_NxHxW) -> np.ndarray:
  """PSNR per frame over the masked pixels only (NaN where a frame's mask is empty)."""
  err = ((np.clip(out_NxHxWx3, 0, 1) - gt_NxHxWx3) ** 2).mean(-1)
  count = mask_NxHxW.sum((1, 2))
  mse = np.where(count > 0, (err * mask_NxHxW).sum((1, 2)) / np.maximum(count, 1), np.nan)
  return -10.0 * np.log10(mse + 1e-10)


def correlation(a, b) -> float:
  """Pearson correlation; 0 when either side is constant (a frozen mouth carries nothing)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.size < 2 or a.std() < 1e-6 or b.std() < 1e-6:
    return 0.0
  return float(np.corrcoef(a, b)[0, 1])


def load_face(workdir: str | None = None, bundle_dir: str | None = None):
  """Stage-1 (run config, EMA params, step) from a training run folder or an inference bundle."""
  if (workdir is None) == (bundle_dir is None):
    raise UserError("give exactly one of --workdir (a training run) or --checkpoint (a bundle)")
  if bundle_dir is not None:
    b = bundle_lib.load(bundle_dir)
    return b.face_cfg, b.face_params, f"bundle {bundle_dir}"
  return checkpoint.load_ema(workdir)


def evaluate_stage1(workdir: str | None, data_dir: str, *, bundle_dir: str | None = None,
                    readout_dir: str | None = None, max_clips: int | None = None, frame_stride: int = 4,
                    batch: int = 16, motion_from: str = "encoders", identity: bool | None = None) -> dict:
  """Runs the stage-1 benchmark on a run folder or a bundle; returns a dict of metric -> value.

  With a read-out network (`readout_dir`), mouth opening and blink are read from the
  output pixels and correlated with the driver's true labels, over all evaluated frames.
  Region PSNRs use masks rendered by the synthetic corpus (`synthetic.region_masks`).
  """
  if motion_from not in MOTION_FROM:
    raise UserError(f"--motion-from must be one of {', '.join(MOTION_FROM)}, got {motion_from!r}")
  identity = _identity_on(identity)
  cfg, params, step = load_face(workdir, bundle_dir)
  corpus = records.open_corpus(data_dir)
  for split in ("benchmark", "benchmark_cross"):
    if split not in corpus.splits:
      raise UserError(f"corpus {data_dir} has no {split!r} split (it has {', '.join(corpus.splits)}); "
                      "write one with python -m vasa_jax.data.synthetic")
  if tuple(corpus.manifest["resolution"]) != (cfg.face.image_size,) * 2:
    raise UserError(f"corpus {data_dir} is {corpus.manifest['resolution']} but the model renders "
                    f"{cfg.face.image_size}px")
  readout = None if readout_dir is None else readout_lib.Readout.load(readout_dir)
  face = FaceModel(cfg.face)
  full = _metrics_fn(face)  # The true labels when given (emotions asked are always drawn through them).
  reenact = full if motion_from in ("encoders", "labels") else _metrics_fn(face, *MOTION_FROM[motion_from])
  bench = corpus.source("benchmark")
  index = corpus.index("benchmark")
  n = len(index) if max_clips is None else min(len(index), max_clips)
  by_id = {}
  acc: dict[str, list] = {k: [] for k in ("self_psnr", "self_ssim", "cross_psnr", "cross_ssim",
                                          "pose_err_out", "pose_err_drv", "mouth_psnr", "eyes_psnr")}
  reads: dict[str, list] = {k: [] for k in ("mouth_out", "mouth_gt", "mouth_true", "blink_out", "blink_gt",
                                            "blink_true")}
  px: dict[str, list] = {k: [] for k in reads}
  ident: dict[str, list] = {"identity_truth": [], "identity_self": [], "identity_cross": []}

  def score_identity(key, portrait, frames):
    if identity:
      ident[key].append(face_identity.identity_similarity(portrait, frames, max_frames=IDENTITY_FRAMES))

  def label_targets(labels, idx):
    """(pose [T, 6], dyn [T, L]) targets of a clip's frames `idx`, for --motion-from labels."""
    missing = [k for k in (*POSE_LABELS, *DYN_LABELS) if k not in labels]
    if missing:
      raise UserError(f"--motion-from labels needs the corpus' labels; it lacks {', '.join(missing)}")
    sub = {k: np.asarray(labels[k])[idx] for k in (*POSE_LABELS, *DYN_LABELS)}
    return label_motion.pose_target(sub), label_motion.dyn_target(sub)

  def run(src, drv, gt, true_angles, prefix, src_lab=None, drv_lab=None):
    outs = []
    rows = chunk_rows(len(drv), batch)
    for start in range(0, len(drv), rows):
      sl = slice(start, start + rows)
      lab = None
      if motion_from != "encoders":
        lab = (src_lab[0][None], src_lab[1][None], *pad_rows((drv_lab[0][sl], drv_lab[1][sl]), rows))
      got = reenact(params, src[None], *pad_rows((drv[sl], gt[sl]), rows), lab)
      out, psnr, ssim, pose_out, pose_drv = (np.asarray(x)[:len(drv[sl])] for x in got)  # padding dropped
      outs.append(out)
      acc[f"{prefix}_psnr"].extend(np.asarray(psnr).tolist())
      acc[f"{prefix}_ssim"].extend(np.asarray(ssim).tolist())
      if true_angles is not None:
        acc["pose_err_out"].extend(np.abs(np.asarray(pose_out) - true_angles[sl]).mean(-1).tolist())
        acc["pose_err_drv"].extend(np.abs(np.asarray(pose_drv) - true_angles[sl]).mean(-1).tolist())
    return np.concatenate(outs)

  transfer = []
  for i in range(n):
    clip = records.decode_clip(bench[i])
    frames = clip["frames"].astype(np.float32) / 255.0
    idx = np.arange(frame_stride, len(frames), frame_stride)
    if i < TRANSFER_CLIPS and clip.get("source") == "synthetic" and all(
        k in clip["labels"] for k in (*POSE_LABELS, *DYN_LABELS)):
      # Each emotion asked of the decoder from this portrait through the labels, as label-space stage 2
      # asks it (`--emotion`): drawn or not, whatever emotion the portrait itself shows.
      t_idx = np.linspace(frame_stride, len(frames) - 1, TRANSFER_FRAMES).astype(int)
      src_t = tuple(x[0] for x in label_targets(clip["labels"], [0]))

      def draw(asked, t_idx=t_idx, src_t=src_t, frames=frames):
        lab = (src_t[0][None], src_t[1][None], label_motion.pose_target(asked), label_motion.dyn_target(asked))
        return np.asarray(full(params, frames[0][None], frames[t_idx], frames[t_idx], lab)[0])

      transfer += expression_transfer(draw, clip["identity"], {k: np.asarray(v)[t_idx] for k, v in clip["labels"].items()})
    src_lab = drv_lab = None
    if motion_from != "encoders":
      src_lab = tuple(x[0] for x in label_targets(clip["labels"], [0]))
      drv_lab = label_targets(clip["labels"], idx)
    by_id.setdefault(clip["identity"], (frames[0], src_lab))
    angles = None
    if all(a in clip["labels"] for a in ANGLES):
      angles = np.stack([clip["labels"][a] for a in ANGLES], -1)[idx]
    out = run(frames[0], frames[idx], frames[idx], angles, "self", src_lab, drv_lab)
    score_identity("identity_truth", frames[0], frames[idx])
    score_identity("identity_self", frames[0], out)
    labels = {k: v[idx] for k, v in clip["labels"].items()}
    if clip.get("source") == "synthetic":
      extremes = synthetic.feature_extremes(clip["identity"], labels, frames.shape[1])
      masks = synthetic.region_masks(clip["identity"], labels, frames.shape[1], extremes=extremes)
      acc["mouth_psnr"].extend(region_psnr(out, frames[idx], masks["mouth"]).tolist())
      acc["eyes_psnr"].extend(region_psnr(out, frames[idx], masks["eyes"]).tolist())
      # Mouth and blink read from the pixels with the corpus' own renders as the ruler.
      px_out = synthetic.pixel_features(clip["identity"], labels, out, extremes=extremes)
      px_gt = synthetic.pixel_features(clip["identity"], labels, frames[idx], extremes=extremes)
      for k, name in (("mouth", "mouth_open"), ("blink", "blink")):
        px[f"{k}_out"].extend(px_out[name].tolist())
        px[f"{k}_gt"].extend(px_gt[name].tolist())
        px[f"{k}_true"].extend(labels[name].tolist())
    if readout is not None and "mouth_open" in labels:
      r_out, r_gt = readout(out), readout(frames[idx])
      for k, name in (("mouth", "mouth_open"), ("blink", "blink")):
        reads[f"{k}_out"].extend(r_out[name].tolist())
        reads[f"{k}_gt"].extend(r_gt[name].tolist())
        reads[f"{k}_true"].extend(labels[name].tolist())

  bench_by_clip = {str(cid): i for i, cid in enumerate(index.clip_id)}
  cross = corpus.source("benchmark_cross")
  cross_index = corpus.index("benchmark_cross")
  m = len(cross_index) if max_clips is None else min(len(cross_index), max_clips)
  for i in range(m):
    clip = records.decode_clip(cross[i])
    motion_clip = records.decode_clip(bench[bench_by_clip[str(clip["attrs"]["motion_source"])]])
    if clip["identity"] not in by_id:  # The identity's own clip was not among the evaluated ones.
      continue
    src, src_lab = by_id[clip["identity"]]
    idx = np.arange(frame_stride, len(clip["frames"]), frame_stride)
    gt = clip["frames"].astype(np.float32)[idx] / 255.0
    drv = motion_clip["frames"].astype(np.float32)[idx] / 255.0
    drv_lab = label_targets(motion_clip["labels"], idx) if motion_from != "encoders" else None
    score_identity("identity_cross", src, run(src, drv, gt, None, "cross", src_lab, drv_lab))

  out = {"step": step, "clips": n, "cross_clips": m, "motion_from": motion_from}
  for k, v in acc.items():
    v = [x for x in v if np.isfinite(x)]
    if v:
      out[k] = float(np.mean(v))
      if k.startswith("pose_err"):
        out[k] = float(np.degrees(out[k]))
  if reads["mouth_out"]:
    for k in ("mouth", "blink"):
      out[f"{k}_corr_out"] = correlation(reads[f"{k}_out"], reads[f"{k}_true"])
      out[f"{k}_corr_gt"] = correlation(reads[f"{k}_gt"], reads[f"{k}_true"])
  if px["mouth_out"]:
    for k in ("mouth", "blink"):
      out[f"{k}_px_out"] = correlation(px[f"{k}_out"], px[f"{k}_true"])
      out[f"{k}_px_gt"] = correlation(px[f"{k}_gt"], px[f"{k}_true"])
  out.update({k: face_identity.pooled(v) for k, v in ident.items() if identity})
  if transfer:
    out.update(transfer_summary(transfer), transfer_portraits=len(transfer) // len(synthetic.EMOTIONS))
  return out


def format_stage1(res: dict) -> str:
  nan = float("nan")
  rows = [
      ("self-reenactment (unseen identities)", f"{res.get('self_psnr', nan):.2f}", f"{res.get('self_ssim', nan):.4f}"),
      ("  inside the mouth region", f"{res.get('mouth_psnr', nan):.2f}", ""),
      ("  inside the eye regions", f"{res.get('eyes_psnr', nan):.2f}", ""),
      ("cross-identity vs ground truth", f"{res.get('cross_psnr', nan):.2f}", f"{res.get('cross_ssim', nan):.4f}"),
  ]
  what = f"at step {res['step']}" if isinstance(res["step"], int) else f"of {res['step']}"
  driven = {"labels": " driven by the true labels (the decoder's ceiling)",
            "labels-pose": " driven by the true pose and the expression the encoders read",
            "labels-expression": " driven by the pose the encoders read and the true expression labels"}.get(
                res.get("motion_from"), "")
  lines = [f"stage 1 {what}: {res['clips']} benchmark clips, {res['cross_clips']} cross clips{driven}",
           f"{'':40s} {'PSNR dB':>8s} {'SSIM':>7s}"]
  lines += [f"{a:40s} {b:>8s} {c:>7s}" for a, b, c in rows]
  if "pose_err_out" in res:
    lines.append(f"pose of output vs driver truth: {res['pose_err_out']:.2f} deg mean abs (yaw/pitch/roll); "
                 f"encoder on the real driver: {res['pose_err_drv']:.2f} deg")
  if "mouth_px_out" in res:
    lines.append("carried from driver to output, read from pixels against the corpus' renders of each frame with "
                 "the feature at 0 and 1 (correlation with the driver's true label):")
    lines.append(f"  mouth opening {res['mouth_px_out']:.3f}   blink {res['blink_px_out']:.3f}   "
                 f"(same ruler on the true frames: {res['mouth_px_gt']:.3f} / {res['blink_px_gt']:.3f})")
  if "mouth_corr_out" in res:
    lines.append("carried from driver to output, read by the read-out network (correlation with the driver's true label):")
    lines.append(f"  mouth opening {res['mouth_corr_out']:.3f}   blink {res['blink_corr_out']:.3f}   "
                 f"(read-out on the true frames: {res['mouth_corr_gt']:.3f} / {res['blink_corr_gt']:.3f})")
  if "emotion_transfer_acc" in res:
    per = "  ".join(f"{k} {v:.2f}" for k, v in res["emotion_transfer_per"].items())
    lines.append(f"each emotion asked of {res['transfer_portraits']} portraits through the labels (smile and brow read "
                 "from pixels, corpus renders as the ruler):")
    lines.append(f"  recognised {res['emotion_transfer_acc']:.2f} ({per}); drawn/asked slope: smile "
                 f"{res['smile_slope']:.2f}, brow {res['brow_slope']:.2f}")
  lines += _identity_rows(res)
  return "\n".join(lines)


# ---------------------------------------------------------------------------- identity

IDENTITY_FRAMES = 4   # frames scored per clip: dlib takes ~0.1-0.2 s per face on a CPU core


def _identity_on(identity: bool | None) -> bool:
  """`identity`: None = when the extra is installed; True demands it."""
  if identity and not face_identity.available():
    raise UserError(f"identity similarity needs dlib and its face models: {face_identity.INSTALL_HINT}")
  return face_identity.available() if identity is None else identity


def _identity_rows(res: dict) -> list[str]:
  rows = [(k, res[k]) for k in ("identity_truth", "identity_self", "identity_cross")
          if k in res]
  if not rows:
    return []
  names = {"identity_truth": "portrait vs its clip's true frames", "identity_self": "self-reenactment",
           "identity_cross": "cross-identity (vs the source portrait)"}
  lines = [f"identity similarity to the portrait ({face_identity.MODEL}; dlib distance, < 0.6 = same person):"]
  lines += ["  " + face_identity.format_row(names[k], r) for k, r in rows]
  return lines


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


def clip_controls(attrs: dict) -> Controls:
  """The controls a clip was made with (main gaze, distance, emotion): what evaluation requests."""
  return Controls(gaze=tuple(np.asarray(attrs["gaze"], float)), distance=float(attrs["distance"]),
                  emotion=int(attrs["emotion"]))


def clip_motion(model: MotionModel, params, clip: dict, first_M: np.ndarray, rng, *, steps: int,
                guidance) -> np.ndarray:
  """What stage-2 evaluation scores for one clip: normalised motion [T, M] generated from its
  audio and controls by the window loop that `sample` streams (`motion.WindowLoop`), starting
  from its first frame's (normalised) motion, for as many frames as the clip has."""
  controls = clip_controls(clip["attrs"])
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
    mouth.append(correlation(a, b))
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


def blink_rate(blink_T, fps: float) -> float:
  """Blinks per minute: closings of the eyes (blink rising through 0.5)."""
  b = np.asarray(blink_T) > 0.5
  return float(np.count_nonzero(b[1:] & ~b[:-1]) * 60.0 * fps / max(len(b), 1))


def evaluate_pixels(bundle_dir: str, data_dir: str, readout_dir: str, *, max_clips: int = 20,
                    speech: str | None = None, settings=((10, 0.5),), seed: int = 0,
                    live_hop: int | None = None, live_window: int | None = None,
                    identity: bool | None = None) -> dict:
  """Stage 2 scored on the generated pixels, through the sampler users run.

  For each held-out clip: its first frame is the portrait, its audio drives the
  bundle, and the read-out network measures the frames. Lip sync is the
  correlation of the generated mouth opening with the corpus' mouth track for that
  audio (with `--still`, so head motion cannot help or hurt); dP, blink rate and
  the gaze / distance / emotion controls are measured on normal (moving) output,
  each against the same read-out applied to the true frames. With `speech`, the
  real recording also drives each portrait, scored against the track the corpus'
  own audio->mouth rule derives from it. `live_hop`: generate as live mode does (the audio
  arriving in 20 ms chunks, the window sliding along it `live_hop` frames at a time), with
  `live_window` frames per window (default: what live mode uses, `stream.live_window_for`).
  """
  identity = _identity_on(identity)
  bundle = bundle_lib.load(bundle_dir)
  if live_window is not None:
    if not live_hop:
      raise UserError("--live-window goes with --live-hop (it sizes live mode's windows)")
    cfg = bundle.motion_cfg
    cli.check_range("--live-window", live_window, live_hop + int(cfg.audio.lookahead) + 1, int(cfg.data.window),
                    " frames (the hop and the audio lookahead, at least one more; at most the training window)")
  readout = readout_lib.Readout.load(readout_dir)
  corpus = records.open_corpus(data_dir)
  if "benchmark" not in corpus.splits or not corpus.manifest.get("has_frames", True):
    raise UserError(f"corpus {data_dir} has no benchmark split with frames (pixel evaluation needs portraits)")
  source = corpus.source("benchmark")
  clips = [records.decode_clip(source[i]) for i in range(min(len(source), max_clips))]
  fps = float(corpus.manifest["fps"])
  speech_audio = media.load_audio(speech) if speech else None
  speech_mouth = synthetic.motion_from_audio(speech_audio, int(fps))["mouth_open"] if speech else None

  truth = [(readout(c["frames"]), c["labels"]) for c in clips]
  ref = {
      "mouth_corr": float(np.mean([correlation(r["mouth_open"], lab["mouth_open"]) for r, lab in truth])),
      "delta_p_deg": float(np.mean([delta_p_deg(np.stack([r[a] for a in ANGLES], -1), [0, 1, 2]) for r, _ in truth])),
      "delta_p_label_deg": float(np.mean([delta_p_deg(np.stack([lab[a] for a in ANGLES], -1), [0, 1, 2]) for _, lab in truth])),
      "blink_per_min": float(np.mean([blink_rate(r["blink"], fps) for r, _ in truth])),
      "blink_label_per_min": float(np.mean([blink_rate(lab["blink"], fps) for _, lab in truth])),
  }
  ref.update(_control_errors([(r, c["attrs"]) for (r, _), c in zip(truth, clips)]))
  if identity:
    ref["identity"] = face_identity.pooled([face_identity.identity_similarity(
        c["frames"][0], c["frames"][1:], max_frames=IDENTITY_FRAMES) for c in clips])
  if all(c.get("source") == "synthetic" for c in clips):
    px_truth = [synthetic.pixel_features(c["identity"], c["labels"], c["frames"]) for c in clips]
    ref["mouth_px"] = float(np.mean([correlation(r["mouth_open"], c["labels"]["mouth_open"])
                                     for r, c in zip(px_truth, clips)]))
    ref["blink_px_per_min"] = float(np.mean([blink_rate(r["blink"], fps) for r in px_truth]))
    # The controls read with the same kind of ruler: what the true frames show against what was asked.
    ref.update({f"{k}_px": v for k, v in _control_errors(
        [(synthetic.read_controls(c["identity"], c["labels"], c["frames"]), c["attrs"]) for c in clips]).items()})

  def generate(clip, audio, still, steps, lam):
    """Frames and, where stage 2 works in label space, the labels it asked stage 1 to draw."""
    sampler = stream.StreamingSampler(bundle, clip["frames"][0].astype(np.float32) / 255.0,
                                      controls=clip_controls(clip["attrs"]),
                                      steps=steps, guidance=(lam, bundle.motion_cfg.diffusion.cfg_gaze, 0, 0, 0),
                                      seed=seed, still=still, watermark=None, live_hop=live_hop,
                                      live_window=live_window)
    frames, labels = [], []

    def take(final):
      for motion in sampler.motion_windows(final=final):
        frames.extend(sampler.render(motion))
        labels.extend(label_motion.from_latents(m[:POSE_DIM], m[POSE_DIM:], synthetic.LABEL_NAMES) for m in motion)

    chunk = sampler.spf // 2 if live_hop else audio.size
    for start in range(0, audio.size, chunk):
      sampler.add_audio(audio[start:start + chunk])
      take(False)
    take(True)
    return np.stack(frames), np.stack(labels)

  def pixel_read(clip, frames, labels_TxL, controls=False):
    """Mouth and blink (with `controls`, also gaze, distance, smile and brow: `synthetic.read_controls`)
    read from generated pixels with the corpus' renders of the same (generated) pose and expression
    as the ruler; None where stage 2 does not work in label space."""
    if not label_space or clip.get("source") != "synthetic":
      return None
    labels = {k: labels_TxL[:, i] for i, k in enumerate(synthetic.LABEL_NAMES)}
    out = synthetic.pixel_features(clip["identity"], labels, frames)
    if controls:
      out["controls"] = synthetic.read_controls(clip["identity"], labels, frames)
    return out

  label_space = bundle.motion_cfg.motion_train.motion_source == "labels"
  runs = []
  for steps, lam in settings:
    sync, sync_speech, moving, sync_px, speech_px, blinks_px, ident = [], [], [], [], [], [], []
    controls_px = []
    for clip in clips:
      audio, truth_mouth = clip["audio"], clip["labels"]["mouth_open"]
      frames, labels = generate(clip, audio, True, steps, lam)
      sync.append(correlation(readout(frames)["mouth_open"][:len(truth_mouth)], truth_mouth[:len(frames)]))
      px = pixel_read(clip, frames, labels)
      if px is not None:
        sync_px.append(correlation(px["mouth_open"][:len(truth_mouth)], truth_mouth[:len(frames)]))
      frames, labels = generate(clip, audio, False, steps, lam)
      moving.append((readout(frames), clip["attrs"]))
      if identity:
        ident.append(face_identity.identity_similarity(clip["frames"][0], frames, max_frames=IDENTITY_FRAMES))
      px = pixel_read(clip, frames, labels, controls=True)
      if px is not None:
        blinks_px.append(blink_rate(px["blink"], fps))
        controls_px.append((px["controls"], clip["attrs"]))
      if speech_audio is not None:
        frames, labels = generate(clip, speech_audio, True, steps, lam)
        r = readout(frames)
        sync_speech.append(correlation(r["mouth_open"][:len(speech_mouth)], speech_mouth[:len(r["mouth_open"])]))
        px = pixel_read(clip, frames, labels)
        if px is not None:
          speech_px.append(correlation(px["mouth_open"][:len(speech_mouth)], speech_mouth[:len(frames)]))
    row = {"steps": steps, "cfg_audio": lam, "mouth_corr": float(np.mean(sync)),
           "delta_p_deg": float(np.mean([delta_p_deg(np.stack([r[a] for a in ANGLES], -1), [0, 1, 2]) for r, _ in moving])),
           "blink_per_min": float(np.mean([blink_rate(r["blink"], fps) for r, _ in moving]))}
    if sync_speech:
      row["mouth_corr_speech"] = float(np.mean(sync_speech))
    if sync_px:
      row["mouth_px"] = float(np.mean(sync_px))
      row["blink_px_per_min"] = float(np.mean(blinks_px))
      row["blink_px_ratio"] = row["blink_px_per_min"] / max(ref["blink_label_per_min"], 1e-6)
      row.update({f"{k}_px": v for k, v in _control_errors(controls_px).items()})
    if speech_px:
      row["mouth_px_speech"] = float(np.mean(speech_px))
    row["delta_p_ratio"] = row["delta_p_deg"] / ref["delta_p_deg"]
    row["blink_ratio"] = row["blink_per_min"] / max(ref["blink_per_min"], 1e-6)
    row.update(_control_errors(moving))
    if identity:
      row["identity"] = face_identity.pooled(ident)
    runs.append(row)
  return {"checkpoint": bundle_dir, "clips": len(clips), "truth": ref, "runs": runs, "live_hop": live_hop,
          "live_window": (live_window or stream.live_window_for(bundle.motion_cfg, live_hop)) if live_hop else None,
          "readout_accuracy": readout.meta.get("benchmark_accuracy")}


def demo_strip(bundle_dir: str, data_dir: str, *, clip_index: int = 0, count: int = 8, seed: int = 0) -> np.ndarray:
  """uint8 picture of one held-out clip: rows truth, self-reenactment, generation from its audio."""
  bundle = bundle_lib.load(bundle_dir)
  clip = records.decode_clip(records.open_corpus(data_dir).source("benchmark")[clip_index])
  frames = clip["frames"].astype(np.float32) / 255.0
  idx = np.linspace(1, len(frames) - 1, count).round().astype(int)
  reenact = _metrics_fn(FaceModel(bundle.face_cfg.face))
  recon = np.asarray(reenact(bundle.face_params, frames[:1], frames[idx], frames[idx])[0])
  sampler = stream.StreamingSampler(bundle, frames[0], seed=seed, watermark=None,
                                    controls=clip_controls(clip["attrs"]))
  gen = np.stack(list(stream.generate(sampler, clip["audio"])))[idx].astype(np.float32) / 255.0
  rows = [np.concatenate(list(r), 1) for r in (frames[idx], np.clip(recon, 0, 1), gen)]
  return np.clip(np.round(np.concatenate(rows, 0) * 255), 0, 255).astype(np.uint8)


def _control_errors(reads_and_attrs) -> dict:
  """Requested gaze (deg), distance and emotion against what the read-out sees in the frames."""
  gaze, dist, emo = [], [], []
  for r, a in reads_and_attrs:
    g = np.asarray(a["gaze"], np.float64)
    gaze.append(float(np.degrees(np.abs(np.array([r["gaze_theta"].mean(), r["gaze_phi"].mean()]) - g).mean())))
    dist.append(abs(float(r["distance"].mean()) - float(a["distance"])))
    emo.append(readout_lib.emotion_of(r["smile"], r["brow"]) == int(a["emotion"]))
  return {"gaze_err_deg": float(np.mean(gaze)), "distance_err": float(np.mean(dist)),
          "emotion_acc": float(np.mean(emo))}


def format_pixels(res: dict) -> str:
  t = res["truth"]
  lines = [f"stage 2 on generated pixels: bundle {res['checkpoint']}, {res['clips']} held-out clips "
           "(unseen identities and audio), read by the read-out network"
           + (f"; live mode, hop {res['live_hop']} frames, window {res.get('live_window')}" if res.get("live_hop") else ""),
           f"{'':22s} {'lip sync':>8s} {'real spch':>9s} {'dP deg':>7s} {'dP ratio':>8s} {'blinks/min':>10s} "
           f"{'gaze err':>8s} {'dist err':>8s} {'emotion':>7s}",
           f"{'true frames':22s} {t['mouth_corr']:8.3f} {'':>9s} {t['delta_p_deg']:7.3f} {1.0:8.2f} "
           f"{t['blink_per_min']:10.1f} {t['gaze_err_deg']:8.2f} {t['distance_err']:8.3f} {t['emotion_acc']:7.2f}"]
  for r in res["runs"]:
    name = f"steps {r['steps']}, lambda_A {r['cfg_audio']:g}"
    sp = f"{r['mouth_corr_speech']:9.3f}" if "mouth_corr_speech" in r else f"{'':>9s}"
    lines.append(f"{name:22s} {r['mouth_corr']:8.3f} {sp} {r['delta_p_deg']:7.3f} {r['delta_p_ratio']:8.2f} "
                 f"{r['blink_per_min']:10.1f} {r['gaze_err_deg']:8.2f} {r['distance_err']:8.3f} {r['emotion_acc']:7.2f}")
  lines.append(f"(labels themselves: dP {t['delta_p_label_deg']:.3f} deg, {t['blink_label_per_min']:.1f} blinks/min; "
               "lip sync = correlation of the mouth opening read from the frames with the audio's true mouth track, still head)")
  px_rows = [r for r in res["runs"] if "mouth_px" in r]
  if px_rows:
    lines.append("read from the pixels with the corpus' renders of each generated frame (feature at 0 and 1) as the ruler:")
    lines.append(f"{'':22s} {'lip sync':>8s} {'real spch':>9s} {'blinks/min':>10s} {'vs labels':>9s} "
                 f"{'gaze err':>8s} {'dist err':>8s} {'emotion':>7s}")
    ctl = lambda r: (f" {r['gaze_err_deg_px']:8.2f} {r['distance_err_px']:8.3f} {r['emotion_acc_px']:7.2f}"  # noqa: E731
                     if "gaze_err_deg_px" in r else "")
    if "mouth_px" in t:
      lines.append(f"{'true frames':22s} {t['mouth_px']:8.3f} {'':>9s} {t['blink_px_per_min']:10.1f} "
                   f"{t['blink_px_per_min'] / max(t['blink_label_per_min'], 1e-6):9.2f}" + ctl(t))
    for r in px_rows:
      name = f"steps {r['steps']}, lambda_A {r['cfg_audio']:g}"
      sp = f"{r['mouth_px_speech']:9.3f}" if "mouth_px_speech" in r else f"{'':>9s}"
      lines.append(f"{name:22s} {r['mouth_px']:8.3f} {sp} {r['blink_px_per_min']:10.1f} {r['blink_px_ratio']:9.2f}"
                   + ctl(r))
    lines.append("(controls: each clip's own requested gaze, distance and emotion against what its frames show, "
                 "read by matching renders at a grid of values; gaze err in degrees)")
  if "identity" in t:
    lines += _identity_rows({"identity_truth": t["identity"]})
    for r in res["runs"]:
      lines.append("  " + face_identity.format_row(f"steps {r['steps']}, lambda_A {r['cfg_audio']:g}", r["identity"]))
  return "\n".join(lines)


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
  if (args.workdir is None) == (args.checkpoint is None):
    raise UserError("give exactly one of --workdir (a training run) or --checkpoint (a bundle)")
  # Outputs are checked before the (long) evaluation: a bad name fails at once, and an existing file is
  # only replaced with --overwrite.
  if args.strip:
    if args.stage != 2 or not args.checkpoint:
      raise UserError("--strip is for stage 2 on a bundle: give --stage 2 --checkpoint DIR")
    media.require_output_path(args.strip, (".png",), overwrite=args.overwrite)
  if args.json:
    media.require_output_path(args.json, (".json",), overwrite=args.overwrite)
  if args.stage == 1:
    res = evaluate_stage1(args.workdir, args.data, bundle_dir=args.checkpoint, readout_dir=args.readout,
                          max_clips=args.max_clips, frame_stride=args.frame_stride, motion_from=args.motion_from,
                          identity=args.identity)
    print(format_stage1(res))
  elif args.checkpoint:
    if not args.readout:
      raise UserError("stage 2 on a bundle is scored on its pixels: give --readout FOLDER "
                      "(train one with python -m vasa_jax.readout)")
    settings = [(s_, lam) for s_ in args.steps for lam in args.cfg_audio]
    res = evaluate_pixels(args.checkpoint, args.data, args.readout, max_clips=args.max_clips or 20,
                          speech=args.speech, settings=settings, live_hop=args.live_hop,
                          live_window=args.live_window, identity=args.identity)
    print(format_pixels(res))
    if args.strip:
      media.save_image(args.strip, demo_strip(args.checkpoint, args.data))
      print(f"wrote {args.strip} (rows: truth, self-reenactment from the first frame, generated from the audio)")
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
  p.add_argument("--workdir", help="training run folder (its latest checkpoint is used)")
  p.add_argument("--checkpoint", help="an inference bundle instead of a run folder (stage 2: scored on pixels)")
  p.add_argument("--readout", help="read-out network folder (python -m vasa_jax.readout): pixel-level measures")
  p.add_argument("--speech", help="stage 2 on a bundle: also drive each portrait with this real speech file")
  p.add_argument("--data", required=True, help="corpus folder with benchmark and benchmark_cross splits")
  p.add_argument("--max-clips", type=int, default=None, help="evaluate at most this many clips per split")
  p.add_argument("--frame-stride", type=int, default=4, help="use every Nth frame as a driver")
  p.add_argument("--motion-from", choices=tuple(MOTION_FROM), default="encoders",
                 help="stage 1: drive the decoder with what the pose/dynamics encoders read from the driver "
                 "(default), or with the driver's true labels (and the source's), as teacher-label training "
                 "does: the decoder's ceiling, which tells the encoders' share of the error; labels-pose and "
                 "labels-expression replace only the pose or only the expression by the labels")
  p.add_argument("--steps", type=int, nargs="+", default=[10, 50], help="stage 2: DDIM steps to compare")
  p.add_argument("--cfg-audio", type=float, nargs="+", default=[0.0, 0.5, 1.0],
                 help="stage 2: audio guidance scales to compare")
  p.add_argument("--strip", help="stage 2 on a bundle: also write a PNG of one held-out clip "
                 "(truth, reconstruction, generation)")
  p.add_argument("--live-hop", type=int, help="stage 2 on a bundle: generate as live mode does, the window "
                 "sliding along 20 ms audio chunks this many frames at a time (python -m vasa_jax.app's live tab)")
  p.add_argument("--live-window", type=int, help="with --live-hop: frames per live window (default: what "
                 "live mode uses; at most the training window)")
  p.add_argument("--identity", action=argparse.BooleanOptionalAction, default=None,
                 help="identity similarity of portrait and generated frames (dlib's face embedding, the identity "
                 "extra; default: when installed; --identity demands it, --no-identity skips it)")
  p.add_argument("--json", help="also write the numbers to this JSON file")
  p.add_argument("--overwrite", action="store_true", help="replace --json and --strip files that exist "
                 "(without it, an existing file is an error, checked before anything runs)")
  return p


if __name__ == "__main__":
  cli.main_entry(main, parser())
