"""grain pipelines: contents, determinism, slicing, resume, corruption."""

import itertools
import os
import shutil

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from vasa_jax.data import pipeline
from vasa_jax.data import records
from vasa_jax.errors import UserError

FPS, SR = 25, 16000
SPF = SR // FPS  # samples per frame
NUM_CLIPS = 8


def ramp_clip(rng, clip_index, num_frames, size=32):
  """A clip whose frames, labels, motion and audio all encode frame numbers.

  Frame t is filled with value 10*clip + t, label "t" is t, motion[t] is
  (t, clip), and audio in frame t is t/100, so alignment is checkable.
  """
  t_T = np.arange(num_frames)
  frames = np.zeros((num_frames, size, size, 3), np.uint8)
  frames += (10 * clip_index + t_T).astype(np.uint8)[:, None, None, None]
  frames[:, :4] = rng.integers(0, 256, (num_frames, 4, size, 3), np.uint8)
  return {
      "clip_id": f"c{clip_index}", "identity": clip_index % 3,
      "source": "synthetic", "fps": FPS, "sample_rate": SR,
      "frames": frames,
      "audio": np.repeat(t_T / 100, SPF).astype(np.float32),
      "labels": {"t": t_T.astype(np.float32),
                 "yaw": rng.normal(size=num_frames).astype(np.float32)},
      "attrs": {"gaze": np.array([0.5, -0.5], np.float32),
                "distance": np.float32(1.0 + clip_index), "emotion": 2},
      "motion": np.stack([t_T, np.full(num_frames, clip_index)], -1
                         ).astype(np.float32),
  }


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("corpus")
  rng = np.random.default_rng(0)
  with records.CorpusWriter(root, resolution=32, fps=FPS, clips_per_shard=3,
                            frame_codec="png") as writer:
    for c in range(NUM_CLIPS):
      writer.add("train", ramp_clip(rng, c, num_frames=6 + 2 * c))
  return str(root)


def stage1(corpus, **kwargs):
  defaults = dict(batch_size=2, seed=3, process_index=0, process_count=1,
                  read_threads=1)
  return pipeline.stage1_dataset(corpus, "train", **{**defaults, **kwargs})


def stage2(corpus, **kwargs):
  defaults = dict(batch_size=2, window=6, context=4, seed=3, process_index=0,
                  process_count=1, read_threads=1)
  return pipeline.stage2_dataset(corpus, "train", **{**defaults, **kwargs})


def examples(batches, keys):
  """Flattens batches into per-example tuples of the given keys."""
  out = []
  for batch in batches:
    for b in range(len(batch[keys[0]])):
      out.append(tuple(int(batch[k][b]) for k in keys))
  return out


STAGE1_KEYS = ("src_clip_B", "src_frame_B", "drv_frame_B", "other_clip_B",
               "other_frame_B")


def test_stage1_batch_contents(corpus_dir):
  batch = next(iter(stage1(corpus_dir, batch_size=4)))
  index = records.open_corpus(corpus_dir).index("train")
  assert batch["src_BxHxWx3"].shape == (4, 32, 32, 3)
  assert batch["src_BxHxWx3"].dtype == np.uint8
  for b in range(4):
    src, other = batch["src_clip_B"][b], batch["other_clip_B"][b]
    i, j, k = (batch[n][b] for n in ("src_frame_B", "drv_frame_B",
                                     "other_frame_B"))
    assert i != j
    assert batch["src_id_B"][b] == index.identity[src]
    assert batch["other_id_B"][b] == index.identity[other]
    assert batch["src_id_B"][b] != batch["other_id_B"][b]
    # Frame pixels below the noise strip encode clip and frame number.
    assert batch["src_BxHxWx3"][b, 10, 10, 0] == 10 * src + i
    assert batch["drv_BxHxWx3"][b, 10, 10, 0] == 10 * src + j
    assert batch["other_BxHxWx3"][b, 10, 10, 0] == 10 * other + k
    assert batch["src_labels"]["t"][b] == i
    assert batch["drv_labels"]["t"][b] == j
    assert batch["other_labels"]["t"][b] == k
  assert batch["n_corrupt_B"].sum() == 0


def test_rare_drivers_are_the_frames_farthest_from_the_clip_median(corpus_dir):
  source = records.open_corpus(corpus_dir).source("train")
  batches = list(itertools.islice(iter(stage1(corpus_dir, batch_size=4, rare_share=1.0,
                                                rare_labels=("yaw", "absent"))), 6))
  seen = 0
  for batch in batches:
    for b in range(4):
      clip = records.decode_clip(source[int(batch["src_clip_B"][b])], [])
      yaw = clip["labels"]["yaw"]
      dev = np.abs(yaw - np.median(yaw))
      k = max(1, round(0.1 * len(yaw)))
      i, j = batch["src_frame_B"][b], batch["drv_frame_B"][b]
      assert i != j
      assert dev[j] >= np.sort(dev)[-k]  # Among the clip's k most unusual frames.
      assert batch["drv_labels"]["yaw"][b] == yaw[j]
      seen += 1
  assert seen == 24
  # These clips are neither synthetic nor landmarked: asked for, no face regions ride along.
  asked = next(iter(stage1(corpus_dir, batch_size=4, regions=True)))
  assert not any("regions" in k for k in asked)
  # Off (the default), the draws are the uniform ones, unchanged.
  plain = next(iter(stage1(corpus_dir, batch_size=4)))
  off = next(iter(stage1(corpus_dir, batch_size=4, rare_share=0.0, rare_labels=("yaw",))))
  for key in STAGE1_KEYS:
    np.testing.assert_array_equal(plain[key], off[key])


def test_cross_clip_drivers_come_from_another_clip_of_the_same_identity(corpus_dir):
  index = records.open_corpus(corpus_dir).index("train")
  batches = list(itertools.islice(iter(stage1(corpus_dir, batch_size=4, cross_clip_share=1.0)), 5))
  for batch in batches:
    for b in range(4):
      src, drv = int(batch["src_clip_B"][b]), int(batch["drv_clip_B"][b])
      assert drv != src and index.identity[drv] == index.identity[src]
      j = batch["drv_frame_B"][b]
      assert batch["drv_BxHxWx3"][b, 10, 10, 0] == 10 * drv + j    # the driver clip's pixels
      assert batch["drv_labels"]["t"][b] == j                      # and its labels
      assert batch["src_BxHxWx3"][b, 10, 10, 0] == 10 * src + batch["src_frame_B"][b]
  # Off (the default), every driver is from the source's clip and the draws are unchanged.
  plain = next(iter(stage1(corpus_dir, batch_size=4)))
  off = next(iter(stage1(corpus_dir, batch_size=4, cross_clip_share=0.0)))
  np.testing.assert_array_equal(plain["drv_clip_B"], plain["src_clip_B"])
  for key in STAGE1_KEYS:
    np.testing.assert_array_equal(plain[key], off[key])


@pytest.mark.parametrize("from_labels", [False, True])
def test_stage2_windows_are_aligned(corpus_dir, from_labels):
  k, w = 4, 6
  kwargs = dict(motion_from_labels=("t",)) if from_labels else {}
  ds = stage2(corpus_dir, batch_size=4, num_epochs=1, **kwargs)
  starts_seen = []
  for batch in ds:
    assert batch["audio_BxS"].shape == (4, (k + w) * SPF)
    assert batch["motion_BxLxD"].shape == (4, k + w, 1 if from_labels else 2)
    np.testing.assert_array_equal(batch["cond_present_Bx3"], True)
    np.testing.assert_allclose(batch["gaze_Bx2"], [[0.5, -0.5]] * 4)
    for b in range(4):
      start, clip = batch["start_B"][b], batch["clip_B"][b]
      starts_seen.append(start)
      frames_L = np.arange(start - k, start + w)
      valid_L = frames_L >= 0
      np.testing.assert_array_equal(batch["valid_BxL"][b], valid_L)
      np.testing.assert_array_equal(batch["motion_BxLxD"][b, :, 0],
                                    np.maximum(frames_L, 0))
      np.testing.assert_array_equal(batch["labels"]["t"][b],
                                    np.maximum(frames_L, 0))
      assert batch["distance_B"][b] == 1.0 + clip
      audio_LxSPF = batch["audio_BxS"][b].reshape(k + w, SPF)
      expect_L = np.where(valid_L, frames_L / 100, 0.0)
      np.testing.assert_allclose(
          audio_LxSPF, np.broadcast_to(expect_L[:, None], audio_LxSPF.shape),
          atol=1e-4)
      assert start + w <= 6 + 2 * clip  # window stays inside the clip
  assert min(starts_seen) < k  # some windows exercise the padded context


def test_stage2_window_slots_cover_every_start():
  clip, lo, hi = pipeline.stage2_windows(np.array([3, 5, 12]), window=5, hop=3)
  starts = [(int(c), s) for c, a, b in zip(clip, lo, hi) for s in range(a, b)]
  assert starts == [(1, 0)] + [(2, s) for s in range(8)]


def test_seeded_and_epoch_counts(corpus_dir):
  first = examples(itertools.islice(stage1(corpus_dir), 6), STAGE1_KEYS)
  again = examples(itertools.islice(stage1(corpus_dir), 6), STAGE1_KEYS)
  other = examples(itertools.islice(stage1(corpus_dir, seed=4), 6),
                   STAGE1_KEYS)
  assert first == again and first != other
  two_epochs = examples(stage1(corpus_dir, batch_size=3, num_epochs=2),
                        STAGE1_KEYS)
  assert len(two_epochs) == (2 * NUM_CLIPS) // 3 * 3
  # Each epoch is a permutation of the clips, shuffled differently.
  one_epoch = examples(stage1(corpus_dir, batch_size=1, num_epochs=2),
                       STAGE1_KEYS)
  epoch0 = [e[0] for e in one_epoch[:NUM_CLIPS]]
  epoch1 = [e[0] for e in one_epoch[NUM_CLIPS:]]
  assert sorted(epoch0) == sorted(epoch1) == list(range(NUM_CLIPS))
  assert epoch0 != epoch1


def test_process_slices_are_disjoint_and_cover(corpus_dir):
  whole = examples(stage1(corpus_dir, batch_size=1, num_epochs=2),
                   STAGE1_KEYS)
  parts = [examples(stage1(corpus_dir, batch_size=1, num_epochs=2,
                           process_index=p, process_count=3), STAGE1_KEYS)
           for p in range(3)]
  # Process p gets global examples p, p+3, ...: disjoint, and together all.
  for p, part in enumerate(parts):
    assert part == whole[p::3]
  assert sorted(sum(parts, [])) == sorted(whole)
  windows = examples(stage2(corpus_dir, batch_size=1, num_epochs=1),
                     ("clip_B", "start_B"))
  window_parts = [examples(stage2(corpus_dir, batch_size=1, num_epochs=1,
                                  process_index=p, process_count=2),
                           ("clip_B", "start_B")) for p in range(2)]
  assert window_parts[0] + window_parts[1] != windows  # interleaved, not split
  assert sorted(window_parts[0] + window_parts[1]) == sorted(windows)


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    flat_x, flat_y = (dict(_flatten(x)), dict(_flatten(y)))
    assert flat_x.keys() == flat_y.keys()
    for key in flat_x:
      np.testing.assert_array_equal(flat_x[key], flat_y[key], err_msg=key)


def _flatten(tree, prefix=""):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _flatten(value, prefix + key + "/")
    else:
      yield prefix + key, value


@pytest.mark.parametrize("stage,num_workers", [(1, 0), (2, 0), (1, 2)])
def test_orbax_checkpoint_restores_iterator_exactly(corpus_dir, tmp_path,
                                                    stage, num_workers):
  make = stage1 if stage == 1 else stage2
  ds = make(corpus_dir, num_workers=num_workers)
  it = iter(ds)
  for _ in range(3):
    next(it)
  state = {"step": np.asarray(3, np.int32), "w": np.arange(4, dtype=np.float32)}
  options = ocp.CheckpointManagerOptions(max_to_keep=2)
  with ocp.CheckpointManager(tmp_path / "ckpt", options=options,
                             item_names=("state", "data")) as manager:
    manager.save(3, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(it)))
    manager.wait_until_finished()
  expected = [next(it) for _ in range(4)]
  if num_workers:
    it.close()

  fresh = iter(make(corpus_dir, num_workers=num_workers))
  with ocp.CheckpointManager(tmp_path / "ckpt", options=options,
                             item_names=("state", "data")) as manager:
    assert manager.latest_step() == 3
    restored = manager.restore(3, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(state),
        data=grain.checkpoint.CheckpointRestore(fresh)))
  np.testing.assert_array_equal(restored.state["w"], state["w"])
  assert restored.data is fresh
  assert_batches_equal([next(fresh) for _ in range(4)], expected)
  if num_workers:
    fresh.close()


def test_worker_processes_give_the_same_examples(corpus_dir):
  plain = examples(stage1(corpus_dir, num_epochs=1), STAGE1_KEYS)
  ds = stage1(corpus_dir, num_epochs=1, num_workers=2)
  it = iter(ds)
  with_workers = examples(list(it), STAGE1_KEYS)
  it.close()
  # Workers batch their own slices, so batches mix differently, but every
  # example is a function of its global index.
  assert sorted(with_workers) == sorted(plain)


class FlakySource:
  """Wraps a source; some records come back damaged."""

  def __init__(self, source, bad):
    self.source, self.bad = source, bad

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    data = self.source[i]
    if i in self.bad:
      return data[:len(data) // 2]  # truncated
    return data


def test_corrupt_records_are_skipped_and_counted(corpus_dir):
  corpus = records.open_corpus(corpus_dir)
  bad = {2, 5}
  clean = list(stage1(corpus, batch_size=1, num_epochs=2))
  flaky = list(stage1(corpus, batch_size=1, num_epochs=2,
                      source=FlakySource(corpus.source("train"), bad)))
  assert len(flaky) == len(clean)
  total = sum(int(b["n_corrupt_B"].sum()) for b in flaky)
  assert total >= 4  # each bad clip is drawn as source clip once per epoch
  for c, f in zip(clean, flaky):
    assert int(f["src_clip_B"][0]) not in bad
    assert int(f["other_clip_B"][0]) not in bad
    if f["n_corrupt_B"][0] == 0:  # untouched examples are unchanged
      assert_batches_equal([f], [c])
  windows = list(stage2(corpus, batch_size=1, num_epochs=1,
                        source=FlakySource(corpus.source("train"), bad)))
  assert sum(int(b["n_corrupt_B"].sum()) for b in windows) >= 1
  assert not bad & {int(b["clip_B"][0]) for b in windows}


def test_damaged_shard_files_do_not_stop_the_run(corpus_dir, tmp_path):
  # Copy the corpus, flip bytes inside one record and truncate one shard.
  root = tmp_path / "damaged"
  root.mkdir()
  for name in os.listdir(corpus_dir):
    shutil.copy(os.path.join(corpus_dir, name), root / name)
  shard0 = root / "train-00000.array_record"
  data = bytearray(shard0.read_bytes())
  pos = data.find(b'"clip_id":"c1"')
  assert pos > 0
  data[pos + 11] ^= 0x01  # c1's header; its CRC (or the chunk hash) fails
  shard0.write_bytes(bytes(data))
  shard2 = root / "train-00002.array_record"  # clips 6, 7
  shard2.write_bytes(shard2.read_bytes()[:100])
  batches = list(stage1(str(root), batch_size=1, num_epochs=1))
  assert len(batches) == NUM_CLIPS
  used = {int(b[k][0]) for b in batches for k in ("src_clip_B",
                                                  "other_clip_B")}
  assert not used & {1, 6, 7}
  assert sum(int(b["n_corrupt_B"][0]) for b in batches) >= 3


def test_user_errors(corpus_dir, tmp_path):
  with pytest.raises(UserError, match="no split 'val'"):
    pipeline.stage1_dataset(corpus_dir, "val", batch_size=1,
                            process_index=0, process_count=1)
  with pytest.raises(UserError, match="no per-frame 'latent'.*motion"):
    stage2(corpus_dir, motion_key="latent")
  with pytest.raises(UserError, match="lacks labels.*pitch"):
    stage2(corpus_dir, motion_from_labels=("t", "pitch"))
  with pytest.raises(UserError, match="has the 100 frames"):
    stage2(corpus_dir, window=100)
  rng = np.random.default_rng(1)
  with records.CorpusWriter(tmp_path / "one", resolution=32, fps=FPS) as w:
    for c in (0, 3):  # both identity 0
      w.add("train", ramp_clip(rng, c, num_frames=6))
  with pytest.raises(UserError, match="at least 2"):
    stage1(str(tmp_path / "one"))
