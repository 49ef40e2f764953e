"""`prepare` and `prepare_beam` (DirectRunner) writing their corpus to gs:// on a local GCS emulator
(tests/gcs_emulator.py), no mocks: the corpus opens with `records.open_corpus` and holds the same
shards as a local run; a re-run resumes from the gs:// work files and rewrites none of them; nothing
temporary is left in the bucket."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("ai_edge_litert")
pytest.importorskip("gcsfs")

import face_media  # noqa: E402
import numpy as np  # noqa: E402
from vasa_jax import media  # noqa: E402
from vasa_jax.data import synthetic  # noqa: E402

from test_prepare_beam import ARGS, SPEECH  # noqa: E402

# Run in the emulator's environment: the clip ids per split, each shard's name, clip count and hash as
# the manifest lists them and as its bytes give them, and for gs:// every object's generation.
INSPECT = """
import hashlib, json, sys
import fsspec
from array_record.python import array_record_module
from etils import epath
from vasa_jax.data import records
root = sys.argv[1]
corpus = records.open_corpus(root, verify=True)
out = {"splits": {}, "objects": {}}
for split, info in corpus.manifest["splits"].items():
  ids, content = [], []
  for shard in info["shards"]:
    r = array_record_module.ArrayRecordReader(f"{root}/{shard['file']}")
    for i in range(r.num_records()):
      clip = records.decode_clip(r.read([i])[0])
      ids.append(clip["clip_id"])
      content.append([int(clip["identity"]), clip["attrs"]["start_s"], clip["attrs"]["video"],
                      hashlib.sha256(clip["frames"].tobytes() + clip["audio"].tobytes()
                                     + clip["landmarks"].tobytes()).hexdigest()])
    r.close()
  shards = [(s["file"], s["clips"], s["sha256"],
             hashlib.sha256((epath.Path(root) / s["file"]).read_bytes()).hexdigest()) for s in info["shards"]]
  out["splits"][split] = {"clip_ids": ids, "shards": shards, "index": corpus.index(split).clip_id.tolist(),
                          "content": content}
if root.startswith("gs://"):
  fs = fsspec.core.url_to_fs(root)[0]
  for p in fs.find(root):
    out["objects"][p] = fs.info(p)["generation"]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
  """Two people, 2 s each: the astronaut moving (clips in one split) and a synthetic head (maybe the other)."""
  root = tmp_path_factory.mktemp("gcs_videos")
  frames, _ = face_media.moving_head_frames(50, h=240, w=320, fps=25.0)
  (root / "alice").mkdir()
  (root / "bob").mkdir()
  face_media.write_video(root / "alice" / "moving.mp4", frames, 25, media.load_audio(SPEECH)[:32000])
  syn = synthetic.make_clip(7, 3, 50, 128)
  bg = face_media.background(180, 320, seed=1)
  face_media.write_video(root / "bob" / "synthetic.mp4",
                         np.stack([face_media.paste(bg, f, (220, 90)) for f in syn["frames"]]), 25, syn["audio"])
  return root


def _inspect(gcs, root):
  return json.loads(gcs.run(["-c", INSPECT, root]).strip().splitlines()[-1])


def _prepare(gcs, module, videos, out, *beam, stderr=False):
  """Runs `python -m vasa_jax.data.MODULE` against the emulator; its stdout (and stderr)."""
  res = subprocess.run([sys.executable, "-m", f"vasa_jax.data.{module}", "--videos", str(videos), "--out", out,
                        *ARGS, *(["--", *beam] if beam else [])],
                       env=gcs.env, capture_output=True, text=True, timeout=600)
  assert res.returncode == 0, f"{module} --out {out}: exit {res.returncode}\n{res.stderr[-3000:]}"
  return res.stdout + (res.stderr if stderr else "")


def test_prepare_writes_and_resumes_a_corpus_on_gcs(gcs, videos, tmp_path):
  bucket = gcs.make_bucket("corpora")
  local, remote = str(tmp_path / "local"), f"{bucket}/corpus"
  _prepare(gcs, "prepare", videos, local)
  assert _prepare(gcs, "prepare", videos, remote).strip().splitlines()[-1] == remote
  want, got = _inspect(gcs, local), _inspect(gcs, remote)
  assert got["splits"] == want["splits"]
  assert sum(len(s["clip_ids"]) for s in got["splits"].values()) == 2   # one each
  for info in got["splits"].values():
    assert len(set(info["clip_ids"])) == len(info["clip_ids"])
    assert all(listed == actual for _, _, listed, actual in info["shards"])
  names = {p.split("/corpus/", 1)[1] for p in got["objects"]}
  assert "prepare_report.json" in names and "manifest.json" in names
  assert sum(n.startswith(".prepare/") for n in names) == 4            # records + .json per video
  assert not [n for n in names if n.endswith(".partial") or n.startswith((".incomplete", ".beam-staging"))]

  # A re-run finds both videos done in the gs:// work files: it rewrites none and lists every clip once.
  assert "2 already done, 0 to do" in _prepare(gcs, "prepare", videos, remote, stderr=True)
  again = _inspect(gcs, remote)
  assert again["splits"] == want["splits"]
  work = {p: g for p, g in got["objects"].items() if "/.prepare/" in p}
  assert {p: g for p, g in again["objects"].items() if "/.prepare/" in p} == work
  assert set(again["objects"]) == set(got["objects"])

  # The Beam path resumes the same gs:// corpus (nothing redone) and writes the same shards.
  _prepare(gcs, "prepare_beam", videos, remote, "--direct_num_workers=1", "--direct_running_mode=in_memory")
  beam = _inspect(gcs, remote)
  assert beam["splits"] == want["splits"]
  assert {p: g for p, g in beam["objects"].items() if "/.prepare/" in p} == work
  assert set(beam["objects"]) == set(got["objects"])                    # the staging folder is gone


def test_beam_reads_videos_from_and_writes_a_fresh_corpus_to_gcs(gcs, videos, tmp_path):
  """Dataflow's case: videos, work files, staged shards and corpus all in the bucket, nothing shared on disk.
  The clips are the local run's (their ids and `source` name the gs:// videos, so the shards' bytes differ)."""
  bucket = gcs.make_bucket("beam")
  gcs.run(["-c", f"import gcs_emulator; gcs_emulator.upload({str(videos)!r}, '{bucket}/videos')"])
  local, remote = str(tmp_path / "local"), f"{bucket}/corpus"
  _prepare(gcs, "prepare", videos, local)
  _prepare(gcs, "prepare_beam", f"{bucket}/videos", remote, "--direct_num_workers=2")
  got, want = _inspect(gcs, remote), _inspect(gcs, local)
  assert {k: v["content"] for k, v in got["splits"].items()} == {k: v["content"] for k, v in want["splits"].items()}
  report = json.loads(gcs.run(["-c", f"from etils import epath; print(epath.Path('{remote}/prepare_report.json')"
                                     ".read_text())"]))
  assert report["engine"].startswith("beam") and report["clips"] == 2
  assert sorted(e["video"] for e in report["videos"]) == [f"{bucket}/videos/alice/moving.mp4",
                                                          f"{bucket}/videos/bob/synthetic.mp4"]
  assert not [p for p in got["objects"] if ".beam-staging" in p or p.endswith(".partial")]


@pytest.mark.parametrize("module", ["prepare", "prepare_beam"])
def test_a_missing_bucket_is_one_line(gcs, videos, module):
  res = subprocess.run([sys.executable, "-m", f"vasa_jax.data.{module}", "--videos", str(videos), "--out",
                        "gs://no-such-bucket/corpus", *ARGS], env=gcs.env, capture_output=True, text=True, timeout=600)
  # One line of ours (Beam's import may log a warning of its own before it).
  lines = [ln for ln in res.stderr.strip().splitlines() if not ln.startswith("WARNING:root:")]
  assert res.returncode == 2 and len(lines) == 1, res.stderr
  assert lines[0].startswith("error: --out gs://no-such-bucket/corpus: cannot write there")
