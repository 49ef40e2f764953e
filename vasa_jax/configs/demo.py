"""Demo run: 128x128, trainable on a 2-core CPU; what the bundled demo checkpoint uses.

Data:  python -m vasa_jax.data.synthetic --out data/syn128 --identities 200 --clips-per-identity 3 --frames 100 --resolution 128
Run:   python -m vasa_jax.train --config configs/demo.py --data data/syn128 --workdir runs/demo_stage1
Eval:  python -m vasa_jax.evaluate --stage 1 --data data/syn128 --workdir runs/demo_stage1
Expect: ~2.5 s per stage-1 step and ~0.6 s per stage-2 step on a 2-core CPU. The shipped demo bundle
        was trained within one 3-hour session: stage 1 for 1,700 steps with the GAN off
        (--config.train.steps=1700 --config.train.gan_start=100000; 24.2 dB self-reenactment, 21.4 dB
        cross-identity on unseen identities), stage 2 for 3,800 steps (--config.motion_train.steps=3800);
        the README's "The demo checkpoint" section lists every command. The full 5,000 + 20,000 steps
        are what a longer CPU run (or any GPU) should use.

The base config holds the demo's values, so this run changes only its name. The levers for a
talking demo (face.motion_s2d, face.render_dyn, loss.pose_sup_all, loss.dyn_sup,
loss.dyn_free_from_src, motion_train.motion_source=labels) are off: the shipped bundle was trained
without them, and the README's "Making the demo talk" lists what they have shown so far.
"""

import ml_collections

from vasa_jax.configs import base


def get_config() -> ml_collections.ConfigDict:
  c = base.get_config()
  c.name = "demo"
  return c
