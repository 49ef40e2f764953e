"""Training: state, mesh and shardings, checkpoints, one step per stage, the loop."""
