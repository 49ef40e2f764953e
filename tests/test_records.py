"""Clip records and corpus shards: round trips, corruption, atomic writes."""

import json
import os

import numpy as np
import pytest

from vasa_jax.data import records
from vasa_jax.errors import UserError

FPS, SR = 25, 16000


def fake_clip(rng, *, num_frames=4, size=32, identity=0, clip_id="c0",
              smooth=False, motion_dim=None, frames=True):
  if smooth:  # JPEG is lossy on noise; smooth images show its real error.
    y, x = np.mgrid[0:size, 0:size] / size
    base_HxWx3 = np.stack([x, y, 0.5 * (x + y)], -1) * 200
    frames_TxHxWx3 = np.stack(
        [base_HxWx3 + 10 * t for t in range(num_frames)]).astype(np.uint8)
  else:
    frames_TxHxWx3 = rng.integers(0, 256, (num_frames, size, size, 3),
                                  dtype=np.uint8)
  clip = {
      "clip_id": clip_id, "identity": identity, "source": "synthetic",
      "fps": FPS, "sample_rate": SR,
      "audio": rng.uniform(-1, 1, num_frames * SR // FPS).astype(np.float32),
      "labels": {"yaw": rng.normal(size=num_frames).astype(np.float32),
                 "blink": rng.uniform(size=num_frames).astype(np.float32)},
      "attrs": {"gaze": np.array([0.1, -0.2], np.float32),
                "distance": np.float32(1.25), "emotion": 3, "split": "train"},
  }
  if frames:
    clip["frames"] = frames_TxHxWx3
  if motion_dim:
    clip["motion"] = rng.normal(size=(num_frames, motion_dim)).astype(
        np.float32)
  return clip


@pytest.mark.parametrize("codec", ["png", "webp"])
def test_lossless_round_trip(codec):
  rng = np.random.default_rng(0)
  clip = fake_clip(rng, motion_dim=6)
  data = records.encode_clip(clip, frame_codec=codec)
  out = records.decode_clip(data)
  np.testing.assert_array_equal(out["frames"], clip["frames"])
  np.testing.assert_allclose(out["audio"], clip["audio"], atol=1 / 32767)
  assert out["audio"].dtype == np.float32
  for name, values in clip["labels"].items():
    np.testing.assert_array_equal(out["labels"][name], values)
  np.testing.assert_array_equal(out["motion"], clip["motion"])
  assert out["attrs"]["gaze"].dtype == np.float32
  np.testing.assert_array_equal(out["attrs"]["gaze"], clip["attrs"]["gaze"])
  assert out["attrs"]["distance"] == np.float32(1.25)
  assert out["attrs"]["emotion"] == 3 and out["attrs"]["split"] == "train"
  for key in ("clip_id", "identity", "source", "fps", "sample_rate"):
    assert out[key] == clip[key]
  assert records.clip_num_frames(data) == 4


def test_jpeg_is_close_and_subset_decode():
  rng = np.random.default_rng(1)
  clip = fake_clip(rng, num_frames=5, smooth=True)
  data = records.encode_clip(clip)  # default codec: jpeg q95
  out = records.decode_clip(data, frame_indices=[4, 1, 1])
  assert out["frames"].shape == (3, 32, 32, 3)
  err = np.abs(out["frames"].astype(int) - clip["frames"][[4, 1, 1]])
  assert err.mean() < 2.0
  empty = records.decode_clip(data, frame_indices=[])
  assert empty["frames"].shape == (0, 32, 32, 3)
  assert empty["audio"].shape == (5 * SR // FPS,)


def test_motion_record_without_frames():
  rng = np.random.default_rng(2)
  clip = fake_clip(rng, frames=False, motion_dim=8, num_frames=7)
  data = records.encode_clip(clip)
  out = records.decode_clip(data)
  assert "frames" not in out
  assert out["motion"].shape == (7, 8)
  assert records.clip_num_frames(data) == 7


def test_corruption_is_detected():
  rng = np.random.default_rng(3)
  data = records.encode_clip(fake_clip(rng), frame_codec="png")
  for pos in (5, len(data) // 2, len(data) - 1):
    bad = bytearray(data)
    bad[pos] ^= 0x40
    with pytest.raises(records.CorruptRecord):
      records.decode_clip(bytes(bad))
  with pytest.raises(records.CorruptRecord):
    records.decode_clip(data[:len(data) // 3])
  with pytest.raises(records.CorruptRecord):
    records.decode_clip(b"junk")


def test_encode_validates_shapes():
  rng = np.random.default_rng(4)
  clip = fake_clip(rng)
  with pytest.raises(ValueError, match="audio"):
    records.encode_clip({**clip, "audio": clip["audio"][:-1]})
  with pytest.raises(ValueError, match="yaw"):
    records.encode_clip({**clip, "labels": {"yaw": np.zeros(3, np.float32)}})
  with pytest.raises(ValueError, match="frames"):
    records.encode_clip({**clip, "frames": clip["frames"].astype(np.float32)})


def write_corpus(path, rng, *, n_train=5, clips_per_shard=2, **kwargs):
  with records.CorpusWriter(path, resolution=32, fps=FPS,
                            clips_per_shard=clips_per_shard, **kwargs) as w:
    for i in range(n_train):
      w.add("train", fake_clip(rng, identity=i % 3, clip_id=f"tr{i}",
                               num_frames=3 + i))
    w.add("test", fake_clip(rng, identity=9, clip_id="te0"))


def test_corpus_write_and_open(tmp_path):
  rng = np.random.default_rng(5)
  write_corpus(tmp_path, rng, frame_codec="webp")
  corpus = records.open_corpus(tmp_path, verify=True)
  m = corpus.manifest
  assert m["schema_version"] == records.SCHEMA_VERSION
  assert m["resolution"] == [32, 32] and m["fps"] == FPS
  assert m["sample_rate"] == SR and m["label_names"] == ["blink", "yaw"]
  train = m["splits"]["train"]
  assert train["clips"] == 5 and train["frames"] == sum(range(3, 8))
  assert [s["file"] for s in train["shards"]] == [
      "train-00000.array_record", "train-00001.array_record",
      "train-00002.array_record"]
  assert train["identities"] == [0, 1, 2]
  assert all(len(s["sha256"]) == 64 for s in train["shards"])
  assert corpus.splits == ["test", "train"]
  source = corpus.source("train")
  assert len(source) == 5
  index = corpus.index("train")
  for i in range(5):
    clip = records.decode_clip(source[i], frame_indices=[0])
    assert clip["clip_id"] == index.clip_id[i] == f"tr{i}"
    assert clip["identity"] == index.identity[i]
    assert records.clip_num_frames(source[i]) == index.num_frames[i] == 3 + i
  assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_interrupted_write_leaves_no_corpus(tmp_path):
  rng = np.random.default_rng(6)
  with pytest.raises(KeyboardInterrupt):
    with records.CorpusWriter(tmp_path, resolution=32, fps=FPS) as w:
      w.add("train", fake_clip(rng))
      raise KeyboardInterrupt
  assert os.listdir(tmp_path) == []
  with pytest.raises(UserError, match="no manifest.json"):
    records.open_corpus(tmp_path)


def test_writer_rejects_mismatched_clips_and_existing_corpus(tmp_path):
  rng = np.random.default_rng(7)
  with pytest.raises(ValueError, match="resolution"):
    with records.CorpusWriter(tmp_path / "a", resolution=64, fps=FPS) as w:
      w.add("train", fake_clip(rng))
  with pytest.raises(ValueError, match="labels"):
    with records.CorpusWriter(tmp_path / "b", resolution=32, fps=FPS) as w:
      w.add("train", fake_clip(rng))
      w.add("train", {**fake_clip(rng), "labels": {}})
  write_corpus(tmp_path / "c", rng)
  with pytest.raises(UserError, match="already holds a corpus"):
    with records.CorpusWriter(tmp_path / "c", resolution=32, fps=FPS):
      pass
  # overwrite=True replaces the old shards and manifest.
  write_corpus(tmp_path / "c", rng, n_train=2, clips_per_shard=5,
               overwrite=True)
  corpus = records.open_corpus(tmp_path / "c", verify=True)
  assert corpus.manifest["splits"]["train"]["clips"] == 2
  assert not os.path.exists(tmp_path / "c" / "train-00001.array_record")


def test_open_corpus_errors_name_what_exists(tmp_path):
  with pytest.raises(UserError, match="does not exist"):
    records.open_corpus(tmp_path / "nope")
  (tmp_path / "stray.txt").write_text("x")
  with pytest.raises(UserError, match="stray.txt"):
    records.open_corpus(tmp_path)
  rng = np.random.default_rng(8)
  write_corpus(tmp_path / "c", rng, n_train=2)
  corpus = records.open_corpus(tmp_path / "c")
  with pytest.raises(UserError, match="no split 'val'.*test, train"):
    corpus.source("val")
  manifest_path = tmp_path / "c" / "manifest.json"
  manifest = json.loads(manifest_path.read_text())
  manifest["schema_version"] = 99
  manifest_path.write_text(json.dumps(manifest))
  with pytest.raises(UserError, match="schema version 99"):
    records.open_corpus(tmp_path / "c")
  manifest["schema_version"] = records.SCHEMA_VERSION
  manifest_path.write_text(json.dumps(manifest))
  shard = tmp_path / "c" / "train-00000.array_record"
  shard.write_bytes(shard.read_bytes()[:-10] + b"0123456789")
  with pytest.raises(UserError, match="sha256"):
    records.open_corpus(tmp_path / "c", verify=True)
  os.remove(shard)
  with pytest.raises(UserError, match="train-00000.array_record.*missing"):
    records.open_corpus(tmp_path / "c")
