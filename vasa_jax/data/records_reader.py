"""Reading a corpus: a finished folder's manifest, per-split grain sources and indices.

`open_corpus` validates a folder written by `records_writer.CorpusWriter`, local or on
`gs://` (`vasa_jax.paths`; ArrayRecord reads `gs://` shards itself); records are decoded
with `records_format.decode_clip`. Callers import both through `vasa_jax.data.records`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from vasa_jax import paths
from vasa_jax.data import records_format as fmt
from vasa_jax.errors import UserError


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
    self.root = root  # a local path or a gs:// URI
    self.manifest = manifest

  def _file(self, name: str) -> str:
    return str(paths.path(self.root) / name)

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
    return [self._file(s["file"]) for s in self._split_info(split)["shards"]]

  def source(self, split: str):
    """A grain RandomAccessDataSource of the split's records (bytes)."""
    # Imported here: grain loads jax (seconds), and the synthetic corpus' spawned render
    # workers import `records` (to write) without ever reading a source.
    import grain
    shards = self._split_info(split)["shards"]
    if not shards:
      raise UserError(f"split {split!r} of corpus {self.root} is empty")
    # "path[0:n]" read instructions take record counts from the manifest, so
    # shards open lazily on first read: startup does not touch thousands of
    # files, and a damaged shard fails its own reads (which pipelines skip)
    # instead of the whole source.
    return grain.sources.ArrayRecordDataSource([
        f"{self._file(s['file'])}[0:{s['clips']}]"
        for s in shards])

  def index(self, split: str) -> ClipIndex:
    info = self._split_info(split)
    path = self._file(info["index"]["file"])
    try:
      with paths.path(path).open("rb") as f, np.load(f, allow_pickle=False) as z:
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
        path = self._file(entry["file"])
        if fmt.file_sha256(path) != entry["sha256"]:
          raise UserError(f"{path} does not match its sha256 in "
                          f"{fmt.MANIFEST_NAME}; the file is damaged")


def open_corpus(root: str | os.PathLike, *, verify: bool = False) -> Corpus:
  """Opens and validates a corpus folder written by CorpusWriter."""
  folder = paths.path(root)
  root = str(folder)
  if not folder.is_dir():
    parent = folder.parent
    raise UserError(f"corpus folder {root} does not exist"
                    + (f" ({parent} has: {_listing(parent)})"
                       if parent.is_dir() else ""))
  path = str(folder / fmt.MANIFEST_NAME)
  if not paths.path(path).exists():
    raise UserError(f"{root} has no {fmt.MANIFEST_NAME}, so it is not a finished "
                    f"corpus (it has: {_listing(root)})")
  manifest = fmt.read_manifest_json(path)
  if manifest.get("format") != fmt.CORPUS_FORMAT:
    raise UserError(f"{path} is not a vasa_jax corpus manifest (format "
                    f"{manifest.get('format')!r}, expected {fmt.CORPUS_FORMAT!r})")
  if manifest.get("schema_version") != fmt.SCHEMA_VERSION:
    raise UserError(f"{path} has schema version "
                    f"{manifest.get('schema_version')}; this vasa_jax reads "
                    f"version {fmt.SCHEMA_VERSION}; rewrite the corpus")
  for key in ("fps", "sample_rate", "splits", "label_names", "per_frame_keys"):
    if key not in manifest:
      raise UserError(f"{path} lacks {key!r}; rewrite the corpus")
  for split, info in manifest["splits"].items():
    for entry in [*info["shards"], info["index"]]:
      if not (folder / entry["file"]).exists():
        raise UserError(f"corpus {root}: split {split!r} needs "
                        f"{entry['file']}, which is missing")
  corpus = Corpus(root, manifest)
  if verify:
    corpus.verify()
  return corpus


def _listing(folder, limit: int = 8) -> str:
  names = sorted(p.name for p in paths.path(folder).iterdir() if not p.name.startswith("."))
  if not names:
    return "nothing"
  more = f", ... {len(names) - limit} more" if len(names) > limit else ""
  return ", ".join(names[:limit]) + more
