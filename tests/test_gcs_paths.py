"""gs:// folders against a local GCS emulator (tests/gcs_emulator.py), no mocks: a training run
whose corpus and run folder are both on gs:// trains, resumes and logs there exactly like a
local run; a bundle loads from gs://; a preview image is written there."""

import json
import os

import numpy as np
import pytest

import corpora
from vasa_jax import bundle

TRAIN = ["-m", "vasa_jax.train", "--stage", "2", "--config", "tiny", "--config.motion_train.motion_source=labels",
         "--config.motion_train.steps=4", "--config.motion_train.checkpoint_every=2",
         "--config.motion_train.log_every=1"]

INSPECT = """
import json, sys
import numpy as np
from etils import epath
from vasa_jax.train import checkpoint
import jax
run, out = sys.argv[1], sys.argv[2]
_, state, step = checkpoint.load_run(run)
np.savez(out, *jax.tree.leaves(state))
root = epath.Path(run)
print(json.dumps({
    "step": step,
    "checkpoints": sorted(p.name for p in (root / "checkpoints").iterdir()),
    "files": sorted(p.name for p in root.iterdir()),
    "events": [p.name for p in (root / "tensorboard").iterdir()],
    "metric_steps": [json.loads(l)["step"] for l in (root / "metrics.jsonl").read_text().splitlines()],
    "config_name": json.loads((root / "config.json").read_text())["name"],
}))
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  return corpora.synthetic_64(tmp_path_factory.mktemp("corpus_gcs") / "syn64", identities=6, frames=24, seed=5)


def _leaves(npz):
  with np.load(npz) as z:
    return [z[f"arr_{i}"] for i in range(len(z.files))]


@pytest.mark.slow
def test_training_reads_its_corpus_and_keeps_its_run_folder_on_gcs(gcs, corpus, tmp_path):
  bucket = gcs.make_bucket("runs")
  gcs.run(["-c", f"import gcs_emulator; gcs_emulator.upload({corpus!r}, '{bucket}/syn64')"])
  data, run = f"{bucket}/syn64", f"{bucket}/stage2"
  gcs.run(TRAIN + ["--data", data, "--workdir", run, "--steps", "3"])   # Saves at 2 and 3.
  out = gcs.run(TRAIN + ["--data", data, "--workdir", run])               # Resumes at 3, trains step 4.
  assert f"checkpoints in {run}/checkpoints" in out
  info = json.loads(gcs.run(["-c", INSPECT, run, str(tmp_path / "gcs.npz")]).strip().splitlines()[-1])
  assert info["step"] == 4 and info["checkpoints"] == ["2", "3", "4"]
  assert {"config.json", "metrics.jsonl", "tensorboard", "checkpoints"} <= set(info["files"])
  assert info["events"] and info["config_name"] == "tiny"
  assert info["metric_steps"] == [1, 2, 3, 4]          # The second run's lines follow the first's.

  local = str(tmp_path / "local")                      # The same run on local folders, in one go.
  gcs.run(TRAIN + ["--data", corpus, "--workdir", local])
  gcs.run(["-c", INSPECT, local, str(tmp_path / "local.npz")])
  for a, b in zip(_leaves(tmp_path / "gcs.npz"), _leaves(tmp_path / "local.npz"), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert not os.path.exists("gs:")                      # Nothing went to a local folder named "gs:".


@pytest.mark.slow
def test_a_bundle_loads_from_gcs_and_previews_are_written_there(gcs, tmp_path):
  bucket = gcs.make_bucket("bundles")
  gcs.run(["-c", f"import gcs_emulator; gcs_emulator.upload({bundle.DEMO_BUNDLE!r}, '{bucket}/demo')"])
  check = f"""
import numpy as np, jax
from etils import epath
from vasa_jax import bundle, media
remote, local = bundle.load('{bucket}/demo'), bundle.load(bundle.DEMO_BUNDLE)
for a, b in zip(jax.tree.leaves([remote.face_params, remote.motion_params, remote.mean]),
                jax.tree.leaves([local.face_params, local.motion_params, local.mean]), strict=True):
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
assert remote.digest == local.digest and remote.path == '{bucket}/demo'
assert bundle.size_bytes('{bucket}/demo') == bundle.size_bytes(bundle.DEMO_BUNDLE)
media.save_image('{bucket}/previews/step_1.png', np.full((8, 8, 3), 0.5, np.float32))
print(epath.Path('{bucket}/previews/step_1.png').read_bytes()[:4])
"""
  assert "PNG" in gcs.run(["-c", check])
