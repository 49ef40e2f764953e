"""`prepare` on videos the test makes: a real portrait moved and zoomed over a background with speech,
a synthetic head off-centre, two faces, no face, no audio, a corrupt file, a variable frame rate, a
scene cut; then the clips, crops, landmarks, labels, report and a resumed run."""

import json
import os

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

import face_media  # noqa: E402
from vasa_jax import cli, faces, media  # noqa: E402
from vasa_jax.data import face_labels, prepare, records, synthetic  # noqa: E402

SPEECH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "vasa_jax", "examples", "speech.wav")


def _clips(corpus):
  from array_record.python import array_record_module
  out = {}
  manifest = records.open_corpus(corpus).manifest
  for split, info in manifest["splits"].items():
    for shard in info["shards"]:
      r = array_record_module.ArrayRecordReader(os.path.join(corpus, shard["file"]))
      for i in range(r.num_records()):
        clip = records.decode_clip(r.read([i])[0])
        out[clip["clip_id"]] = (split, clip)
      r.close()
  return out


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
  root = tmp_path_factory.mktemp("videos")
  speech = media.load_audio(SPEECH)                      # 4 s
  frames, _ = face_media.moving_head_frames(100, fps=25.0)
  for who in ("alice", "bob", "carol", "dave"):
    os.makedirs(root / who)
  face_media.write_video(root / "alice" / "moving.mp4", frames, 25, speech)
  # A synthetic head composited off-centre on a wider frame.
  syn = synthetic.make_clip(7, 3, 75, 160)
  bg = face_media.background(270, 480, seed=1)
  face_media.write_video(root / "bob" / "synthetic.mp4",
                         np.stack([face_media.paste(bg, f, (340, 150)) for f in syn["frames"]]), 25, syn["audio"])
  two = np.stack([face_media.paste(f, face_media.head(), (400, 180), 0.7) for f in frames[:75]])
  face_media.write_video(root / "carol" / "two_faces.mp4", two, 25, speech[:48000])
  face_media.write_video(root / "carol" / "no_face.mp4", np.stack([face_media.background(240, 320)] * 50), 25,
                         speech[:32000])
  face_media.write_video(root / "carol" / "no_audio.mp4", frames[:60], 25, None)
  (root / "carol" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
  # Variable frame rate: 30 frames over 2.4 s at irregular steps (25-100 ms).
  steps = np.tile([0.025, 0.1, 0.05, 0.065], 15)[:59]
  times = np.concatenate([[0.0], np.cumsum(steps)])
  face_media.write_video(root / "dave" / "vfr.mp4", frames[:60], 25, speech[:int(16000 * (times[-1] + 0.1))],
                         times=times)
  # A scene cut: the moving head, then a different shot (the head small, elsewhere).
  other = np.stack([face_media.paste(face_media.background(360, 480, seed=5), face_media.head(), (150, 200), 0.6)
                    ] * 50)
  face_media.write_video(root / "dave" / "cut.mp4", np.concatenate([frames[:50], other]), 25, speech)
  return root


def _run(videos, out, *extra):
  args = ["--videos", str(videos), "--out", str(out), "--config", "tiny", "--resolution", "96", "--min-seconds",
          "1", "--clip-seconds", "3", "--benchmark-share", "0.5", *extra]
  return cli.run(prepare.main, prepare.parser(), args)


def test_prepare_clips_report_and_resume(videos, tmp_path):
  out = tmp_path / "corpus"
  assert _run(videos, out) == 0
  report = json.loads((out / prepare.REPORT).read_text())
  by_name = {os.path.basename(e["video"]): e for e in report["videos"]}
  assert len(by_name) == 8
  reasons = {k: e.get("reason", "") for k, e in by_name.items() if e["status"] == "skipped"}
  assert set(reasons) == {"two_faces.mp4", "no_face.mp4", "no_audio.mp4", "corrupt.mp4"}, reasons
  assert reasons["two_faces.mp4"].startswith("several faces")
  assert reasons["no_face.mp4"].startswith("no face")
  assert "no audio track" in reasons["no_audio.mp4"]
  assert reasons["corrupt.mp4"].startswith("cannot be decoded")
  # 4 s of the moving head -> clips of at most 3 s: 75 + 25 frames.
  assert by_name["moving.mp4"]["frames"] == 100 and len(by_name["moving.mp4"]["clips"]) == 2
  assert any("variable frame rate" in n for n in by_name["vfr.mp4"]["notes"])
  assert any("scene cut" in n for n in by_name["cut.mp4"]["notes"]) and len(by_name["cut.mp4"]["clips"]) == 2

  clips = _clips(str(out))
  assert len(clips) == report["clips"] == sum(len(e["clips"]) for e in report["videos"])
  manifest = records.open_corpus(str(out)).manifest
  assert manifest["resolution"] == [96, 96] and manifest["fps"] == 25
  assert sorted(manifest["label_names"]) == sorted(face_labels.LABEL_NAMES)
  assert manifest["per_frame_keys"] == ["crop_box", "landmarks"]
  for split, clip in clips.values():
    # Split by identity: every clip of one identity lands in one split.
    assert split == prepare.split_of(clip["attrs"]["identity_name"], 0.5)
    n = len(clip["frames"])
    assert clip["frames"].shape == (n, 96, 96, 3) and clip["audio"].shape == (n * 640,)
    assert clip["landmarks"].shape == (n, 478, 3)
    # The face box stays centred in every frame and steady from frame to frame.
    eyes = np.array([faces.face_frame(lm.astype(np.float32))[0] for lm in clip["landmarks"]])
    assert np.abs(eyes[:, 0] - 0.5).max() < 0.08, clip["clip_id"]
    assert np.abs(eyes[:, 1] - (0.5 - faces.CROP_CENTER_BELOW_EYES)).max() < 0.08, clip["clip_id"]
    assert np.abs(np.diff(eyes, axis=0)).max() < 0.03, clip["clip_id"]
  # The landmarks lie on the face in the stored frames: the detector, run again on a stored frame, agrees.
  moving = [c for _, c in clips.values() if c["attrs"]["video"] == "moving.mp4"][0]
  again = faces.find_faces(moving["frames"][10])[0].landmarks[:, :2] / 96
  assert np.abs(again - moving["landmarks"][10, :, :2].astype(np.float32)).mean() < 0.02
  # The sound is in sync: the clip's audio is the speech from the clip's start.
  speech = media.load_audio(SPEECH)
  start = int(moving["attrs"]["start_s"] * 16000)
  a = moving["audio"][:16000]
  b = speech[start:start + 16000]
  lag = np.argmax(np.correlate(a[4000:12000], b, "valid")) - 4000
  assert abs(lag) <= 160 and np.corrcoef(a, b)[0, 1] > 0.9

  # A re-run finds everything done, rebuilds the same corpus, and duplicates nothing.
  mtimes = {f: os.path.getmtime(out / prepare.WORK / f) for f in os.listdir(out / prepare.WORK)}
  assert _run(videos, out) == 0
  assert {f: os.path.getmtime(out / prepare.WORK / f) for f in os.listdir(out / prepare.WORK)} == mtimes
  assert sorted(_clips(str(out))) == sorted(clips)
  assert not [f for f in os.listdir(out) if "incomplete" in f or f.endswith(".partial")]


def test_resume_after_an_interrupted_video(videos, tmp_path):
  """A video whose work files were not finished (killed mid-way) is redone; the others are kept."""
  out = tmp_path / "corpus"
  assert _run(videos / "alice", out) == 0
  work = out / prepare.WORK
  done = sorted(os.listdir(work))
  key = [f for f in done if f.endswith(".json")][0][:-5]
  os.remove(work / f"{key}.json")                       # as if killed before the rename
  (work / f"{key}.array_record.partial").write_bytes(b"half")
  assert _run(videos / "alice", out) == 0
  assert len(_clips(str(out))) == 2
  assert (work / f"{key}.json").exists() and not (work / f"{key}.array_record.partial").exists()


def test_pseudo_labels_follow_the_synthetic_truth():
  """On synthetic renders (exact labels), the landmark pseudo-labels move with the true ones."""
  pred, true = {n: [] for n in face_labels.LABEL_NAMES}, {n: [] for n in face_labels.LABEL_NAMES}
  for ident, seed in ((5, 11), (77, 12)):
    clip = synthetic.make_clip(ident, seed, 60, 160)
    tracker = faces.FaceTracker(detect_every=25)
    lms = [tracker.step(f).landmarks for f in clip["frames"]]
    assert all(lm is not None for lm in lms)
    lab = face_labels.labels_from_landmarks(np.stack(lms) / 160.0)
    for n in face_labels.LABEL_NAMES:
      pred[n].append(lab[n])
      true[n].append(clip["labels"][n])
  corr = {n: np.corrcoef(np.concatenate(pred[n]), np.concatenate(true[n]))[0, 1] for n in face_labels.LABEL_NAMES}
  for n, floor in (("yaw", 0.9), ("roll", 0.8), ("distance", 0.8), ("mouth_open", 0.7), ("smile", 0.7),
                   ("pitch", 0.4)):
    assert corr[n] > floor, (n, corr)


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
  empty = tmp_path / "empty"
  empty.mkdir()
  assert cli.run(prepare.main, prepare.parser(), ["--videos", str(empty), "--out", str(tmp_path / "c")]) == 2
  assert "holds no video" in capsys.readouterr().err
  assert cli.run(prepare.main, prepare.parser(), ["--videos", str(tmp_path / "nope.txt"), "--out",
                                                  str(tmp_path / "c")]) == 2
  assert "does not exist" in capsys.readouterr().err
