"""One clip record for synthetic and real data, stored in ArrayRecord shards.

A record is one clip: metadata, per-frame compressed frames (optional, so the
same container carries stage-2 "motion" records), int16 PCM audio, float32
per-frame labels and any extra per-frame arrays (e.g. "motion" [T, D]).

Byte layout of a record (little endian):

  b"VJCR" | u16 schema version | u32 header length | header (JSON, utf-8)
  | payload | u32 CRC32 of everything before it

The header lists every payload piece by offset, so `decode_clip` can decode
only the frames it is asked for and `clip_num_frames` reads just the header.

Frames default to JPEG q95 with 4:4:4 chroma: at 256^2 it is ~4x smaller than
lossless WebP and ~3x faster to decode (the stage-1 pipeline decodes 3 frames
per example), at 45+ dB PSNR, far above what a reenactment model reaches.
Lossless "webp" or "png" can be chosen per corpus where frames must be exact.

A corpus is a folder of `{split}-{shard:05d}.array_record` shards, one
`{split}-index.npz` per split (identity and frame count of every record, so
pipelines can pair clips without reading them) and `manifest.json`.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import io
import json
import os
import platform
import shutil
import struct
import sys
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from array_record.python import array_record_module
from PIL import Image

from vasa_jax.errors import UserError

SCHEMA_VERSION = 1
MAGIC = b"VJCR"
MANIFEST_NAME = "manifest.json"
CORPUS_FORMAT = "vasa_jax.corpus"
FRAME_CODECS = ("jpeg", "webp", "png")
# group_size:1 makes each record its own chunk, so random access reads one
# clip; frames are already compressed, so the container does not recompress.
ARRAY_RECORD_OPTIONS = "group_size:1,uncompressed"

_PREFIX = struct.Struct("<4sHI")
_CRC = struct.Struct("<I")
_KNOWN_KEYS = frozenset({
    "clip_id", "identity", "source", "fps", "sample_rate", "frames", "audio",
    "labels", "attrs"})
_PER_FRAME_DTYPES = ("float16", "float32", "float64", "int8", "int16",
                     "int32", "int64", "uint8", "bool")


class CorruptRecord(UserError):
  """A record failed its checksum or could not be parsed."""


# ----------------------------------------------------------------------------
# Encoding of one clip.


def _encode_frame(frame_HxWx3: np.ndarray, codec: str, quality: int) -> bytes:
  buf = io.BytesIO()
  image = Image.fromarray(frame_HxWx3, mode="RGB")
  if codec == "jpeg":
    image.save(buf, "JPEG", quality=quality, subsampling=0)
  elif codec == "webp":
    # method=0 is the fastest lossless mode; slower methods save ~15% size
    # at 4-10x the encode time.
    image.save(buf, "WEBP", lossless=True, quality=0, method=0)
  else:
    image.save(buf, "PNG", compress_level=1)
  return buf.getvalue()


def _decode_frame(data: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as image:
    return np.asarray(image.convert("RGB"))


def _attr_to_json(value: Any) -> Any:
  """Tags numpy values so `_attr_from_json` restores dtype and shape."""
  if isinstance(value, np.ndarray):
    return {"__ndarray__": value.dtype.str, "shape": list(value.shape),
            "data": value.ravel().tolist()}
  if isinstance(value, np.generic):
    return {"__npscalar__": value.dtype.str, "value": value.item()}
  if isinstance(value, Mapping):
    return {str(k): _attr_to_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_attr_to_json(v) for v in value]
  if value is None or isinstance(value, (str, bool, int, float)):
    return value
  raise ValueError(f"clip attr of type {type(value).__name__} is not "
                   "storable; use numbers, strings, lists or numpy arrays")


def _attr_from_json(value: Any) -> Any:
  if isinstance(value, dict):
    if "__ndarray__" in value:
      return np.asarray(value["data"], dtype=np.dtype(value["__ndarray__"])
                        ).reshape(value["shape"])
    if "__npscalar__" in value:
      return np.dtype(value["__npscalar__"]).type(value["value"])
    return {k: _attr_from_json(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_attr_from_json(v) for v in value]
  return value


def _clip_num_frames_from_arrays(clip: Mapping[str, Any]) -> int:
  if clip.get("frames") is not None:
    return int(np.shape(clip["frames"])[0])
  for key, value in clip.items():
    if key not in _KNOWN_KEYS and isinstance(value, np.ndarray):
      return int(value.shape[0])
  for value in (clip.get("labels") or {}).values():
    return int(np.shape(value)[0])
  raise ValueError("clip has no frames, labels or per-frame arrays; cannot "
                   "tell its length")


def per_frame_keys(clip: Mapping[str, Any]) -> list[str]:
  """Names of the extra per-frame arrays in a clip dict (e.g. "motion")."""
  return sorted(k for k in clip if k not in _KNOWN_KEYS)


def encode_clip(clip: Mapping[str, Any], *, frame_codec: str = "jpeg",
                jpeg_quality: int = 95) -> bytes:
  """Serializes a clip dict (see module docstring) to one record."""
  if frame_codec not in FRAME_CODECS:
    raise ValueError(f"frame_codec {frame_codec!r}; accepted: {FRAME_CODECS}")
  fps, sample_rate = int(clip["fps"]), int(clip["sample_rate"])
  num_frames = _clip_num_frames_from_arrays(clip)
  clip_id = str(clip["clip_id"])
  pieces: list[bytes] = []
  offset = 0

  def add(data: bytes) -> tuple[int, int]:
    nonlocal offset
    pieces.append(data)
    start, offset = offset, offset + len(data)
    return start, len(data)

  header: dict[str, Any] = {
      "clip_id": clip_id, "identity": int(clip["identity"]),
      "source": str(clip.get("source", "")), "fps": fps,
      "sample_rate": sample_rate, "num_frames": num_frames,
      "attrs": _attr_to_json(dict(clip.get("attrs") or {})),
      "frames": None, "arrays": [],
  }

  frames_TxHxWx3 = clip.get("frames")
  if frames_TxHxWx3 is not None:
    frames_TxHxWx3 = np.asarray(frames_TxHxWx3)
    if (frames_TxHxWx3.dtype != np.uint8 or frames_TxHxWx3.ndim != 4
        or frames_TxHxWx3.shape[-1] != 3):
      raise ValueError(f"clip {clip_id}: frames must be uint8 [T, H, W, 3], "
                       f"got {frames_TxHxWx3.dtype} {frames_TxHxWx3.shape}")
    offsets = []
    for frame_HxWx3 in frames_TxHxWx3:
      start, _ = add(_encode_frame(frame_HxWx3, frame_codec, jpeg_quality))
      offsets.append(start)
    offsets.append(offset)
    header["frames"] = {"codec": frame_codec,
                        "height": int(frames_TxHxWx3.shape[1]),
                        "width": int(frames_TxHxWx3.shape[2]),
                        "offsets": offsets}

  def add_array(group: str, name: str, array: np.ndarray, **extra):
    start, nbytes = add(np.ascontiguousarray(array).tobytes())
    header["arrays"].append({"group": group, "name": name,
                             "dtype": array.dtype.str,
                             "shape": list(array.shape), "offset": start,
                             "nbytes": nbytes, **extra})

  audio_N = np.asarray(clip["audio"], dtype=np.float32)
  expected = num_frames * sample_rate // fps
  if audio_N.ndim != 1 or audio_N.shape[0] != expected:
    raise ValueError(f"clip {clip_id}: audio must be float32 [{expected}] "
                     f"(T * sample_rate // fps), got {audio_N.shape}")
  pcm_N = np.round(np.clip(audio_N, -1.0, 1.0) * 32767.0).astype("<i2")
  add_array("audio", "audio", pcm_N)

  for name, values in sorted((clip.get("labels") or {}).items()):
    values_T = np.asarray(values, dtype="<f4")
    if values_T.shape != (num_frames,):
      raise ValueError(f"clip {clip_id}: label {name!r} must be [{num_frames}]"
                       f", got {values_T.shape}")
    add_array("labels", name, values_T)

  for name in per_frame_keys(clip):
    values_TxD = np.asarray(clip[name])
    if (values_TxD.ndim < 1 or values_TxD.shape[0] != num_frames
        or values_TxD.dtype.name not in _PER_FRAME_DTYPES):
      raise ValueError(f"clip {clip_id}: extra key {name!r} must be a numeric "
                       f"per-frame array [{num_frames}, ...], got "
                       f"{values_TxD.dtype} {values_TxD.shape}")
    little_endian = values_TxD.dtype.newbyteorder("<")
    add_array("per_frame", name, values_TxD.astype(little_endian))

  header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
  body = b"".join([_PREFIX.pack(MAGIC, SCHEMA_VERSION, len(header_bytes)),
                   header_bytes, *pieces])
  return body + _CRC.pack(zlib.crc32(body))


def _parse_header(data: bytes) -> tuple[dict[str, Any], int]:
  """Returns (header, payload start); raises CorruptRecord on bad framing."""
  if len(data) < _PREFIX.size + _CRC.size:
    raise CorruptRecord(f"clip record is truncated ({len(data)} bytes)")
  magic, version, header_len = _PREFIX.unpack_from(data, 0)
  if magic != MAGIC:
    raise CorruptRecord(f"clip record has bad magic {magic!r}; expected "
                        f"{MAGIC!r}")
  if version != SCHEMA_VERSION:
    raise CorruptRecord(f"clip record has schema version {version}; this "
                        f"vasa_jax reads version {SCHEMA_VERSION}")
  start = _PREFIX.size + header_len
  if start > len(data) - _CRC.size:
    raise CorruptRecord("clip record header runs past the record end")
  try:
    header = json.loads(data[_PREFIX.size:start].decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise CorruptRecord(f"clip record header is not valid JSON: {e}") from e
  return header, start


def clip_header(data: bytes) -> dict[str, Any]:
  """Clip metadata (no arrays) from the header only; no checksum check."""
  header, _ = _parse_header(data)
  out = {k: header[k] for k in ("clip_id", "identity", "source", "fps",
                                "sample_rate", "num_frames")}
  out["attrs"] = _attr_from_json(header["attrs"])
  return out


def clip_num_frames(data: bytes) -> int:
  """Frame count from the header only (no checksum, no decoding)."""
  header, _ = _parse_header(data)
  return int(header["num_frames"])


def verify_record(data: bytes) -> None:
  """Raises CorruptRecord unless the record's CRC32 matches."""
  if len(data) < _PREFIX.size + _CRC.size:
    raise CorruptRecord(f"clip record is truncated ({len(data)} bytes)")
  (stored,) = _CRC.unpack_from(data, len(data) - _CRC.size)
  actual = zlib.crc32(memoryview(data)[:len(data) - _CRC.size])
  if stored != actual:
    raise CorruptRecord(f"clip record CRC32 mismatch (stored {stored:08x}, "
                        f"computed {actual:08x})")


def decode_clip(data: bytes, frame_indices: Sequence[int] | None = None,
                *, verify: bool = True) -> dict[str, Any]:
  """Decodes a record to the clip dict `encode_clip` took.

  frame_indices: decode only these frames (in this order, repeats allowed);
    `frames` is then [len(frame_indices), H, W, 3]. An empty sequence skips
    frame decoding. Labels, audio and per-frame arrays are always whole-clip.
  verify: check the CRC32 first (one pass over the bytes, ~1 ms per MB).

  Audio comes back as float32 PCM / 32767. Records without frames (motion
  records) have no "frames" key. Raises CorruptRecord on any damage.
  """
  if verify:
    verify_record(data)
  header, start = _parse_header(data)
  try:
    num_frames = int(header["num_frames"])
    clip: dict[str, Any] = {
        k: header[k] for k in ("clip_id", "identity", "source", "fps",
                               "sample_rate")}
    clip["attrs"] = _attr_from_json(header["attrs"])
    frames_info = header["frames"]
    if frames_info is not None:
      indices = (range(num_frames) if frame_indices is None
                 else [int(i) for i in frame_indices])
      offsets = frames_info["offsets"]
      frames = []
      for i in indices:
        if not 0 <= i < num_frames:
          raise IndexError(f"frame index {i} out of range [0, {num_frames})")
        frames.append(_decode_frame(
            data[start + offsets[i]:start + offsets[i + 1]]))
      shape = (frames_info["height"], frames_info["width"], 3)
      clip["frames"] = (np.stack(frames) if frames
                        else np.zeros((0, *shape), np.uint8))
      if clip["frames"].shape[1:] != shape:
        raise CorruptRecord(f"clip record frames decode to "
                            f"{clip['frames'].shape[1:]}, header says {shape}")
    clip["labels"] = {}
    for entry in header["arrays"]:
      lo = start + entry["offset"]
      array = np.frombuffer(data[lo:lo + entry["nbytes"]],
                            dtype=np.dtype(entry["dtype"])
                            ).reshape(entry["shape"])
      if entry["group"] == "audio":
        clip["audio"] = array.astype(np.float32) / np.float32(32767.0)
      elif entry["group"] == "labels":
        clip["labels"][entry["name"]] = array.astype(np.float32)
      else:
        clip[entry["name"]] = array.astype(array.dtype.newbyteorder("="))
    return clip
  except IndexError:
    raise
  except CorruptRecord:
    raise
  except Exception as e:  # A CRC-valid but malformed record, or no CRC check.
    raise CorruptRecord(f"clip record is malformed: {type(e).__name__}: {e}"
                        ) from e


# ----------------------------------------------------------------------------
# Corpus: shards + index + manifest.


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def shard_name(split: str, shard: int) -> str:
  return f"{split}-{shard:05d}.array_record"


def index_name(split: str) -> str:
  return f"{split}-index.npz"


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
      name = shard_name(self.split, len(self.shards))
      self._writer = array_record_module.ArrayRecordWriter(
          os.path.join(self.tmp_dir, name), ARRAY_RECORD_OPTIONS)
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

  Everything goes to a hidden temp folder inside out_dir first; only a clean
  close moves the files in and writes manifest.json last, so an interrupted
  or failed write leaves no corpus that `open_corpus` would accept.
  """

  def __init__(self, out_dir: str | os.PathLike, *,
               resolution: int | tuple[int, int] | None, fps: int,
               sample_rate: int = 16000, clips_per_shard: int = 256,
               frame_codec: str = "jpeg", jpeg_quality: int = 95,
               kind: str = "clip", overwrite: bool = False):
    if frame_codec not in FRAME_CODECS:
      raise UserError(f"frame codec {frame_codec!r} is not supported; "
                      f"accepted: {', '.join(FRAME_CODECS)}")
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

  def __enter__(self) -> CorpusWriter:
    manifest = os.path.join(self.out_dir, MANIFEST_NAME)
    if os.path.exists(manifest) and not self.overwrite:
      raise UserError(f"{self.out_dir} already holds a corpus "
                      f"({MANIFEST_NAME}); choose an empty folder or pass "
                      "overwrite=True")
    os.makedirs(self.out_dir, exist_ok=True)
    self._tmp_dir = os.path.join(self.out_dir,
                                 f".incomplete-{uuid.uuid4().hex[:12]}")
    os.makedirs(self._tmp_dir)
    return self

  def __exit__(self, exc_type, exc, tb):
    if exc_type is None:
      self.close()
    else:
      self.abort()
    return False

  def add(self, split: str, clip: Mapping[str, Any]) -> None:
    """Encodes and appends one clip to `split`."""
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
    extras = per_frame_keys(clip)
    if self._label_names is None:
      self._label_names, self._per_frame_keys = labels, extras
    if labels != self._label_names or extras != self._per_frame_keys:
      raise ValueError(
          f"clip {clip_id}: labels {labels} / per-frame keys {extras} differ "
          f"from the corpus's {self._label_names} / {self._per_frame_keys}")
    record = encode_clip(clip, frame_codec=self.frame_codec,
                         jpeg_quality=self.jpeg_quality)
    writer = self._splits.get(split)
    if writer is None:
      writer = self._splits[split] = _SplitWriter(
          self._tmp_dir, split, self.clips_per_shard)
    writer.add(record, clip_id, int(clip["identity"]),
               _clip_num_frames_from_arrays(clip))

  def abort(self) -> None:
    """Drops everything written so far."""
    for writer in self._splits.values():
      try:
        writer.close_shard()
      except Exception:  # pylint: disable=broad-except
        pass  # Closing a half-written shard may fail; it is deleted anyway.
    if self._tmp_dir is not None:
      shutil.rmtree(self._tmp_dir, ignore_errors=True)
      self._tmp_dir = None

  def close(self) -> dict[str, Any]:
    """Finishes shards, moves them in place and writes the manifest."""
    if self._tmp_dir is None:
      raise RuntimeError("CorpusWriter is not open")
    splits: dict[str, Any] = {}
    for split, writer in sorted(self._splits.items()):
      writer.close_shard()
      np.savez(os.path.join(self._tmp_dir, index_name(split)),
               clip_id=np.asarray(writer.clip_ids, dtype=np.str_),
               identity=np.asarray(writer.identities, dtype=np.int64),
               num_frames=np.asarray(writer.num_frames, dtype=np.int64))
      for shard in writer.shards:
        path = os.path.join(self._tmp_dir, shard["file"])
        shard["bytes"] = os.path.getsize(path)
        shard["sha256"] = _sha256(path)
      index_path = os.path.join(self._tmp_dir, index_name(split))
      splits[split] = {
          "clips": len(writer.clip_ids),
          "frames": int(sum(writer.num_frames)),
          "num_shards": len(writer.shards),
          "shards": writer.shards,
          "index": {"file": index_name(split), "sha256": _sha256(index_path)},
          "num_identities": len(set(writer.identities)),
          "identities": sorted(set(writer.identities)),
      }
    manifest = {
        "format": CORPUS_FORMAT,
        "schema_version": SCHEMA_VERSION,
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
    manifest_path = os.path.join(self.out_dir, MANIFEST_NAME)
    if os.path.exists(manifest_path):  # overwrite=True: retire the old corpus
      old = _read_manifest_json(manifest_path)
      os.remove(manifest_path)
      for info in (old.get("splits") or {}).values():
        for entry in [*info.get("shards", []), info.get("index") or {}]:
          name = entry.get("file")
          if name and os.path.exists(os.path.join(self.out_dir, name)):
            os.remove(os.path.join(self.out_dir, name))
    for name in os.listdir(self._tmp_dir):
      os.replace(os.path.join(self._tmp_dir, name),
                 os.path.join(self.out_dir, name))
    tmp_manifest = os.path.join(self._tmp_dir, MANIFEST_NAME)
    with open(tmp_manifest, "w") as f:
      json.dump(manifest, f, indent=1)
    os.replace(tmp_manifest, manifest_path)
    os.rmdir(self._tmp_dir)
    self._tmp_dir = None
    return manifest


def _package_version() -> str:
  try:
    return importlib.metadata.version("vasa_jax")
  except importlib.metadata.PackageNotFoundError:
    return "unknown"


def _read_manifest_json(path: str) -> dict[str, Any]:
  try:
    with open(path) as f:
      manifest = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise UserError(f"{path} is not a readable JSON manifest ({e}); rewrite "
                    "the corpus") from e
  if not isinstance(manifest, dict):
    raise UserError(f"{path} is not a vasa_jax corpus manifest")
  return manifest


@dataclass(frozen=True)
class ClipIndex:
  """Per-record metadata of one split, in record order."""
  clip_id: np.ndarray     # str [N]
  identity: np.ndarray    # int64 [N]
  num_frames: np.ndarray  # int64 [N]

  def __len__(self) -> int:
    return int(self.identity.shape[0])


class Corpus:
  """A finished corpus folder: manifest, per-split sources and indices."""

  def __init__(self, root: str, manifest: dict[str, Any]):
    self.root = root
    self.manifest = manifest

  @property
  def splits(self) -> list[str]:
    return sorted(self.manifest["splits"])

  def _split_info(self, split: str) -> dict[str, Any]:
    info = self.manifest["splits"].get(split)
    if info is None:
      raise UserError(f"corpus {self.root} has no split {split!r}; it has: "
                      f"{', '.join(self.splits) or '(none)'}")
    return info

  def shard_paths(self, split: str) -> list[str]:
    return [os.path.join(self.root, s["file"])
            for s in self._split_info(split)["shards"]]

  def source(self, split: str):
    """A grain RandomAccessDataSource of the split's records (bytes)."""
    import grain  # pylint: disable=g-import-not-at-top
    shards = self._split_info(split)["shards"]
    if not shards:
      raise UserError(f"split {split!r} of corpus {self.root} is empty")
    # "path[0:n]" read instructions take record counts from the manifest, so
    # shards open lazily on first read: startup does not touch thousands of
    # files, and a damaged shard fails its own reads (which pipelines skip)
    # instead of the whole source.
    return grain.sources.ArrayRecordDataSource([
        f"{os.path.join(self.root, s['file'])}[0:{s['clips']}]"
        for s in shards])

  def index(self, split: str) -> ClipIndex:
    info = self._split_info(split)
    path = os.path.join(self.root, info["index"]["file"])
    try:
      with np.load(path, allow_pickle=False) as z:
        index = ClipIndex(clip_id=z["clip_id"], identity=z["identity"],
                          num_frames=z["num_frames"])
    except (OSError, KeyError, ValueError) as e:
      raise UserError(f"{path} is not a readable clip index ({e}); rewrite "
                      "the corpus") from e
    if len(index) != info["clips"]:
      raise UserError(f"{path} lists {len(index)} clips, the manifest says "
                      f"{info['clips']}; rewrite the corpus")
    return index

  def verify(self) -> None:
    """Checks every file's sha256 against the manifest (reads everything)."""
    for split in self.splits:
      info = self.manifest["splits"][split]
      for entry in [*info["shards"], info["index"]]:
        path = os.path.join(self.root, entry["file"])
        if _sha256(path) != entry["sha256"]:
          raise UserError(f"{path} does not match its sha256 in "
                          f"{MANIFEST_NAME}; the file is damaged")


def open_corpus(root: str | os.PathLike, *, verify: bool = False) -> Corpus:
  """Opens and validates a corpus folder written by CorpusWriter."""
  root = os.fspath(root)
  if not os.path.isdir(root):
    parent = os.path.dirname(os.path.abspath(root))
    raise UserError(f"corpus folder {root} does not exist"
                    + (f" ({parent} has: {_listing(parent)})"
                       if os.path.isdir(parent) else ""))
  path = os.path.join(root, MANIFEST_NAME)
  if not os.path.exists(path):
    raise UserError(f"{root} has no {MANIFEST_NAME}, so it is not a finished "
                    f"corpus (it has: {_listing(root)})")
  manifest = _read_manifest_json(path)
  if manifest.get("format") != CORPUS_FORMAT:
    raise UserError(f"{path} is not a vasa_jax corpus manifest (format "
                    f"{manifest.get('format')!r}, expected {CORPUS_FORMAT!r})")
  if manifest.get("schema_version") != SCHEMA_VERSION:
    raise UserError(f"{path} has schema version "
                    f"{manifest.get('schema_version')}; this vasa_jax reads "
                    f"version {SCHEMA_VERSION}; rewrite the corpus")
  for key in ("fps", "sample_rate", "splits", "label_names", "per_frame_keys"):
    if key not in manifest:
      raise UserError(f"{path} lacks {key!r}; rewrite the corpus")
  for split, info in manifest["splits"].items():
    for entry in [*info["shards"], info["index"]]:
      if not os.path.exists(os.path.join(root, entry["file"])):
        raise UserError(f"corpus {root}: split {split!r} needs "
                        f"{entry['file']}, which is missing")
  corpus = Corpus(root, manifest)
  if verify:
    corpus.verify()
  return corpus


def _listing(folder: str, limit: int = 8) -> str:
  names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
  if not names:
    return "nothing"
  more = f", ... {len(names) - limit} more" if len(names) > limit else ""
  return ", ".join(names[:limit]) + more
