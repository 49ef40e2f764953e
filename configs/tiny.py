"""Tiny run: seconds on a laptop CPU. What the tests train and sample with.

Run:   python -m vasa_jax.data.synthetic --config configs/tiny.py --out /tmp/vasa_tiny
Expect: a corpus of a few 64x64 clips written in seconds (models arrive with stage 1 / stage 2).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "tiny"
  c.seed = 0

  # Inputs accepted by every command.
  c.media = ml_collections.ConfigDict()
  c.media.sample_rate = 16000
  c.media.max_audio_seconds = 600.0   # Longer audio is refused before decoding it all.
  c.media.min_image_side = 64
  c.media.max_image_side = 2048       # Larger portraits are downscaled on load.

  # Data: clips, windows and the synthetic corpus.
  c.data = ml_collections.ConfigDict()
  c.data.resolution = 64
  c.data.fps = 25
  c.data.window = 8        # W: motion frames generated per diffusion window.
  c.data.context = 2       # K: previous frames carried into the next window.
  c.data.identities = 8
  c.data.clips_per_identity = 2
  c.data.frames_per_clip = 24
  c.data.batch_size = 4
  return c
