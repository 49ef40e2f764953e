"""Writing a corpus: clips -> ArrayRecord shards, per-split indices and a manifest, atomically.

The corpus folder may be local or on `gs://` (`vasa_jax.paths`). ArrayRecord writes local files
only, so for `gs://` the shards are written into a local scratch folder and uploaded at `close`,
each as one object (visible only once whole), the manifest last.

The bytes of each record and the folder's names are `records_format`'s; `records_reader`
opens what this writes. Callers import both through `vasa_jax.data.records`.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import tempfile
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
from array_record.python import array_record_module

from vasa_jax import interrupt, paths
from vasa_jax.data import records_format as fmt
from vasa_jax.errors import UserError


class _SplitWriter:
  """Shards of one split being written into the temp dir."""

  def __init__(self, tmp_dir: str, split: str, clips_per_shard: int):
    self.tmp_dir, self.split = tmp_dir, split
    self.clips_per_shard = clips_per_shard
    self.shards: list[dict[str, Any]] = []
    self.clip_ids: list[str] = []
    self.identities: list[int] = []
    self.num_frames: list[int] = []
    self._writer = None

  def add(self, record: bytes, clip_id: str, identity: int, num_frames: int):
    if self._writer is None:
      name = fmt.shard_name(self.split, len(self.shards))
      self._writer = array_record_module.ArrayRecordWriter(
          os.path.join(self.tmp_dir, name), fmt.ARRAY_RECORD_OPTIONS)
      self.shards.append({"file": name, "clips": 0})
    self._writer.write(record)
    self.shards[-1]["clips"] += 1
    self.clip_ids.append(clip_id)
    self.identities.append(identity)
    self.num_frames.append(num_frames)
    if self.shards[-1]["clips"] >= self.clips_per_shard:
      self.close_shard()

  def close_shard(self):
    if self._writer is not None:
      self._writer.close()
      self._writer = None


class CorpusWriter:
  """Writes clips into ArrayRecord shards plus a manifest, atomically.

  Usage:
    with CorpusWriter(out_dir, resolution=256, fps=25) as writer:
      writer.add("train", clip)

  Everything goes to a hidden temp folder inside out_dir first (a local scratch
  folder when out_dir is on `gs://`); only a clean close moves the files in and
  writes manifest.json last, so an interrupted or failed write leaves no corpus
  that `open_corpus` would accept.
  """

  def __init__(self, out_dir: str | os.PathLike, *,
               resolution: int | tuple[int, int] | None, fps: int,
               sample_rate: int = 16000, clips_per_shard: int = 256,
               frame_codec: str = "jpeg", jpeg_quality: int = 95,
               kind: str = "clip", overwrite: bool = False):
    if frame_codec not in fmt.FRAME_CODECS:
      raise UserError(f"frame codec {frame_codec!r} is not supported; "
                      f"accepted: {', '.join(fmt.FRAME_CODECS)}")
    if clips_per_shard < 1:
      raise ValueError(f"clips_per_shard must be >= 1, got {clips_per_shard}")
    self.out_dir = os.fspath(out_dir)
    if isinstance(resolution, int):
      resolution = (resolution, resolution)
    self.resolution = None if resolution is None else tuple(resolution)
    self.fps, self.sample_rate = int(fps), int(sample_rate)
    self.clips_per_shard = clips_per_shard
    self.frame_codec, self.jpeg_quality = frame_codec, jpeg_quality
    self.kind, self.overwrite = kind, overwrite
    self._splits: dict[str, _SplitWriter] = {}
    self._label_names: list[str] | None = None
    self._per_frame_keys: list[str] | None = None
    self._has_frames: bool | None = None
    self._tmp_dir: str | None = None
    self._remote = not paths.is_local(self.out_dir)
    self._moved_in: dict[str, tuple[str, int | None, str | None]] = {}  # name -> remote source, bytes, sha256

  def __enter__(self) -> CorpusWriter:
    manifest = os.path.join(self.out_dir, fmt.MANIFEST_NAME)
    if paths.path(manifest).exists() and not self.overwrite:
      raise UserError(f"{self.out_dir} already holds a corpus "
                      f"({fmt.MANIFEST_NAME}); choose an empty folder or pass "
                      "overwrite=True")
    if self._remote:
      self._tmp_dir = tempfile.mkdtemp(prefix="vasa_jax-corpus-")
    else:
      os.makedirs(self.out_dir, exist_ok=True)
      self._tmp_dir = os.path.join(self.out_dir,
                                   f".incomplete-{uuid.uuid4().hex[:12]}")
      os.makedirs(self._tmp_dir)
    interrupt.register(self._tmp_dir)
    return self

  def __exit__(self, exc_type, exc, tb):
    if exc_type is None:
      self.close()
    else:
      self.abort()
    return False

  def add(self, split: str, clip: Mapping[str, Any]) -> None:
    """Encodes and appends one clip to `split`."""
    self._check(split, clip)
    record = fmt.encode_clip(clip, frame_codec=self.frame_codec,
                         jpeg_quality=self.jpeg_quality)
    writer = self._split(split)
    writer.add(record, str(clip["clip_id"]), int(clip["identity"]),
               fmt.clip_num_frames_from_arrays(clip))

  def _check(self, split: str, clip: Mapping[str, Any]) -> None:
    """What every clip of a corpus must share: fps, rate, frames or not, resolution, names."""
    if self._tmp_dir is None:
      raise RuntimeError("CorpusWriter.add outside its `with` block")
    if not split or not split.replace("_", "").replace(".", "").isalnum():
      raise ValueError(f"split name {split!r}: use letters, digits, _ or .")
    clip_id = str(clip["clip_id"])
    if (int(clip["fps"]) != self.fps
        or int(clip["sample_rate"]) != self.sample_rate):
      raise ValueError(f"clip {clip_id}: fps/sample_rate {clip['fps']}/"
                       f"{clip['sample_rate']} differ from the corpus's "
                       f"{self.fps}/{self.sample_rate}")
    frames = clip.get("frames")
    has_frames = frames is not None
    if self._has_frames is None:
      self._has_frames = has_frames
    if has_frames != self._has_frames:
      raise ValueError(f"clip {clip_id}: all clips of a corpus must have "
                       "frames, or none")
    if has_frames and self.resolution is not None:
      if tuple(np.shape(frames)[1:3]) != self.resolution:
        raise ValueError(f"clip {clip_id}: frames are {np.shape(frames)[1:3]}"
                         f", the corpus resolution is {self.resolution}")
    # Pipelines batch labels and per-frame arrays by name: keep them uniform.
    labels = sorted((clip.get("labels") or {}).keys())
    extras = fmt.per_frame_keys(clip)
    if self._label_names is None:
      self._label_names, self._per_frame_keys = labels, extras
    if labels != self._label_names or extras != self._per_frame_keys:
      raise ValueError(
          f"clip {clip_id}: labels {labels} / per-frame keys {extras} differ "
          f"from the corpus's {self._label_names} / {self._per_frame_keys}")

  def add_record(self, split: str, record: bytes) -> None:
    """Appends an already encoded clip record (`records_format.encode_clip`) to `split` as it is,
    after the same checks as `add` (its frames are not decoded or re-compressed)."""
    clip = self._check_record(split, record)
    writer = self._split(split)
    writer.add(record, str(clip["clip_id"]), int(clip["identity"]), fmt.clip_num_frames(record))

  def add_shard(self, split: str, path: str, clip_ids: list[str], identities: list[int],
                num_frames: list[int], first_record: bytes, *, size: int | None = None,
                sha256: str | None = None) -> None:
    """Moves in a finished ArrayRecord shard (written elsewhere, e.g. by `prepare_beam`'s workers) as
    `split`'s next shard, as it is. `first_record` (one of its records) gets `add_record`'s checks;
    the lists describe its records in order, for the split's index. A `gs://` shard stays where it
    is until `close` moves it (server-side); its `size` and `sha256`, when given, spare reading it."""
    self._check_record(split, first_record)
    writer = self._split(split)
    writer.close_shard()  # A shard of single records in progress ends here; this one follows it.
    name = fmt.shard_name(split, len(writer.shards))
    if paths.is_local(path):
      os.replace(path, os.path.join(self._tmp_dir, name))
    else:
      self._moved_in[name] = (path, size, sha256)
    writer.shards.append({"file": name, "clips": len(clip_ids)})
    writer.clip_ids.extend(str(c) for c in clip_ids)
    writer.identities.extend(int(i) for i in identities)
    writer.num_frames.extend(int(n) for n in num_frames)

  def _check_record(self, split: str, record: bytes) -> dict[str, Any]:
    clip = fmt.decode_clip(record, frame_indices=[])
    frames = clip.get("frames")
    if frames is not None:  # `add` checks the frames' shape: an empty [0, H, W, 3] stands in for them.
      clip["frames"] = np.zeros((1, *frames.shape[1:]), np.uint8)
    self._check(split, clip)
    return clip

  def _split(self, split: str) -> _SplitWriter:
    writer = self._splits.get(split)
    if writer is None:
      writer = self._splits[split] = _SplitWriter(self._tmp_dir, split, self.clips_per_shard)
    return writer

  def abort(self) -> None:
    """Drops everything written so far."""
    for writer in self._splits.values():
      try:
        writer.close_shard()
      except Exception:  # pylint: disable=broad-except
        pass  # Closing a half-written shard may fail; it is deleted anyway.
    if self._tmp_dir is not None:
      shutil.rmtree(self._tmp_dir, ignore_errors=True)
      interrupt.unregister(self._tmp_dir)
      self._tmp_dir = None

  def close(self) -> dict[str, Any]:
    """Finishes shards, moves them in place and writes the manifest."""
    if self._tmp_dir is None:
      raise RuntimeError("CorpusWriter is not open")
    splits: dict[str, Any] = {}
    for split, writer in sorted(self._splits.items()):
      writer.close_shard()
      np.savez(os.path.join(self._tmp_dir, fmt.index_name(split)),
               clip_id=np.asarray(writer.clip_ids, dtype=np.str_),
               identity=np.asarray(writer.identities, dtype=np.int64),
               num_frames=np.asarray(writer.num_frames, dtype=np.int64))
      for shard in writer.shards:
        path = os.path.join(self._tmp_dir, shard["file"])
        if shard["file"] in self._moved_in:
          path, size, sha = self._moved_in[shard["file"]]
          shard["bytes"] = size if size is not None else paths.path(path).stat().length
          shard["sha256"] = sha or fmt.file_sha256(path)
          continue
        shard["bytes"] = os.path.getsize(path)
        shard["sha256"] = fmt.file_sha256(path)
      index_path = os.path.join(self._tmp_dir, fmt.index_name(split))
      splits[split] = {
          "clips": len(writer.clip_ids),
          "frames": int(sum(writer.num_frames)),
          "num_shards": len(writer.shards),
          "shards": writer.shards,
          "index": {"file": fmt.index_name(split), "sha256": fmt.file_sha256(index_path)},
          "num_identities": len(set(writer.identities)),
          "identities": sorted(set(writer.identities)),
      }
    manifest = {
        "format": fmt.CORPUS_FORMAT,
        "schema_version": fmt.SCHEMA_VERSION,
        "kind": self.kind,
        "resolution": (None if self.resolution is None
                       else list(self.resolution)),
        "fps": self.fps,
        "sample_rate": self.sample_rate,
        "frame_codec": self.frame_codec if self._has_frames else None,
        "has_frames": bool(self._has_frames),
        "label_names": self._label_names or [],
        "per_frame_keys": self._per_frame_keys or [],
        "splits": splits,
        "created": {
            "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "host": platform.node(),
            "python": platform.python_version(),
            "vasa_jax": _package_version(),
            "argv": list(sys.argv),
        },
    }
    manifest_path = os.path.join(self.out_dir, fmt.MANIFEST_NAME)
    if paths.path(manifest_path).exists():  # overwrite=True: retire the old corpus
      old = fmt.read_manifest_json(manifest_path)
      paths.path(manifest_path).unlink()
      for info in (old.get("splits") or {}).values():
        for entry in [*info.get("shards", []), info.get("index") or {}]:
          name = entry.get("file")
          if name and paths.path(os.path.join(self.out_dir, name)).exists():
            paths.path(os.path.join(self.out_dir, name)).unlink()
    for name in os.listdir(self._tmp_dir):
      paths.put(os.path.join(self._tmp_dir, name),
                os.path.join(self.out_dir, name))
    for name, (source, _, _) in self._moved_in.items():
      paths.move(source, os.path.join(self.out_dir, name))
    tmp_manifest = os.path.join(self._tmp_dir, fmt.MANIFEST_NAME)
    with open(tmp_manifest, "w") as f:
      json.dump(manifest, f, indent=1)
    paths.put(tmp_manifest, manifest_path)  # Last: readers see the new corpus only once all of it is in.
    os.rmdir(self._tmp_dir)
    interrupt.unregister(self._tmp_dir)
    self._tmp_dir = None
    return manifest


def _package_version() -> str:
  try:
    return importlib.metadata.version("vasa_jax")
  except importlib.metadata.PackageNotFoundError:
    return "unknown"
