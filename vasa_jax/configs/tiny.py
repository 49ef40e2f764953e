"""Tiny run: seconds on a laptop CPU. What the tests train and sample with.

Data:  python -m vasa_jax.data.synthetic --out /tmp/syn64 --identities 8 --clips-per-identity 1 --frames 24 --resolution 64
Run:   python -m vasa_jax.train --config configs/tiny.py --data /tmp/syn64 --workdir /tmp/vasa_tiny
Expect: 4 steps in about a minute (mostly compilation); checkpoints at steps 2 and 4, a preview PNG.
"""

import ml_collections

from vasa_jax.configs import base


def get_config() -> ml_collections.ConfigDict:
  c = base.get_config()
  c.name = "tiny"

  c.data.window = 8        # W: motion frames generated per diffusion window.
  c.data.context = 2       # K: previous frames carried into the next window.

  c.face.image_size = 64
  c.face.vol_channels = 8      # Cv of V_app [D, S, S, Cv]
  c.face.vol_depth = 4         # D
  c.face.vol_size = 16         # S
  c.face.enc_widths = (16, 32)
  c.face.motion_widths = (16, 32, 32)
  c.face.z_id = 32
  c.face.z_dyn = 32
  c.face.flow_channels = 8
  c.face.render_vol_blocks = 1
  # The issue-12 levers on, so the tests run every code path (label-tied latents, label-space stage 2).
  c.face.render_dyn = True
  c.face.skip_channels = 8
  c.face.skip_pixels = True
  c.face.gen_widths = (32, 16, 16)         # 2D generator: S -> 2S -> 4S = image_size
  c.face.out_shuffle = 1

  c.disc.widths = (16, 32, 32)
  c.idnet.widths = (16, 32, 32)
  c.idnet.embed_dim = 32
  c.idnet.num_classes = 32

  c.loss.dyn_cons = 1.0
  c.loss.pose_sup_all = True
  c.loss.dyn_sup = 0.5
  c.loss.dyn_free_from_src = 0.5
  c.loss.teacher_labels = 0.5

  c.train.steps = 4
  c.train.ema_decay = 0.99
  c.train.gan_start = 2
  c.train.log_every = 1
  c.train.checkpoint_every = 2
  c.train.preview_every = 2

  c.audio.dim = 32
  c.audio.hidden = 32
  c.audio.layers = 2

  c.motion.layers = 2
  c.motion.width = 32
  c.motion.heads = 2
  c.motion.mlp_ratio = 2

  c.motion_train.batch_size = 4
  c.motion_train.steps = 4
  c.motion_train.lr = 1e-3
  c.motion_train.warmup = 2
  c.motion_train.ema_decay = 0.99
  c.motion_train.log_every = 1
  c.motion_train.checkpoint_every = 2
  c.motion_train.motion_source = "labels"   # ground truth: no stage-1 run needed
  return c
