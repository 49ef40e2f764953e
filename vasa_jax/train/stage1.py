"""Stage 1 training: losses and one pure, jitted step for the face latent space.

Per example the batch holds frames i (`src`) and j (`drv`) of one clip and a frame
of another identity (`other`). Losses (weights in `config.loss`):
  l1, ssim     reconstruct drv from src's appearance and drv's motion (multi-scale L1, 1 - SSIM)
  region_l1    optional: L1 again where drv differs from src (mouth, eyes, moved edges), which a
               whole-frame mean hardly sees
  gan, fm      hinge GAN and discriminator feature matching on the reconstruction
  pose_cons    VASA pairwise transfer: D(V_j, id_j, pose_i, dyn_j) == D(V_i, id_i, pose_i, dyn_j)
  dyn_cons     the same with dynamics swapped: D(V_j, id_j, pose_j, dyn_i) == D(V_i, id_i, pose_j, dyn_i)
  cross_id     VASA cross-identity: src driven by other's pose+dyn keeps src's identity
               (cosine of a frozen-per-step identity embedding)
  motion_cos   MegaPortraits-style: the dynamics read back from the cross-identity
               output match other's dynamics (CosFace over the batch)
               (with cross_id and motion_cos both 0 there is no cross-identity decode and
               no identity-net update at all)
  pose_sup     optional: z_pose follows per-frame pose labels when the data has them: the angles,
               and also translation and -log distance where those labels exist
  teacher_labels  optional share of examples whose recon and cross decodes take the true labels
               (pose and `DYN_LABELS`) instead of the encoders' reading: the decoder learns
               labels -> pixels directly; the encoders learn from pose_sup and dyn_sup
  dyn_sup      optional: the first dims of z_dyn follow per-frame expression labels (`DYN_LABELS`:
               mouth, blink, gaze, brow, smile) when the data has them, both as encoded from
               the real frames and as read back from the cross-identity output, or from the
               reconstruction where there is no cross decode (so the decoder
               must draw the driver's mouth and eyes for the encoder to find them). Synthetic
               clips carry exact labels; real clips get landmark-derived pseudo-labels of the
               same names. Without labels the term is absent and the recipe is VASA's own.
The identity network is trained in the same step with CosFace on real frames.

`train.trainable = "motion_encoders"` is a second phase for a run whose decodes were all driven by
the true labels (`teacher_labels = 1`): there the decoder never saw what the encoders read, so the
pose and dynamics encoders can be re-fitted to the labels on their own, far more cheaply than a full
step (no decode), with squared error on standardised labels (`label_std`: blinks are rare, and an
absolute error learns to read none) and the free z_dyn dims held where they were (`free_anchor`, a
frozen copy of the dynamics encoder kept in the state), since the decoder reads the source's free
dims. Everything else stays frozen. Start it from the first phase with `train.init_from`.
"""

import functools
from typing import Any

import flax
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vasa_jax import label_motion
from vasa_jax.data import face_regions, records
from vasa_jax.face_model import FaceModel
from vasa_jax.label_motion import DYN_LABELS, POSE_LABELS
from vasa_jax.models import discriminator as disc_lib
from vasa_jax.models import identity_net
from vasa_jax.train import state as state_lib

ANGLE_LABELS = ("yaw", "pitch", "roll")


@flax.struct.dataclass
class State:
  step: jax.Array
  params: dict[str, Any]      # {"gen", "disc", "idnet", "id_classes"}
  opt: dict[str, Any]         # optax states per group
  ema: Any                    # EMA of params["gen"]: what sampling uses


class Stage1:
  """Holds the modules and optimisers; its methods are pure functions of their arguments."""

  def __init__(self, cfg: ml_collections.ConfigDict, num_classes: int, class_of: dict[int, int] | None = None,
               label_std: dict[str, np.ndarray] | None = None):
    """`class_of`: corpus identity -> identity-net class (the train split's identities, in order).
    `label_std`: {"pose": [6], "dyn": [len(DYN_LABELS)]} spreads of the training labels, which
    standardise the errors of the `motion_encoders` phase."""
    self.cfg = cfg
    self.encoders_only = cfg.train.trainable == "motion_encoders"
    if cfg.train.trainable not in ("all", "motion_encoders"):
      raise ValueError(f"train.trainable must be 'all' or 'motion_encoders', got {cfg.train.trainable!r}")
    if self.encoders_only and label_std is None:
      raise ValueError("train.trainable='motion_encoders' needs the labels' spreads (label_std)")
    self.label_std = None if label_std is None else {k: np.asarray(v, np.float32) for k, v in label_std.items()}
    self.class_of = class_of or {}
    self.face = FaceModel(cfg.face)  # The generator: stage 1's one entry point, as inference uses it.
    self.disc = disc_lib.MultiScaleDiscriminator(cfg.disc.widths, cfg.disc.scales)
    self.idnet = identity_net.IdentityNet(cfg.idnet.widths, cfg.idnet.embed_dim, cfg.idnet.input_size)
    self.num_classes = num_classes
    # A run whose GAN never starts does no discriminator work at all (it is the
    # costliest part of a step that would otherwise be multiplied by zero).
    self.gan_used = cfg.train.gan_start < cfg.train.steps
    # Likewise the cross-identity decode exists only for the losses that read it.
    self.cross_used = bool(cfg.loss.cross_id or cfg.loss.motion_cos)
    t = cfg.train
    self.tx = {
        "gen": optax.chain(optax.clip_by_global_norm(t.grad_clip), optax.adam(gen_lr(t), b1=t.b1, b2=t.b2)),
        "disc": optax.chain(optax.clip_by_global_norm(t.grad_clip), optax.adam(t.lr_disc, b1=t.b1, b2=t.b2)),
        "idnet": optax.adam(t.lr_idnet),
    }

  # ------------------------------------------------------------------ init

  def init(self, rng) -> State:
    s = self.cfg.face.image_size
    img = jnp.zeros((1, s, s, 3), jnp.float32)
    k_gen, k_disc, k_id, k_cls = jax.random.split(rng, 4)
    params = {
        "gen": self.face.init(k_gen),
        "disc": self.disc.init(k_disc, img),
        "idnet": self.idnet.init(k_id, img),
    }
    params["id_classes"] = jax.random.normal(k_cls, (self.cfg.idnet.embed_dim, self.num_classes)) * 0.05
    return self._state(params)

  def warm_start(self, gen_params, rng) -> State:
    """A new run (step 0, fresh optimisers) from another run's generator weights (`train.init_from`)."""
    state = self.init(rng)
    return self._state(dict(state.params, gen=_overlay(state.params["gen"], gen_params)))

  def _state(self, params) -> State:
    if self.encoders_only:
      params = dict(params, anchor=params["gen"]["params"]["dynamics"])
    opt = {
        "gen": self.tx["gen"].init(params["gen"]),
        "disc": self.tx["disc"].init(params["disc"]),
        "idnet": self.tx["idnet"].init((params["idnet"], params["id_classes"])),
    }
    return State(step=jnp.zeros((), jnp.int32), params=params, opt=opt, ema=params["gen"])

  # ------------------------------------------------------------------ model calls

  def encode(self, gen_params, img, motion=None):
    return self.face.encode(gen_params, img, motion)

  def encode_motion(self, gen_params, img):
    return self.face.encode_motion(gen_params, img)

  def decode(self, gen_params, app, z_pose, z_dyn):
    return self.face.decode(gen_params, app, z_pose, z_dyn)

  # ------------------------------------------------------------------ losses

  def _generate(self, gen_params, src, drv, other, keep_free=None, teacher=None):
    """All generated images of a step, decoded as one batch (one decoder in the graph).

    Batching the decodes keeps the compiled step small (compile time grows with
    the graph) and gives the convolutions bigger, more efficient batches.
    `teacher`: (mask_B, labels) where the recon and cross decodes take the drivers'
    true pose and expression labels instead of what the encoders read.
    """
    c = self.cfg.loss
    b = src.shape[0]
    n = len(DYN_LABELS)
    # The pose and dynamics encoders read source, driver and other frame as one batch: one copy of
    # them in the compiled step (a second copy inside `encode` added ~10% to the step's fusions).
    motion = self.encode_motion(gen_params, jnp.concatenate([src, drv, other]))
    part = lambda i: jax.tree.map(lambda x: x[i * b:(i + 1) * b], motion)  # noqa: E731
    m_o = part(2)
    if c.pose_cons or c.dyn_cons:  # Their decodes take the driver's appearance too.
      both = self.encode(gen_params, jnp.concatenate([src, drv]), jax.tree.map(lambda x: x[:2 * b], motion))
      a_s = jax.tree.map(lambda x: x[:b], both)
      a_d = jax.tree.map(lambda x: x[b:], both)
    else:  # Appearance is encoded only where a decode reads it: the dearest encoder by far.
      a_s = self.encode(gen_params, src, part(0))
      a_d = part(1)
    pose_recon, dyn_recon = a_d["z_pose"], a_d["z_dyn"]
    pose_cross, dyn_cross = m_o["z_pose"], m_o["z_dyn"]
    if teacher is not None:
      # Label-driven decodes: the decoder learns the labels -> pixels map directly, at full
      # strength from the first step, instead of through encoders still learning to read.
      mask, lab = teacher
      m = mask[:, None]
      pose_recon = jnp.where(m, lab["drv_pose"], pose_recon)
      pose_cross = jnp.where(m, lab["other_pose"], pose_cross)
      dyn_recon = _select_dims(m, lab["drv_dyn"], dyn_recon, labelled=True)
      dyn_cross = _select_dims(m, lab["other_dyn"], dyn_cross, labelled=True)
    if keep_free is not None:
      # Where keep_free_B is set, the drivers' free (unlabelled) z_dyn dims are replaced by the
      # source's: the decoder learns to render motion from the labelled dims alone, the way
      # label-space stage-2 motion is decoded (`label_motion.to_latents`).
      keep = keep_free[:, None]
      dyn_recon = _select_dims(keep, a_s["z_dyn"][:, n:], dyn_recon, labelled=False)
      dyn_cross = _select_dims(keep, a_s["z_dyn"][:, n:], dyn_cross, labelled=False)
    app_s = a_s
    if teacher is not None and "z_pose" in self.face.app_keys:
      # The 2D skip is placed by the source's pose: in label-driven decodes that is the source's
      # true pose too, so source and target poses agree while the pose encoder is still learning.
      app_s = dict(a_s, z_pose=jnp.where(teacher[0][:, None], teacher[1]["src_pose"], a_s["z_pose"]))
      if "src_dyn" in self.face.app_keys:
        app_s["src_dyn"] = _select_dims(teacher[0][:, None], teacher[1]["src_dyn"], a_s["src_dyn"], labelled=True)
    jobs = [("recon", app_s, pose_recon, dyn_recon)]
    if self.cross_used:
      jobs += [("cross", app_s, pose_cross, dyn_cross)]
    if c.pose_cons:
      jobs += [("pose_j", a_d, a_s["z_pose"], a_d["z_dyn"]), ("pose_i", a_s, a_s["z_pose"], a_d["z_dyn"])]
    if c.dyn_cons:
      jobs += [("dyn_j", a_d, a_d["z_pose"], a_s["z_dyn"]), ("dyn_i", a_s, a_d["z_pose"], a_s["z_dyn"])]
    out = {"a_s": a_s, "a_d": a_d, "m_o": m_o}
    keys = [k for k in jobs[0][1] if k != "z_dyn"]  # Every appearance entry (decode reads what it needs).
    if self.cfg.face.remat_decodes:
      # One job at a time, each decode recomputed in the backward pass: what is kept for the gradient
      # is each job's inputs and image, not the activations of all the decodes at once. Stacked (not
      # concatenated) so every job's batch keeps its own split over the data axis.
      stack = lambda xs: jnp.stack(xs, axis=0)  # noqa: E731
      app = {k: stack([j[1][k] for j in jobs]) for k in keys}
      one = jax.checkpoint(lambda a, pose, dyn: self.decode(gen_params, a, pose, dyn))
      # (XLA's cost analysis counts this loop's body once: `perf.flops` adds the other trips.)
      _, images = jax.lax.scan(lambda c, x: (c, one(*x)), None,
                               (app, stack([j[2] for j in jobs]), stack([j[3] for j in jobs])))
      for n, job in enumerate(jobs):
        out[job[0]] = images[n]
      return out
    cat = lambda xs: jnp.concatenate(xs, axis=0)  # noqa: E731
    app = {k: cat([j[1][k] for j in jobs]) for k in keys}
    images = self.decode(gen_params, app, cat([j[2] for j in jobs]), cat([j[3] for j in jobs]))
    for n, job in enumerate(jobs):
      out[job[0]] = images[n * b:(n + 1) * b]
    return out

  def gen_loss(self, gen_params, params, batch, gan_on, rng=None):
    c = self.cfg.loss
    src, drv, other = batch["src"], batch["drv"], batch["other"]
    b = src.shape[0]
    keep_free = teacher = None
    k_free, k_teach = jax.random.split(rng) if rng is not None else (None, None)
    if c.dyn_free_from_src and rng is not None and "src_dyn" in batch:
      keep_free = jax.random.bernoulli(k_free, c.dyn_free_from_src, (b,))
    if c.teacher_labels and rng is not None and "other_pose" in batch and "drv_dyn" in batch:
      teacher = (jax.random.bernoulli(k_teach, c.teacher_labels, (b,)),
                 {k: batch[k] for k in ("src_pose", "src_dyn", "drv_pose", "drv_dyn", "other_pose", "other_dyn")})
    out = self._generate(gen_params, src, drv, other, keep_free, teacher)
    recon = out["recon"]
    terms = {"l1": multiscale_l1(recon, drv), "ssim": 1.0 - ssim(recon, drv)}
    if c.region_l1:
      terms["region_l1"] = changed_region_l1(recon, drv, src)
    if c.face_regions:
      if "drv_regions" not in batch:
        raise ValueError("loss.face_regions needs the drivers' eye and mouth regions: a synthetic corpus "
                         "or one written by prepare (face-mesh landmarks)")
      terms["face_regions"] = face_region_l1(recon, drv, batch["drv_regions"])
    if c.pose_cons:
      terms["pose_cons"] = jnp.mean(jnp.abs(out["pose_j"] - out["pose_i"]))
    if c.dyn_cons:
      terms["dyn_cons"] = jnp.mean(jnp.abs(out["dyn_j"] - out["dyn_i"]))
    if self.cross_used:
      cross = out["cross"]
      emb = self.idnet.apply(jax.lax.stop_gradient(params["idnet"]), jnp.concatenate([cross, src]))
      terms["cross_id"] = 1.0 - jnp.mean(jnp.sum(emb[:b] * jax.lax.stop_gradient(emb[b:]), -1))
      dyn_back = self.encode_motion(gen_params, cross)["z_dyn"]
      terms["motion_cos"] = batch_cosface(dyn_back, jax.lax.stop_gradient(out["m_o"]["z_dyn"]),
                                          scale=c.motion_scale, margin=c.motion_margin)
      back_target = "other_dyn"
    else:
      # No cross decode: the dynamics are read back from the reconstruction instead, so the
      # decoder must still draw the driver's mouth and eyes where the encoder can find them.
      dyn_back = self.encode_motion(gen_params, recon)["z_dyn"]
      back_target = "drv_dyn"
    if c.pose_sup and "src_pose" in batch:
      n = batch["src_pose"].shape[-1] if c.pose_sup_all else len(ANGLE_LABELS)
      pred = jnp.concatenate([out["a_s"]["z_pose"][:, :n], out["a_d"]["z_pose"][:, :n]])
      target = jnp.concatenate([batch["src_pose"][:, :n], batch["drv_pose"][:, :n]])
      terms["pose_sup"] = jnp.mean(jnp.abs(pred - target))
    if c.dyn_sup and "src_dyn" in batch:
      n = batch["src_dyn"].shape[-1]
      pred = jnp.concatenate([out["a_s"]["z_dyn"][:, :n], out["a_d"]["z_dyn"][:, :n], dyn_back[:, :n]])
      target = jnp.concatenate([batch["src_dyn"], batch["drv_dyn"], batch[back_target]])
      terms["dyn_sup"] = sup_error(pred, target, c.dyn_sup_squared)
    if self.gan_used:
      d_out = self.disc.apply(params["disc"], jnp.concatenate([recon, drv]))
      d_fake = [(logits[:b], [f[:b] for f in feats]) for logits, feats in d_out]
      d_real = [(logits[b:], [f[b:] for f in feats]) for logits, feats in d_out]
      terms["gan"] = disc_lib.hinge_g_loss(d_fake) * gan_on
      terms["fm"] = disc_lib.feature_matching_loss(d_real, d_fake) * gan_on
    total = sum(getattr(c, k) * v for k, v in terms.items())
    return total, (terms, out)

  def encoder_loss(self, gen_params, anchor, batch):
    """The `motion_encoders` phase: pose and labelled z_dyn dims read from all three frames of each
    example, squared error on standardised labels; the free z_dyn dims stay at the frozen copy's."""
    imgs = jnp.concatenate([batch["src"], batch["drv"], batch["other"]])
    m = self.encode_motion(gen_params, imgs)
    n = len(DYN_LABELS)
    terms = {}
    pose = jnp.concatenate([batch[f"{w}_pose"] for w in ("src", "drv", "other")])
    k = pose.shape[-1]
    terms["pose_sup"] = jnp.mean(((m["z_pose"][:, :k] - pose) / self.label_std["pose"][:k]) ** 2)
    dyn = jnp.concatenate([batch[f"{w}_dyn"] for w in ("src", "drv", "other")])
    terms["dyn_sup"] = jnp.mean(((m["z_dyn"][:, :n] - dyn) / self.label_std["dyn"]) ** 2)
    frozen = self.face.net.apply({"params": {"dynamics": anchor}}, imgs, method=lambda net, x: net.dynamics(x))
    terms["free_anchor"] = jnp.mean((m["z_dyn"][:, n:] - jax.lax.stop_gradient(frozen[:, n:])) ** 2)
    c = self.cfg.loss
    total = c.pose_sup * terms["pose_sup"] + c.dyn_sup * terms["dyn_sup"] + c.free_anchor * terms["free_anchor"]
    return total, terms

  def _encoder_step(self, state: State, batch: dict, rng) -> tuple[State, dict]:
    p = state.params

    def grads_of(part, _):
      (total, terms), grads = jax.value_and_grad(self.encoder_loss, has_aux=True)(p["gen"], p["anchor"], part)
      return grads, {"total": total, **terms}

    grads, terms = state_lib.accumulate(grads_of, batch, rng, self.cfg.train.microbatches)
    total = terms.pop("total")
    # Only the pose and dynamics encoders learn; every other weight keeps its value.
    trained = ("pose", "dynamics")
    grads = {"params": {k: (g if k in trained else jax.tree.map(jnp.zeros_like, g))
                        for k, g in grads["params"].items()}}
    finite = jnp.isfinite(total)

    def update():
      updates, opt = self.tx["gen"].update(grads, state.opt["gen"], p["gen"])
      gen = optax.apply_updates(p["gen"], updates)
      return gen, opt, state_lib.ema_update(state.ema, gen, state.step, self.cfg.train.ema_decay)

    gen, opt, ema = state_lib.if_finite(finite, update, (p["gen"], state.opt["gen"], state.ema))
    metrics = {"loss/gen": total, "finite": finite.astype(jnp.float32), **{f"terms/{k}": v for k, v in terms.items()}}
    return State(step=state.step + 1, params=dict(p, gen=gen), opt=dict(state.opt, gen=opt), ema=ema), metrics

  def disc_loss(self, disc_params, real, fake):
    b = real.shape[0]
    outs = self.disc.apply(disc_params, jnp.concatenate([real, fake]))
    real_outs = [(logits[:b], feats) for logits, feats in outs]
    fake_outs = [(logits[b:], feats) for logits, feats in outs]
    return disc_lib.hinge_d_loss(real_outs, fake_outs)

  def idnet_loss(self, id_params, batch):
    idnet_params, classes = id_params
    imgs = jnp.concatenate([batch["src"], batch["other"]])
    labels = jnp.concatenate([batch["src_class"], batch["other_class"]])
    emb = self.idnet.apply(idnet_params, imgs)
    return identity_net.cosface_loss(emb, classes, labels, scale=self.cfg.loss.id_scale,
                                     margin=self.cfg.loss.id_margin)

  # ------------------------------------------------------------------ the step

  def train_step(self, state: State, batch: dict, rng) -> tuple[State, dict]:
    """One simultaneous update of generator, discriminator and identity net."""
    batch = prepare_batch(batch)
    if self.encoders_only:
      return self._encoder_step(state, batch, rng)
    p = state.params
    gan_on = (state.step >= self.cfg.train.gan_start).astype(jnp.float32)
    (g_grads, d_grads, i_grads), scalars = state_lib.accumulate(
        lambda part, r: self.grads(p, part, gan_on, r), batch, rng, self.cfg.train.microbatches)
    g_total, d_total, i_total = scalars.pop("loss/gen"), scalars.pop("loss/disc"), scalars.pop("loss/idnet")
    finite = jnp.isfinite(g_total) & jnp.isfinite(d_total) & jnp.isfinite(i_total)

    def update():
      new_params, new_opt = dict(p), dict(state.opt)
      for group, params_g, grads in (("gen", p["gen"], g_grads), ("disc", p["disc"], d_grads),
                                     ("idnet", (p["idnet"], p["id_classes"]), i_grads)):
        updates, new_opt[group] = self.tx[group].update(grads, state.opt[group], params_g)
        applied = optax.apply_updates(params_g, updates)
        if group == "idnet":
          new_params["idnet"], new_params["id_classes"] = applied
        else:
          new_params[group] = applied
      ema = state_lib.ema_update(state.ema, new_params["gen"], state.step, self.cfg.train.ema_decay)
      return new_params, new_opt, ema

    # A non-finite loss never reaches the weights: the step is skipped and reported.
    new_params, new_opt, ema = state_lib.if_finite(finite, update, (dict(p), dict(state.opt), state.ema))
    metrics = {"loss/gen": g_total, "loss/disc": d_total, "loss/idnet": i_total,
               "finite": finite.astype(jnp.float32), **scalars}
    return State(step=state.step + 1, params=new_params, opt=new_opt, ema=ema), metrics

  def grads(self, p, batch, gan_on, rng):
    """Gradients of the generator, discriminator and identity net on one (micro)batch, and its
    scalar metrics: what `train_step` averages over `train.microbatches` and applies."""
    (g_total, (terms, out)), g_grads = jax.value_and_grad(self.gen_loss, has_aux=True)(
        p["gen"], p, batch, gan_on, rng)
    if self.gan_used:
      fake = jax.lax.stop_gradient(out["recon"])
      d_total, d_grads = jax.value_and_grad(self.disc_loss)(p["disc"], batch["drv"], fake)
      d_grads = jax.tree.map(lambda g: g * gan_on, d_grads)
    else:
      d_total, d_grads = jnp.zeros(()), jax.tree.map(jnp.zeros_like, p["disc"])
    if self.cross_used:  # The identity net serves only the cross-identity loss.
      i_total, i_grads = jax.value_and_grad(self.idnet_loss)((p["idnet"], p["id_classes"]), batch)
    else:
      i_total, i_grads = jnp.zeros(()), jax.tree.map(jnp.zeros_like, (p["idnet"], p["id_classes"]))
    scalars = {"loss/gen": g_total, "loss/disc": d_total, "loss/idnet": i_total,
               "psnr/recon": psnr(out["recon"], batch["drv"]), **{f"terms/{k}": v for k, v in terms.items()}}
    return (g_grads, d_grads, i_grads), scalars

  def host_batch(self, raw: dict) -> dict:
    return batch_from_pipeline(raw, self.class_of)

  def preview(self, gen_params, batch) -> jax.Array:
    """Rows of (source, driver, reconstruction, pose swap, cross-identity) -> one image grid."""
    batch = prepare_batch(batch)
    src, drv, other = batch["src"], batch["drv"], batch["other"]
    a_s = self.encode(gen_params, src)
    a_d = self.encode_motion(gen_params, drv)
    m_o = self.encode_motion(gen_params, other)
    recon = self.decode(gen_params, a_s, a_d["z_pose"], a_d["z_dyn"])
    pose_swap = self.decode(gen_params, a_s, m_o["z_pose"], a_s["z_dyn"])
    cross = self.decode(gen_params, a_s, m_o["z_pose"], m_o["z_dyn"])
    cols = [src, drv, recon, other, pose_swap, cross]
    rows = jnp.concatenate(cols, axis=2)           # [B, H, 6W, 3]
    return rows.reshape(-1, rows.shape[2], 3)      # [B*H, 6W, 3]


def _select_dims(mask_Bx1, new, z_dyn_BxZ, *, labelled: bool):
  """z_dyn with its labelled dims (`DYN_LABELS`, the first ones) or its free dims (the rest) taken
  from `new` where `mask_Bx1` is set; the other part is kept."""
  n = len(DYN_LABELS)
  if labelled:
    return jnp.concatenate([jnp.where(mask_Bx1, new, z_dyn_BxZ[:, :n]), z_dyn_BxZ[:, n:]], -1)
  return jnp.concatenate([z_dyn_BxZ[:, :n], jnp.where(mask_Bx1, new, z_dyn_BxZ[:, n:])], -1)


def label_spreads(corpus, split: str, max_clips: int = 200) -> dict[str, np.ndarray]:
  """Per-dimension spreads of the pose and expression targets over (up to `max_clips` of) a split:
  {"pose": [6], "dyn": [len(DYN_LABELS)]}; what the `motion_encoders` phase divides errors by."""
  source = corpus.source(split)
  pose, dyn = [], []
  for i in range(min(len(source), max_clips)):
    labels = records.decode_clip(source[i], frame_indices=[])["labels"]
    if not all(k in labels for k in (*POSE_LABELS, *DYN_LABELS)):
      raise ValueError(f"split {split!r} lacks pose or expression labels: the motion_encoders phase needs "
                       f"{', '.join((*POSE_LABELS, *DYN_LABELS))}")
    pose.append(label_motion.pose_target(labels))
    dyn.append(label_motion.dyn_target(labels))
  return {"pose": np.maximum(np.concatenate(pose).std(0), 1e-3),
          "dyn": np.maximum(np.concatenate(dyn).std(0), 1e-3)}


def gen_lr(t: ml_collections.ConfigDict):
  """The generator's learning rate: constant, or with `lr_final` < 1 a cosine from lr_gen down to
  lr_final * lr_gen at train.steps (the last steps average out the noise of a small batch)."""
  if t.lr_final >= 1.0:
    return t.lr_gen
  return optax.cosine_decay_schedule(t.lr_gen, max(int(t.steps), 1), alpha=t.lr_final)


def prepare_batch(batch: dict) -> dict:
  """uint8 frames -> float [0, 1]; keeps the other keys."""
  out = dict(batch)
  for k in ("src", "drv", "other"):
    if out[k].dtype == jnp.uint8:
      out[k] = out[k].astype(jnp.float32) / 255.0
  return out


def batch_from_pipeline(raw: dict, class_of: dict[int, int]) -> dict:
  """Pipeline batch -> the arrays the step uses (host side, numpy)."""
  lookup = np.vectorize(lambda i: class_of.get(int(i), 0), otypes=[np.int32])
  batch = {"src": raw["src_BxHxWx3"], "drv": raw["drv_BxHxWx3"], "other": raw["other_BxHxWx3"],
           "src_class": lookup(raw["src_id_B"]), "other_class": lookup(raw["other_id_B"])}
  labels = raw.get("src_labels", {})
  if all(k in labels for k in POSE_LABELS):
    for who in ("src", "drv", "other"):
      batch[f"{who}_pose"] = label_motion.pose_target(raw[f"{who}_labels"])
  elif all(k in labels for k in ANGLE_LABELS):  # Angles only: the first three pose dims.
    for who in ("src", "drv"):
      batch[f"{who}_pose"] = np.stack([raw[f"{who}_labels"][k] for k in ANGLE_LABELS], -1).astype(np.float32)
  if all(k in labels for k in DYN_LABELS):
    for who in ("src", "drv", "other"):
      batch[f"{who}_dyn"] = label_motion.dyn_target(raw[f"{who}_labels"])
  if "drv_regions_Bx3x4" in raw:
    batch["drv_regions"] = np.asarray(raw["drv_regions_Bx3x4"], np.float32)
  return batch


# ---------------------------------------------------------------------- image losses


def multiscale_l1(x, y, scales: int = 3):
  loss = 0.0
  for s in range(scales):
    if s:
      b, h, w, c = x.shape
      x = jax.image.resize(x, (b, h // 2, w // 2, c), "linear")
      y = jax.image.resize(y, (b, h // 2, w // 2, c), "linear")
    loss = loss + jnp.mean(jnp.abs(x - y))
  return loss / scales


def _overlay(fresh, base):
  """`fresh` with every weight that `base` has replaced by base's: a run started from weights
  that lack a module its config adds (checked by `loop._warm_start_weights`)."""
  if isinstance(fresh, dict):
    return {k: _overlay(v, base[k]) if k in base else v for k, v in fresh.items()}
  return base


def sup_error(pred, target, squared: bool):
  """Label supervision: mean absolute error, or squared error. An absolute error learns the median,
  and the median blink is 'open' in every context (eyes are shut in ~5% of frames): an encoder
  trained on it never reads a blink."""
  d = pred - target
  return jnp.mean(d * d) if squared else jnp.mean(jnp.abs(d))


def changed_region_l1(x, y, src, threshold: float = 0.08):
  """L1 over the pixels where the driver differs from the source (mouth, eyes, moved edges).

  Those few pixels are what reenactment is about, and a whole-frame mean hardly sees
  them: a 128^2 frame's mouth is ~1% of its pixels. Needs no labels or landmarks.
  """
  mask = (jnp.max(jnp.abs(y - src), axis=-1, keepdims=True) > threshold).astype(x.dtype)
  return jnp.sum(jnp.abs(x - y) * mask) / (3.0 * jnp.sum(mask) + 1.0)


def face_region_l1(x, y, regions_Bx3x4):
  """L1 inside the driver's eyes and inside its mouth (`face_regions` ellipses), each region's mean
  error, averaged over the two: eyes are ~2% of a 128^2 frame and a blink ~5% of frames, so a
  whole-frame loss lets a decoder draw every eye open (measured: it never learnt to shut one)."""
  m = face_regions.masks(regions_Bx3x4, x.shape[1], xp=jnp)
  err = jnp.abs(x - y).mean(-1)
  eyes = jnp.maximum(m["eye_a"], m["eye_b"])
  per = [jnp.sum(err * r) / (jnp.sum(r) + 1.0) for r in (eyes, m["mouth"])]
  return (per[0] + per[1]) / 2


def ssim(x, y, window: int = 7):
  """Mean SSIM with a uniform window (images in [0, 1])."""
  c1, c2 = 0.01 ** 2, 0.03 ** 2
  pool = functools.partial(flax.linen.avg_pool, window_shape=(window, window), strides=(1, 1))
  mx, my = pool(x), pool(y)
  vx, vy = pool(x * x) - mx * mx, pool(y * y) - my * my
  cov = pool(x * y) - mx * my
  s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
  return jnp.mean(s)


def psnr(x, y):
  mse = jnp.mean((jnp.clip(x, 0, 1) - y) ** 2)
  return -10.0 * jnp.log10(mse + 1e-10)


def batch_cosface(a_BxD, b_BxD, *, scale: float, margin: float):
  """Each a_i must be closer (in cosine) to b_i than to any other b_j, by a margin."""
  a = a_BxD / (jnp.linalg.norm(a_BxD, axis=-1, keepdims=True) + 1e-6)
  b = b_BxD / (jnp.linalg.norm(b_BxD, axis=-1, keepdims=True) + 1e-6)
  cos = a @ b.T
  n = cos.shape[0]
  logits = scale * (cos - margin * jnp.eye(n, dtype=cos.dtype))
  return -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=-1)))
