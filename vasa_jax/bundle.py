"""Inference bundles: what sampling loads (and what ships inside the package as the demo).

A bundle is a folder with the EMA weights of both stages as Orbax checkpoints and
their configs, nothing a sampler does not need (no optimiser state, no
discriminator):

  BUNDLE/stage1/   Orbax: {"params": face-latent EMA weights}
  BUNDLE/stage2/   Orbax: {"params": motion EMA weights, "mean": [M], "std": [M]}
  BUNDLE/bundle.json   both configs, where each stage came from, a content hash

`python -m vasa_jax.train.export --stage1 RUN1 --stage2 RUN2 --out DIR` exports one
from two training run folders; loading one needs nothing from the trainer.
"""

import dataclasses
import hashlib
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from vasa_jax import config, paths
from vasa_jax.errors import UserError

BUNDLE_JSON = "bundle.json"
DEMO_BUNDLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoints", "demo")


@dataclasses.dataclass
class Bundle:
  face_cfg: ml_collections.ConfigDict      # the stage-1 run config
  motion_cfg: ml_collections.ConfigDict    # the stage-2 run config
  face_params: Any
  motion_params: Any
  mean: np.ndarray
  std: np.ndarray
  digest: str                              # identifies the weights (watermark payload, metadata)
  path: str


def digest(tree) -> str:
  """A short content hash of a pytree of arrays: names the weights in watermarks and metadata."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(tree):
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(str(a.shape).encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]


def load(path: str) -> Bundle:
  """Loads a bundle folder (local or gs://); a clear error names what is missing."""
  folder = paths.path(path)
  meta_path = folder / BUNDLE_JSON
  if not folder.is_dir():
    raise UserError(f"checkpoint {path!r} does not exist; give a bundle folder written by "
                    "python -m vasa_jax.train.export")
  if not meta_path.is_file():
    raise UserError(f"checkpoint {path!r} has no {BUNDLE_JSON}; it is not a vasa_jax bundle "
                    "(export one with python -m vasa_jax.train.export --stage1 RUN --stage2 RUN --out DIR)")
  try:
    meta = json.loads(meta_path.read_text())
  except json.JSONDecodeError as e:
    raise UserError(f"{meta_path} is corrupt ({e})") from None
  ckptr = ocp.StandardCheckpointer()
  try:
    s1 = ckptr.restore(folder / "stage1")
    s2 = ckptr.restore(folder / "stage2")
  except Exception as e:  # Orbax raises many types for damaged folders.
    raise UserError(f"checkpoint {path!r} could not be read ({type(e).__name__}: {str(e)[:200]})") from None
  return Bundle(face_cfg=config.from_stored(meta["stage1"]["config"]),
                motion_cfg=config.from_stored(meta["stage2"]["config"]),
                face_params=s1["params"], motion_params=s2["params"],
                mean=np.asarray(s2["mean"]), std=np.asarray(s2["std"]), digest=meta["digest"], path=path)


def size_bytes(path: str) -> int:
  """Total size of the files in a bundle folder."""
  return sum(f.stat().length for f in paths.files(path))
