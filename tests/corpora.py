"""The small synthetic corpus most tests train on: 64x64, one clip per identity, written in-process."""

from vasa_jax.data import synthetic


def synthetic_64(path, *, identities: int, frames: int, seed: int) -> str:
  synthetic.write_corpus(str(path), num_identities=identities, clips_per_identity=1, num_frames=frames,
                         resolution=64, seed=seed, workers=1, progress=False)
  return str(path)
