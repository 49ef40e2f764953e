"""Config overrides for tests of the machinery around a stage-1 step (devices, processes, sharding).

The loss terms that add decodes, the discriminator and the identity net are off, so the step is
smaller (10.9 against 23.1 GFLOP for the tiny config's batch of 4) and compiles faster (70 against 86 s
on a slow 2-core machine, 2026-12-07: most of the compile is the one decode's graph and the optimiser's
update of each of the ~320 weights); their weights still exist, are sharded and are checkpointed.
Tests of the losses themselves must not use these.
"""

SMALL_STEP = (("loss.pose_cons", "0"), ("loss.dyn_cons", "0"), ("loss.cross_id", "0"),
              ("loss.motion_cos", "0"), ("train.gan_start", "100"))


def flags() -> list[str]:
  """SMALL_STEP as command-line overrides."""
  return [f"--config.{k}={v}" for k, v in SMALL_STEP]
