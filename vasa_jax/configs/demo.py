"""Demo run: 128x128, trainable on a 2-core CPU; what the bundled demo checkpoint uses.

Data:  python -m vasa_jax.data.synthetic --out data/syn128 --identities 200 --clips-per-identity 3 --frames 100 --resolution 128
Run:   python -m vasa_jax.train --config configs/demo.py --data data/syn128 --workdir runs/demo_stage1
       python -m vasa_jax.train --stage 2 --config configs/demo.py --data data/syn128 --workdir runs/demo_stage2
Eval:  python -m vasa_jax.evaluate --stage 1 --data data/syn128 --workdir runs/demo_stage1
Expect: ~0.65 s per stage-1 step and ~0.55 s per stage-2 step on a quiet 2-core CPU. The README's
        "The demo checkpoint" section lists the exact commands (and step counts) of the shipped bundle
        and what it measured.

Which levers (README, "Making the demo talk") this run uses, and why:
- Stage 1 is tied to the corpus' labels: z_pose follows the six pose labels (`pose_sup_all`), the first
  eight z_dyn dims follow mouth, blink, gaze, brow and smile (`dyn_sup`), and every reconstruction
  decode is driven by the true labels (`teacher_labels = 1`) with the source's free z_dyn dims
  (`dyn_free_from_src = 1`). The decoder learns labels -> pixels directly; the encoders learn to read
  labels from pixels. Real video supplies landmark-derived pseudo-labels under the same names.
- The renderer is a small norm-free U-Net (`render_unet`): the source's 64^2 features and its pixels,
  warped once to the target pose by the face plane (`skip_channels`, `skip_pixels`), plus its unwarped
  pixels for the background, enter at 64^2; the projected volume joins at 32^2; a 16^2 bottleneck
  sees the whole face. Every block is FiLM-modulated by z_id, the target's and the source's z_dyn and
  both poses (`render_dyn`), so it can paint what changed: an open mouth, closed eyelids.
- An extra L1 on the pixels where driver and source differ (`region_l1`): the mouth is ~1% of a frame.
- The pose and dynamics encoders read every pixel (`motion_s2d`).
- Only what a loss reads is computed: pose_cons, the cross-identity decode (cross_id, motion_cos) and
  the identity net are off, the appearance encoder runs on the source alone and has no 3D block
  (`enc_vol_blocks = 0`), the GAN never starts. The dynamics are read back from the reconstruction
  (`dyn_sup`), so the decoder must draw the driver's mouth and eyes where the encoder finds them.
  A step costs ~56 GFLOP instead of ~116.
- The generator's learning rate decays (cosine) to 5% of 5e-4 over the run (`lr_final`).
- Stage 2 generates label-space motion (`motion_source = "labels"`), written into the portrait's latents;
  its gaze and distance controls enter centred and scaled (`control_norm`).
"""

import ml_collections

from vasa_jax.configs import base


def get_config() -> ml_collections.ConfigDict:
  c = base.get_config()
  c.name = "demo"
  c.face.motion_s2d = True
  c.face.render_dyn = True
  c.face.skip_channels = 32
  c.face.skip_pixels = True
  c.face.render_unet = True
  c.face.enc_vol_blocks = 0
  c.loss.cross_id = 0.0
  c.loss.motion_cos = 0.0
  c.loss.region_l1 = 1.0
  c.loss.pose_cons = 0.0
  c.loss.pose_sup_all = True
  c.loss.dyn_sup = 0.5
  c.loss.dyn_free_from_src = 1.0
  c.face.free_dyn_from_portrait = True
  c.loss.teacher_labels = 1.0
  c.train.gan_start = 100000
  c.train.lr_gen = 5e-4
  c.train.lr_final = 0.05
  c.train.steps = 5500
  c.train.b1 = 0.9
  c.motion_train.motion_source = "labels"
  c.motion.control_norm = True
  return c
