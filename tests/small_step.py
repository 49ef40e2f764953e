"""Config overrides for tests of the machinery around a stage-1 step (devices, processes, sharding).

The loss terms that add decodes, the discriminator and the identity net are off, so the step
compiles several times faster; their weights still exist, are sharded and are checkpointed.
Tests of the losses themselves must not use these.
"""

SMALL_STEP = (("loss.pose_cons", "0"), ("loss.dyn_cons", "0"), ("loss.cross_id", "0"),
              ("loss.motion_cos", "0"), ("train.gan_start", "100"))


def flags() -> list[str]:
  """SMALL_STEP as command-line overrides."""
  return [f"--config.{k}={v}" for k, v in SMALL_STEP]
