"""Paper run: 512x512, volume 96x16x64x64, W=50, K=10 at 25 fps; what a TPU pod or GPUs train.

Data:  python -m vasa_jax.data.synthetic --out data/syn512 --identities 2000 --resolution 512   (or prepare real video)
Check: python -m vasa_jax.train.aot --config paper --topology v5e:4x4   (pip install 'vasa_jax[tpu]')
       compiles both stages' train steps and the sampler's steps for 16 TPU v5e chips on a CPU (no TPU)
       and prints per-chip memory, GFLOP per step and the largest batch per chip that fits HBM;
       `--devices 8` does the same for 8 fake CPU devices.
Run:   python -m vasa_jax.train --config configs/paper.py --data data/syn512 --workdir gs://bucket/runs/paper
       (launch/tpu_pod.sh runs it on every worker of a pod slice).
Stage 2 conditions on wav2vec2 features, whose weights you supply (README, "Stage 2 on wav2vec2 features"):
       python -m vasa_jax.models.wav2vec2 --convert HF_DIR w2v/base
       python -m vasa_jax.train --stage 2 --config configs/paper.py --data MOTION --workdir RUN2 \
           --config.audio.wav2vec2_path=w2v/base
Expect: ~400 GFLOP per rendered 512x512 frame (under half of LivePortrait's 1,234).
"""

import ml_collections

from vasa_jax.configs import base


def get_config() -> ml_collections.ConfigDict:
  c = base.get_config()
  c.name = "paper"

  c.data.workers = 8

  # Replicated train state (plain data parallelism), by choice: the whole stage-1 state (weights of
  # generator, discriminator and identity net, their Adam moments, the EMA) is 884 MiB and stage 2's
  # 650 MiB (plus ~380 MB of frozen wav2vec2-base), under 7% of a v5e chip's 16 GiB; activations fill
  # the rest. Splitting the state over
  # `fsdp` would free at most that much per chip and add a gather of every weight to each step.
  # Set --config.mesh.fsdp=-1 (all chips) for a bigger model; `aot --topology` reports both.
  c.mesh.fsdp = 1

  c.face.image_size = 512
  c.face.vol_channels = 96     # Cv of V_app [D, S, S, Cv]
  c.face.vol_depth = 16        # D
  c.face.vol_size = 64         # S
  c.face.enc_widths = (64, 128, 256)
  c.face.motion_input = 128
  c.face.motion_widths = (64, 128, 256, 256)
  c.face.z_id = 256
  c.face.z_dyn = 256
  c.face.flow_channels = 32
  c.face.render_vol_blocks = 2
  c.face.gen_widths = (512, 256, 128, 64)  # 2D generator: S -> 2S -> 4S -> 8S = image_size
  c.face.out_shuffle = 1
  c.face.remat = True
  # The step's six decodes per example one at a time, each recomputed in the backward pass: the stage-1
  # step at 2 examples a chip goes from 18.6 GiB (over a v5e chip's 16) to 10.8 GiB assigned, for 23%
  # more FLOPs (one more decoder forward). On chips with room to spare (v5p) it can be turned off.
  c.face.remat_decodes = True

  c.disc.widths = (64, 128, 256, 512)
  c.disc.scales = 3
  c.idnet.widths = (64, 128, 256, 256)
  c.idnet.embed_dim = 256
  c.idnet.input_size = 128
  c.idnet.num_classes = 8192

  c.loss.dyn_cons = 1.0

  c.train.batch_size = 32
  c.train.steps = 500000
  c.train.gan_start = 20000
  c.train.log_every = 100
  c.train.checkpoint_every = 2000
  c.train.preview_every = 2000

  # VASA-1 conditions on wav2vec2 features. The weights are not shipped: convert a Hugging Face
  # checkpoint you downloaded (e.g. facebook/wav2vec2-base-960h) with
  # `python -m vasa_jax.models.wav2vec2 --convert HF_DIR OUT` and pass --config.audio.wav2vec2_path=OUT.
  c.audio.features = "wav2vec2"
  c.audio.dim = 512
  c.audio.hidden = 512

  c.motion.layers = 8
  c.motion.width = 512
  c.motion.heads = 8
  c.motion.control_norm = True

  c.diffusion.sample_steps = 50

  c.motion_train.batch_size = 256
  c.motion_train.steps = 300000
  c.motion_train.lr = 1e-4
  c.motion_train.warmup = 2000
  c.motion_train.ema_decay = 0.9999
  c.motion_train.log_every = 100
  c.motion_train.checkpoint_every = 2000
  return c
