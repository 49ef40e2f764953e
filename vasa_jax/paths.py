"""One path library for every folder argument: local folders and `gs://` buckets alike.

Folders and small files (manifests, configs, logs, previews) go through `etils.epath`, the
path library Orbax uses (`gs://` through gcsfs). The bulk data reads `gs://` natively:
checkpoint arrays through TensorStore (Orbax) and corpus shards through ArrayRecord. All
of them find Google credentials the usual way (application default credentials), and
all of them can be pointed at a local emulator (`tests/gcs_emulator.py`).

  path(p)      -> epath.Path; local paths are made absolute, `gs://` URIs stay as given
  is_local(p)  -> whether `p` is on this machine's file system
  make_folder(p), files(p) -> a folder created if needed; every file under a folder
  put(local, p), move(src, dst), remove(p) -> whole files into place (see `put`)
  GrowingFile  a text log that only grows: appended on local disks, rewritten whole on
               object stores (objects cannot be appended to)
"""

import os
import shutil
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


def _fs(p: str):
  """The fsspec file system (gcsfs) behind a remote URI: epath has no upload and its copy streams."""
  import fsspec  # pylint: disable=import-outside-toplevel
  return fsspec.core.url_to_fs(p)[0]


def put(local: str, p: str | os.PathLike) -> None:
  """Puts a finished local file at `p`, whole or not at all.

  Local: a rename (the same file system: `local` sits beside `p`). Object stores: one upload,
  and a GCS object becomes visible only once its upload completes, so no reader or resumed
  run ever sees a half-written one; writers order their puts (records before the file that
  marks them done, shards before the manifest) for the same reason.
  """
  if is_local(p):
    os.replace(local, p)
  else:
    _fs(os.fspath(p)).put_file(local, os.fspath(p))
    os.remove(local)


def move(src: str | os.PathLike, dst: str | os.PathLike) -> None:
  """Renames a file; on GCS a server-side move (or copy + delete): `dst` appears whole."""
  if is_local(dst):
    os.replace(src, dst)
  elif is_local(src):
    put(os.fspath(src), dst)
  else:
    _fs(os.fspath(dst)).mv(os.fspath(src), os.fspath(dst))


def write_bytes(p: str | os.PathLike, data: bytes) -> None:
  """A small file written whole: locally under a temporary name, then renamed; on GCS one upload."""
  if is_local(p):
    tmp = os.fspath(p) + ".partial"
    with open(tmp, "wb") as f:
      f.write(data)
    os.replace(tmp, p)
  else:
    path(p).write_bytes(data)


def remove_tree(p: str | os.PathLike) -> None:
  """Deletes a folder and all under it, if it is there."""
  if is_local(p):
    shutil.rmtree(p, ignore_errors=True)
  elif path(p).exists():
    path(p).rmtree()


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
