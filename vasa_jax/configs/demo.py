"""Demo run: 128x128, trainable on a 2-core CPU; what the bundled demo checkpoint uses.

Data:  python -m vasa_jax.data.synthetic --out data/syn128 --identities 200 --clips-per-identity 3 --frames 100 --resolution 128
Run:   python -m vasa_jax.train --config configs/demo.py --data data/syn128 --workdir runs/demo_stage1
       python -m vasa_jax.train --stage 2 --config configs/demo.py --data data/syn128 --workdir runs/demo_stage2
Eval:  python -m vasa_jax.evaluate --stage 1 --data data/syn128 --workdir runs/demo_stage1
Expect: ~1.4 s per stage-1 step and ~0.55 s per stage-2 step on a quiet 2-core CPU. The README's
        "The demo checkpoint" section lists the exact commands (and step counts) of the shipped bundle
        and what it measured.

Which levers (README, "Making the demo talk") this run uses, and why:
- Stage 1 is tied to the corpus' labels: z_pose follows the six pose labels (`pose_sup_all`), the first
  eight z_dyn dims follow mouth, blink, gaze, brow and smile (`dyn_sup`), and every reconstruction and
  cross-identity decode is driven by the true labels (`teacher_labels = 1`) with the source's free z_dyn
  dims (`dyn_free_from_src = 1`). The decoder learns labels -> pixels directly; the encoders learn to
  read labels from pixels. Real video supplies landmark-derived pseudo-labels under the same names.
- The renderer sees z_dyn (`render_dyn`), and a 2D skip of the source at 64^2 (`skip_channels`) warped once
  to the target pose by the face plane, so detail is not averaged through a 32^2 volume twice.
- The pose and dynamics encoders read every pixel (`motion_s2d`); pose_cons is off (two decodes per
  example; with label-driven decodes pose transfer is supervised directly), the GAN never starts.
- Stage 2 generates label-space motion (`motion_source = "labels"`), written into the portrait's latents.
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
  c.loss.pose_cons = 0.0
  c.loss.pose_sup_all = True
  c.loss.dyn_sup = 0.5
  c.loss.dyn_free_from_src = 1.0
  c.face.free_dyn_from_portrait = True
  c.loss.teacher_labels = 1.0
  c.train.gan_start = 100000
  c.train.lr_gen = 5e-4
  c.train.b1 = 0.9
  c.motion_train.motion_source = "labels"
  return c
