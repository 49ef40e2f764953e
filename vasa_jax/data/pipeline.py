"""grain input pipelines for both training stages.

Both pipelines share one shape (`_assemble`):

  range(items) -> shuffle(seed) -> repeat(epochs) -> map_with_index(example)
  -> [process_index::process_count] -> to_iter_dataset -> batch -> mp_prefetch

Examples are built from (global example index, item) alone: all randomness
comes from `np.random.default_rng([seed, stage, index])`, so a restored
iterator, a different worker count or a different process count yields the
same example for the same index. The per-process slice is taken after the
example transform, so processes share one global example sequence and their
slices are disjoint and together cover it.

A record that fails to read or decode is replaced by a random other record
(drawn from the same example RNG, so still deterministic) and counted in the
example's `n_corrupt_B`; summing it over batches gives the run's count even
with worker processes, where a Python counter would stay in the worker.

Stage 1 batch (frames uint8 in [0, 255]; convert on device, 4x less host
traffic than float32):
  src_BxHxWx3, drv_BxHxWx3, other_BxHxWx3  uint8  frames i, j of one clip and
                                                  one frame of a clip of a
                                                  different identity
  src_id_B, other_id_B                     int32  identities
  src_clip_B, other_clip_B                 int32  record indices in the split
  src_frame_B, drv_frame_B, other_frame_B  int32  frame indices
  src_labels, drv_labels, other_labels     {name: float32 [B]}
  n_corrupt_B                              int32  bad records skipped

Stage 2 batch (L = context K + window W, S = L * sample_rate // fps):
  motion_BxLxD       float32  per-frame motion for frames start-K .. start+W
  audio_BxS          float32  raw audio of the same frames, sample-aligned
  valid_BxL          bool     False for context frames before the clip start
                              (motion there repeats frame 0, audio is silence)
  labels             {name: float32 [B, L]} (same padding as motion)
  gaze_Bx2           float32  attrs["gaze"]      (0 where absent)
  distance_B         float32  attrs["distance"]  (0 where absent)
  emotion_B          int32    attrs["emotion"]   (0 where absent)
  cond_present_Bx3   bool     which of gaze, distance, emotion the clip has
  identity_B, clip_B, start_B, n_corrupt_B  int32
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from vasa_jax.data import face_regions, records
from vasa_jax.errors import UserError

log = logging.getLogger(__name__)

_STAGE1_TAG, _STAGE2_TAG = 1, 2


def _example_rng(seed: int, stage: int, index: int) -> np.random.Generator:
  return np.random.default_rng([seed, stage, index])


def _read(source, clip: int, frame_indices: Sequence[int]
          ) -> dict[str, Any] | None:
  """Reads and decodes one record; None (logged) when it is damaged."""
  try:
    return records.decode_clip(source[clip], frame_indices)
  except (records.CorruptRecord, IndexError) as e:
    log.warning("skipping corrupt record %d: %s", clip, e)
  except Exception as e:  # pylint: disable=broad-except
    # The container itself may fail on a damaged chunk (array_record raises
    # RuntimeError/ValueError); a long run must survive that too.
    log.warning("skipping unreadable record %d: %s: %s", clip,
                type(e).__name__, e)
  return None


def _too_many_corrupt(split: str, tries: int) -> UserError:
  return UserError(f"split {split!r}: {tries} records in a row failed to "
                   "decode; the corpus is damaged (check it with "
                   "open_corpus(..., verify=True) and rewrite it)")


_REGION_LABELS = ("yaw", "pitch", "roll", "tx", "ty", "distance", "mouth_open", "mouth_width", "mouth_round", "smile")


def _frame_regions(clip: dict, frame: int) -> np.ndarray | None:
  """The eye and mouth ellipses of one frame (`face_regions`): from a synthetic clip's geometry,
  or from its face-mesh landmarks (`prepare`); None for a clip with neither."""
  if clip.get("source") == "synthetic" and all(k in clip["labels"] for k in _REGION_LABELS):
    return face_regions.from_synthetic(int(clip["identity"]),
                                       {k: clip["labels"][k][frame] for k in _REGION_LABELS})[0]
  if "landmarks" in clip:
    return face_regions.from_landmarks(np.asarray(clip["landmarks"][frame:frame + 1], np.float32))[0]
  return None


class _Stage1Example:
  """(index, clip) -> source/driver frames of clip + a cross-identity frame."""

  def __init__(self, source, index: records.ClipIndex, *, split: str,
               seed: int, max_retries: int, rare_share: float = 0.0,
               rare_labels: Sequence[str] = (), rare_top: float = 0.1, regions: bool = False,
               cross_clip_share: float = 0.0):
    self.source, self.split, self.regions = source, split, regions
    self.cross_clip_share = cross_clip_share
    self.seed, self.max_retries = seed, max_retries
    self.rare_share, self.rare_labels, self.rare_top = rare_share, tuple(rare_labels), rare_top
    self.identity = index.identity.astype(np.int64)
    self.num_frames = index.num_frames.astype(np.int64)
    # Clips sorted by identity; each clip knows its identity's block, so a
    # clip of another identity is one uniform draw that skips the block.
    self.by_identity = np.argsort(self.identity, kind="stable")
    sorted_ids = self.identity[self.by_identity]
    uniq, first, count = np.unique(sorted_ids, return_index=True,
                                   return_counts=True)
    pos = np.searchsorted(uniq, self.identity)
    self.block_start, self.block_count = first[pos], count[pos]

  def _other_clip(self, clip: int, rng: np.random.Generator) -> int:
    n = len(self.identity) - int(self.block_count[clip])
    r = int(rng.integers(n))
    if r >= self.block_start[clip]:
      r += int(self.block_count[clip])
    return int(self.by_identity[r])

  def _same_identity_clip(self, clip: int, rng: np.random.Generator) -> int | None:
    """Another clip of the same identity, or None where the identity has one clip."""
    n = int(self.block_count[clip])
    if n < 2:
      return None
    block = self.by_identity[self.block_start[clip]:self.block_start[clip] + n]
    mine = int(np.flatnonzero(block == clip)[0])
    r = int(rng.integers(n - 1))
    return int(block[r + 1 if r >= mine else r])

  def _rare_frame(self, clip: int, rng: np.random.Generator) -> int | None:
    """A driver frame where one expression label (drawn at random from `rare_labels`) is far
    from the clip's median: among the `rare_top` share of frames farthest from it."""
    header = _read(self.source, clip, [])
    if header is None:
      return None
    names = [n for n in self.rare_labels if n in header["labels"]]
    if not names:
      return None
    x = np.asarray(header["labels"][names[int(rng.integers(len(names)))]], np.float64)
    dev = np.abs(x - np.median(x))
    k = max(1, int(round(self.rare_top * len(x))))
    far = np.argsort(-dev, kind="stable")[:k]
    return int(far[int(rng.integers(k))])

  def _pair(self, clip: int, rng: np.random.Generator) -> tuple[int, int]:
    num_frames = int(self.num_frames[clip])
    if num_frames < 2:
      return 0, 0
    if self.rare_share and rng.random() < self.rare_share:
      j = self._rare_frame(clip, rng)
      if j is not None and j < num_frames:
        i = int(rng.integers(num_frames - 1))
        return (i + 1 if i >= j else i), j
    i, j = rng.choice(num_frames, 2, replace=False)
    return int(i), int(j)

  def __call__(self, example_index: int, clip: int) -> dict[str, Any]:
    rng = _example_rng(self.seed, _STAGE1_TAG, example_index)
    n_corrupt = 0
    clip = int(clip)
    # A cross-clip driver (`cross_clip_share`): the same identity in another of its clips, whose
    # emotion, gaze and distance differ from the source's, so the decoder must draw them from the
    # driver's motion instead of copying the source (within a clip they barely change).
    drv_clip = clip
    if self.cross_clip_share and rng.random() < self.cross_clip_share:
      drv_clip = self._same_identity_clip(clip, rng)
      drv_clip = clip if drv_clip is None else drv_clip
    for _ in range(self.max_retries):
      if drv_clip == clip:
        i, j = self._pair(clip, rng)
        pair = _read(self.source, clip, [i, j])
        drv = pair
      else:
        i = int(rng.integers(self.num_frames[clip]))
        j = int(rng.integers(self.num_frames[drv_clip]))
        pair = _read(self.source, clip, [i])
        drv = None if pair is None else _read(self.source, drv_clip, [j])
        if pair is not None and drv is not None:
          pair = dict(pair, frames=np.stack([pair["frames"][0], drv["frames"][0]]))
      if pair is not None and drv is not None:
        break
      n_corrupt += 1
      clip = drv_clip = int(rng.integers(len(self.identity)))
    else:
      raise _too_many_corrupt(self.split, self.max_retries)
    for _ in range(self.max_retries):
      other_clip = self._other_clip(clip, rng)
      k = int(rng.integers(self.num_frames[other_clip]))
      other = _read(self.source, other_clip, [k])
      if other is not None:
        break
      n_corrupt += 1
    else:
      raise _too_many_corrupt(self.split, self.max_retries)
    labels = pair["labels"]
    regions = _frame_regions(drv, j) if self.regions else None
    return {
        **({} if regions is None else {"drv_regions_Bx3x4": regions}),
        "src_BxHxWx3": pair["frames"][0],
        "drv_BxHxWx3": pair["frames"][1],
        "other_BxHxWx3": other["frames"][0],
        "src_id_B": np.int32(pair["identity"]),
        "other_id_B": np.int32(other["identity"]),
        "src_clip_B": np.int32(clip),
        "other_clip_B": np.int32(other_clip),
        "drv_clip_B": np.int32(drv_clip),
        "src_frame_B": np.int32(i),
        "drv_frame_B": np.int32(j),
        "other_frame_B": np.int32(k),
        "src_labels": {n: v[i] for n, v in labels.items()},
        "drv_labels": {n: v[j] for n, v in drv["labels"].items()},
        "other_labels": {n: v[k] for n, v in other["labels"].items()},
        "n_corrupt_B": np.int32(n_corrupt),
    }


class _Stage2Example:
  """(index, slot) -> K context + W window frames of motion, audio, labels."""

  def __init__(self, source, slot_clip: np.ndarray, slot_lo: np.ndarray,
               slot_hi: np.ndarray, *, split: str, seed: int, window: int,
               context: int, fps: int, sample_rate: int, motion_key: str,
               motion_from_labels: Sequence[str] | None, max_retries: int):
    self.source, self.split, self.seed = source, split, seed
    self.slot_clip, self.slot_lo, self.slot_hi = slot_clip, slot_lo, slot_hi
    self.window, self.context = window, context
    self.fps, self.sample_rate = fps, sample_rate
    self.motion_key = motion_key
    self.motion_from_labels = (None if motion_from_labels is None
                               else tuple(motion_from_labels))
    self.max_retries = max_retries

  def _motion_TxD(self, clip: dict[str, Any]) -> np.ndarray:
    if self.motion_from_labels is not None:
      return np.stack([clip["labels"][n] for n in self.motion_from_labels],
                      axis=-1).astype(np.float32)
    motion = np.asarray(clip[self.motion_key], np.float32)
    return motion.reshape(motion.shape[0], -1)

  def __call__(self, example_index: int, slot: int) -> dict[str, Any]:
    rng = _example_rng(self.seed, _STAGE2_TAG, example_index)
    n_corrupt = 0
    slot = int(slot)
    for _ in range(self.max_retries):
      start = int(rng.integers(self.slot_lo[slot], self.slot_hi[slot]))
      clip_idx = int(self.slot_clip[slot])
      clip = _read(self.source, clip_idx, [])
      if clip is not None:
        try:
          motion_TxD = self._motion_TxD(clip)
          break
        except (KeyError, ValueError) as e:
          log.warning("skipping record %d without usable motion: %s",
                      clip_idx, e)
      n_corrupt += 1
      slot = int(rng.integers(len(self.slot_clip)))
    else:
      raise _too_many_corrupt(self.split, self.max_retries)

    length = self.context + self.window
    first = start - self.context
    frames_L = np.arange(first, first + length)
    valid_L = frames_L >= 0
    # Context before the clip start repeats frame 0 (in-distribution values);
    # valid_L tells the model to treat it as absent.
    take_L = np.clip(frames_L, 0, motion_TxD.shape[0] - 1)

    # Frame f starts at sample f * sr // fps; the slice has exactly
    # length * sr // fps samples, zero-padded outside the clip.
    audio = clip["audio"]
    num_samples = length * self.sample_rate // self.fps
    a0 = first * self.sample_rate // self.fps
    audio_S = np.zeros(num_samples, np.float32)
    lo, hi = max(a0, 0), min(a0 + num_samples, audio.shape[0])
    if hi > lo:
      audio_S[lo - a0:hi - a0] = audio[lo:hi]

    attrs = clip["attrs"]
    gaze = attrs.get("gaze")
    distance = attrs.get("distance")
    emotion = attrs.get("emotion")
    return {
        "motion_BxLxD": motion_TxD[take_L],
        "audio_BxS": audio_S,
        "valid_BxL": valid_L,
        "labels": {n: v[take_L] for n, v in clip["labels"].items()},
        "gaze_Bx2": (np.zeros(2, np.float32) if gaze is None
                     else np.asarray(gaze, np.float32).reshape(2)),
        "distance_B": np.float32(0.0 if distance is None else distance),
        "emotion_B": np.int32(0 if emotion is None else emotion),
        "cond_present_Bx3": np.array(
            [gaze is not None, distance is not None, emotion is not None]),
        "identity_B": np.int32(clip["identity"]),
        "clip_B": np.int32(clip_idx),
        "start_B": np.int32(start),
        "n_corrupt_B": np.int32(n_corrupt),
    }


def _mark_flags_parsed(worker_index: int = 0, worker_count: int = 0) -> None:
  """grain reads absl flags; unparsed flags raise UnparsedFlagAccessError."""
  del worker_index, worker_count
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _process_slice(process_index: int | None, process_count: int | None
                   ) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    if process_index is None:
      process_index = jax.process_index()
    if process_count is None:
      process_count = jax.process_count()
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in "
                     f"[0, {process_count})")
  return process_index, process_count


def _assemble(num_items: int, transform, *, seed: int,
              num_epochs: int | None, batch_size: int,
              process_index: int | None, process_count: int | None,
              num_workers: int, read_threads: int,
              read_buffer: int | None) -> grain.IterDataset:
  process_index, process_count = _process_slice(process_index, process_count)
  if not 0 <= seed < 2**32:
    raise ValueError(f"seed must be in [0, 2**32), got {seed}")
  ds = grain.MapDataset.range(num_items).shuffle(seed=seed)
  ds = ds.repeat(num_epochs)  # reseeds the shuffle every epoch
  ds = ds.map_with_index(transform)
  ds = ds[process_index::process_count]
  ds = ds.to_iter_dataset(grain.ReadOptions(
      num_threads=read_threads,
      prefetch_buffer_size=read_buffer or 2 * batch_size))
  ds = ds.batch(batch_size, drop_remainder=True)
  if num_workers > 0:
    _mark_flags_parsed()
    ds = ds.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=num_workers,
                                     per_worker_buffer_size=2),
        worker_init_fn=_mark_flags_parsed)
  return ds


def _open(corpus: records.Corpus | str | os.PathLike) -> records.Corpus:
  if isinstance(corpus, records.Corpus):
    return corpus
  return records.open_corpus(corpus)


def stage1_dataset(corpus: records.Corpus | str | os.PathLike, split: str, *,
                   batch_size: int, seed: int = 0,
                   num_epochs: int | None = None,
                   process_index: int | None = None,
                   process_count: int | None = None, num_workers: int = 0,
                   read_threads: int = 4, read_buffer: int | None = None,
                   max_retries: int = 16, source=None, rare_share: float = 0.0,
                   rare_labels: Sequence[str] = (), regions: bool = False,
                   cross_clip_share: float = 0.0) -> grain.IterDataset:
  """Stage-1 batches of same-clip frame pairs + cross-identity frames.

  One epoch draws every clip once as the source clip. num_epochs=None repeats
  forever. With `rare_share` > 0, that share of drivers is a rare frame: for one of
  `rare_labels` (drawn at random), one of the 10% of the clip's frames farthest from its
  median (a blink, a wide-open mouth, a glance aside), which uniform draws see seldom
  (eyes are shut in ~5% of frames). `regions`: each example also carries its driver's eye and
  mouth ellipses (`drv_regions_Bx3x4`, for `loss.face_regions`) where the clip's geometry or
  landmarks give them. `cross_clip_share`: that share of drivers is a frame of another clip of the
  source's identity (a synthetic identity looks the same in all its clips, but its emotion, gaze and
  distance differ between them; use it on real video only where a person's clips share the setting).
  process_index/count default to jax's. `source` overrides the
  split's ArrayRecord source (same records, e.g. cached in memory).
  Checkpoint `iter(ds)` with grain.checkpoint.CheckpointSave.
  """
  corpus = _open(corpus)
  if not corpus.manifest.get("has_frames", True):
    raise UserError(f"corpus {corpus.root} has no frames (kind "
                    f"{corpus.manifest.get('kind')!r}); stage 1 needs a clip "
                    "corpus")
  index = corpus.index(split)
  if len(np.unique(index.identity)) < 2:
    raise UserError(f"split {split!r} of corpus {corpus.root} has "
                    f"{len(np.unique(index.identity))} identity; stage 1 "
                    "needs at least 2 for cross-identity pairs")
  transform = _Stage1Example(
      source if source is not None else corpus.source(split), index,
      split=split, seed=seed, max_retries=max_retries, rare_share=rare_share,
      rare_labels=rare_labels, regions=regions, cross_clip_share=cross_clip_share)
  return _assemble(len(index), transform, seed=seed, num_epochs=num_epochs,
                   batch_size=batch_size, process_index=process_index,
                   process_count=process_count, num_workers=num_workers,
                   read_threads=read_threads, read_buffer=read_buffer)


def stage2_windows(num_frames: np.ndarray, window: int, hop: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Window slots: (clip, lo, hi) with the window start drawn from [lo, hi).

  Each clip with T >= window frames has ceil((T - window + 1) / hop) slots
  that partition its valid starts [0, T - window], so every start is
  reachable and longer clips give proportionally more examples per epoch.
  """
  clips, los, his = [], [], []
  for clip, t in enumerate(np.asarray(num_frames)):
    starts = int(t) - window + 1
    for lo in range(0, max(starts, 0), hop):
      clips.append(clip)
      los.append(lo)
      his.append(min(lo + hop, starts))
  return (np.asarray(clips, np.int64), np.asarray(los, np.int64),
          np.asarray(his, np.int64))


def stage2_dataset(corpus: records.Corpus | str | os.PathLike, split: str, *,
                   batch_size: int, window: int = 50, context: int = 10,
                   hop: int | None = None, seed: int = 0,
                   motion_key: str = "motion",
                   motion_from_labels: Sequence[str] | None = None,
                   num_epochs: int | None = None,
                   process_index: int | None = None,
                   process_count: int | None = None, num_workers: int = 0,
                   read_threads: int = 4, read_buffer: int | None = None,
                   max_retries: int = 16, source=None) -> grain.IterDataset:
  """Stage-2 batches of motion windows with their K context frames.

  Motion comes from the records' per-frame `motion_key` array, or, with
  motion_from_labels=(names...), from those labels stacked (for tests and
  the synthetic corpus before a stage-1 encoder exists). hop defaults to
  `window`. Clips shorter than `window` frames are left out.
  """
  corpus = _open(corpus)
  manifest = corpus.manifest
  if motion_from_labels is not None:
    missing = sorted(set(motion_from_labels) - set(manifest["label_names"]))
    if missing or not motion_from_labels:
      raise UserError(f"corpus {corpus.root} lacks labels {missing or '()'} "
                      f"for motion; it has: "
                      f"{', '.join(manifest['label_names']) or '(none)'}")
  elif motion_key not in manifest["per_frame_keys"]:
    raise UserError(
        f"corpus {corpus.root} has no per-frame {motion_key!r} arrays (it "
        f"has: {', '.join(manifest['per_frame_keys']) or '(none)'}); encode "
        "the clips with the stage-1 model first or pass motion_from_labels")
  if window < 1 or context < 0:
    raise ValueError(f"window {window} must be >= 1 and context {context} "
                     ">= 0")
  index = corpus.index(split)
  slot_clip, slot_lo, slot_hi = stage2_windows(index.num_frames, window,
                                               hop or window)
  if not len(slot_clip):
    raise UserError(f"no clip in split {split!r} of corpus {corpus.root} has "
                    f"the {window} frames a stage-2 window needs (longest: "
                    f"{int(index.num_frames.max(initial=0))})")
  short = int(np.sum(index.num_frames < window))
  if short:
    log.info("stage 2: %d of %d clips in %r are shorter than %d frames and "
             "are left out", short, len(index), split, window)
  transform = _Stage2Example(
      source if source is not None else corpus.source(split), slot_clip,
      slot_lo, slot_hi, split=split, seed=seed, window=window,
      context=context, fps=int(manifest["fps"]),
      sample_rate=int(manifest["sample_rate"]), motion_key=motion_key,
      motion_from_labels=motion_from_labels, max_retries=max_retries)
  return _assemble(len(slot_clip), transform, seed=seed,
                   num_epochs=num_epochs, batch_size=batch_size,
                   process_index=process_index, process_count=process_count,
                   num_workers=num_workers, read_threads=read_threads,
                   read_buffer=read_buffer)
