"""One path library for every folder argument: local folders and `gs://` buckets alike.

Folders and small files (manifests, configs, logs, previews) go through `etils.epath`, the
path library Orbax uses (`gs://` through gcsfs). The bulk data reads `gs://` natively:
checkpoint arrays through TensorStore (Orbax) and corpus shards through ArrayRecord. All
of them find Google credentials the usual way (application default credentials), and
all of them can be pointed at a local emulator (`tests/gcs_emulator.py`).

  path(p)      -> epath.Path; local paths are made absolute, `gs://` URIs stay as given
  is_local(p)  -> whether `p` is on this machine's file system
  make_folder(p), files(p) -> a folder created if needed; every file under a folder
  GrowingFile  a text log that only grows: appended on local disks, rewritten whole on
               object stores (objects cannot be appended to)
"""

import os
import time
from collections.abc import Iterator

from etils import epath

REMOTE_PREFIXES = ("gs://",)


def is_local(p: str | os.PathLike) -> bool:
  return not os.fspath(p).startswith(REMOTE_PREFIXES)


def path(p: str | os.PathLike) -> epath.Path:
  return epath.Path(os.path.abspath(p) if is_local(p) else os.fspath(p))


def make_folder(p: str | os.PathLike) -> epath.Path:
  """Creates a folder (and its parents) if needed; on object stores there is nothing to create."""
  p = path(p)
  p.mkdir(parents=True, exist_ok=True)
  return p


def files(folder: str | os.PathLike) -> Iterator[epath.Path]:
  """Every file under `folder`, recursively."""
  top = path(folder)
  scheme = "" if is_local(top) else os.fspath(top).split("://")[0] + "://"
  for root, _, names in top.walk():
    root = os.fspath(root)
    if not root.startswith(scheme):  # epath's walk yields gs:// roots without their scheme
      root = scheme + root
    for name in names:
      yield path(root) / name


class GrowingFile:
  """A text file written line by line (metrics.jsonl); what is already there is kept.

  Local files are appended to and flushed on every write. An object store cannot append, so
  there the text is kept in memory and the whole object is rewritten at most every
  `every_s` seconds and on `close`.
  """

  def __init__(self, p: str | os.PathLike, every_s: float = 30.0):
    self.path = path(p)
    self._local = is_local(self.path)
    self._every_s = every_s
    if self._local:
      self._file = open(self.path, "a")
    else:
      self._text = [self.path.read_text()] if self.path.exists() else []
      self._written = time.monotonic()

  def write(self, text: str) -> None:
    if self._local:
      self._file.write(text)
      self._file.flush()
      return
    self._text.append(text)
    if time.monotonic() - self._written >= self._every_s:
      self._upload()

  def _upload(self) -> None:
    self.path.write_text("".join(self._text))
    self._written = time.monotonic()

  def close(self) -> None:
    if self._local:
      self._file.close()
    else:
      self._upload()
