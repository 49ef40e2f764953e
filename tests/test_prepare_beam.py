"""The Beam path of `prepare` (DirectRunner, two worker processes) writes the same corpus as the local
path: the same shards byte for byte, the same index and report; and either path resumes the other's run."""

import json
import os

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")
pytest.importorskip("apache_beam")

import face_media  # noqa: E402
from vasa_jax import cli, media  # noqa: E402
from vasa_jax.data import prepare, prepare_beam, records, synthetic  # noqa: E402

SPEECH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "vasa_jax", "examples", "speech.wav")
ARGS = ["--config", "tiny", "--resolution", "64", "--min-seconds", "1", "--clip-seconds", "1.2",
        "--benchmark-share", "0.5"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
  """Three people, 2-3 s each: the astronaut moving, a synthetic head off-centre, and a video without sound."""
  root = tmp_path_factory.mktemp("beam_videos")
  speech = media.load_audio(SPEECH)
  frames, _ = face_media.moving_head_frames(75, h=240, w=320, fps=25.0)
  for who in ("alice", "bob", "carol"):
    os.makedirs(root / who)
  face_media.write_video(root / "alice" / "moving.mp4", frames, 25, speech[:48000])
  syn = synthetic.make_clip(7, 3, 50, 128)
  bg = face_media.background(180, 320, seed=1)
  face_media.write_video(root / "bob" / "synthetic.mp4",
                         np.stack([face_media.paste(bg, f, (220, 90)) for f in syn["frames"]]), 25, syn["audio"])
  face_media.write_video(root / "carol" / "no_audio.mp4", frames[:50], 25, None)
  return root


def _corpus(out):
  """Manifest splits without file hashes of the index (np.savez stamps the time), the index arrays,
  and every shard's bytes."""
  manifest = records.open_corpus(str(out)).manifest
  splits = {}
  for split, info in manifest["splits"].items():
    with np.load(out / info["index"]["file"]) as z:
      index = {k: z[k].tolist() for k in z.files}
    shards = [(s["file"], s["clips"], s["sha256"], (out / s["file"]).read_bytes()) for s in info["shards"]]
    splits[split] = ({k: v for k, v in info.items() if k not in ("index", "shards")}, index, shards)
  rest = {k: v for k, v in manifest.items() if k not in ("splits", "created")}
  return rest, splits


def _report(out):
  r = json.loads((out / prepare.REPORT).read_text())
  return r["videos"], r["clips"], r["skipped"]


def _beam(videos, out, *beam):
  args = ["--videos", str(videos), "--out", str(out), *ARGS]
  return cli.run(lambda a: prepare_beam.main(a, list(beam)), prepare_beam.parser(), args)


def test_beam_writes_the_local_corpus(videos, tmp_path):
  local, beam = tmp_path / "local", tmp_path / "beam"
  assert cli.run(prepare.main, prepare.parser(), ["--videos", str(videos), "--out", str(local), *ARGS]) == 0
  assert _beam(videos, beam, "--direct_num_workers=2") == 0
  a, b = _corpus(local), _corpus(beam)
  assert a == b
  assert sum(info[0]["clips"] for info in a[1].values()) == 3   # alice 2, bob 1, carol none
  assert _report(local) == _report(beam)
  assert json.loads((beam / prepare.REPORT).read_text())["engine"].startswith("beam")
  assert not [n for n in os.listdir(beam) if n.startswith((prepare_beam.STAGING, ".incomplete"))]
  # Each path resumes the other's run: nothing is redone and the corpus stays the same.
  assert _beam(videos, local, "--direct_num_workers=1", "--direct_running_mode=in_memory") == 0
  assert _corpus(local) == b
  assert cli.run(prepare.main, prepare.parser(), ["--videos", str(videos), "--out", str(beam), *ARGS]) == 0
  assert _corpus(beam) == b


def test_plan_fills_shards_like_the_local_path():
  done = [(1, "b", "bob", 3), (0, "a", "alice", 2), (2, "c", "carol", 0), (3, "d", "alice2", 1)]
  share = 0.5
  plan = prepare_beam.plan_shards(done, share, clips_per_shard=2)
  by_split = {}
  for key, ident in (("a", "alice"), ("b", "bob"), ("d", "alice2")):
    by_split.setdefault(prepare.split_of(ident, share), []).extend(
        (key, i) for i in range({"a": 2, "b": 3, "d": 1}[key]))
  want = [(split, n, refs[i:i + 2]) for split, refs in sorted(by_split.items())
          for n, i in enumerate(range(0, len(refs), 2))]
  assert plan == want
