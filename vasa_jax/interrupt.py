"""Ctrl-C and SIGTERM in the commands: one line, no half-written files, no crash.

A command interrupted while XLA compiled used to print `error: interrupted` and then
die with a segmentation fault (exit -11): the KeyboardInterrupt unwound into a normal
interpreter exit, which frees JAX's CPU client while an XLA compile thread is still
running. So the commands (`cli.run`) handle the two signals themselves: delete the
half-written files that writers registered (`removed_on_interrupt`), print one line
and leave at once with `os._exit` (status 130 for SIGINT, 143 for SIGTERM), so that
no interpreter teardown races the compile thread.

Python runs signal handlers in the main thread between bytecodes, and the main thread
can sit in one XLA compile for many seconds. So the C-level handler also writes the
signal number to a pipe (`signal.set_wakeup_fd`), and a watcher thread that reads it
leaves at once, if the handler in force is still this module's (the training loop puts
its own, "save a checkpoint, then stop", in place while it runs).

`python -m vasa_jax.<command>` installs the handlers when the package is imported
(`vasa_jax/__init__.py`), so that Ctrl-C during the seconds of imports before the
command starts exits the same way. A signal ignored at start (a background job of a
non-interactive shell ignores SIGINT) stays ignored.
"""

import contextlib
import os
import shutil
import signal
import sys
import threading
from typing import Iterator

EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}
MESSAGE = {signal.SIGINT: "error: interrupted", signal.SIGTERM: "error: interrupted by SIGTERM"}

_paths: dict[str, int] = {}          # path -> pid of the process that registered it
_leaving = threading.Lock()          # taken by the one thread that exits, never released
_depth = 0                           # nested install() calls
_previous: dict[int, object] = {}    # the handlers install() replaced
_watcher: tuple[int, int, int, threading.Thread] | None = None   # read fd, write fd, old wakeup fd, thread


def register(path: str) -> None:
  """An interrupted command deletes `path` (a half-written file or folder) until `unregister`."""
  _paths[os.path.abspath(path)] = os.getpid()


def unregister(path: str) -> None:
  _paths.pop(os.path.abspath(path), None)


@contextlib.contextmanager
def removed_on_interrupt(path: str) -> Iterator[str]:
  """`register(path)` while the block runs."""
  register(path)
  try:
    yield path
  finally:
    unregister(path)


def install() -> bool:
  """Handles SIGINT and SIGTERM from now on; False (nothing done) outside the main thread.

  Calls nest: each `install()` that returned True needs one `uninstall()`.
  """
  global _depth
  if threading.current_thread() is not threading.main_thread():
    return False
  if _depth == 0:
    for sig in EXIT_STATUS:
      previous = signal.getsignal(sig)
      if previous is signal.SIG_IGN:
        continue
      _previous[sig] = previous
      signal.signal(sig, _on_signal)
    _start_watcher()
  _depth += 1
  return True


def uninstall() -> None:
  """Undoes one `install()`; the last one puts the previous handlers back."""
  global _depth
  _depth -= 1
  if _depth > 0:
    return
  _stop_watcher()
  for sig, previous in _previous.items():
    if signal.getsignal(sig) is _on_signal:
      signal.signal(sig, previous)
  _previous.clear()


@contextlib.contextmanager
def handled() -> Iterator[None]:
  """`install()` for the duration of the block."""
  installed = install()
  try:
    yield
  finally:
    if installed:
      uninstall()


def _on_signal(signum, frame) -> None:
  del frame
  _leave(signum)


def _leave(signum: int) -> None:
  """Deletes this process's registered paths, prints one line, exits without teardown."""
  _leaving.acquire()  # A second thread getting here waits for the exit.
  pid = os.getpid()
  for path, owner in dict(_paths).items():
    if owner == pid:  # A forked child inherits the table, not the files.
      _remove(path)
  for stream in (sys.stdout, sys.stderr):
    with contextlib.suppress(Exception):
      stream.flush()
  newline = "\n" if _isatty(2) else ""  # End a progress bar's line first.
  with contextlib.suppress(OSError):
    os.write(2, f"{newline}{MESSAGE[signum]}\n".encode())
  os._exit(EXIT_STATUS[signum])


def _remove(path: str) -> None:
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path, ignore_errors=True)
  else:
    with contextlib.suppress(OSError):
      os.remove(path)


def _isatty(fd: int) -> bool:
  try:
    return os.isatty(fd)
  except OSError:
    return False


def _start_watcher() -> None:
  global _watcher
  read_fd, write_fd = os.pipe()
  os.set_blocking(write_fd, False)  # set_wakeup_fd needs a non-blocking fd.
  try:
    old = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
  except ValueError:
    os.close(read_fd)
    os.close(write_fd)
    return
  thread = threading.Thread(target=_watch, args=(read_fd,), name="vasa_jax-interrupt", daemon=True)
  thread.start()
  _watcher = (read_fd, write_fd, old, thread)


def _stop_watcher() -> None:
  global _watcher
  if _watcher is None:
    return
  read_fd, write_fd, old, thread = _watcher
  _watcher = None
  signal.set_wakeup_fd(old)
  os.write(write_fd, b"\0")  # Wakes the watcher: 0 is no signal number.
  thread.join()
  os.close(read_fd)
  os.close(write_fd)


def _watch(read_fd: int) -> None:
  while True:
    try:
      data = os.read(read_fd, 64)
    except OSError:
      return
    for signum in data:
      if signum == 0:
        return
      if signum in EXIT_STATUS and signal.getsignal(signum) is _on_signal:
        _leave(signum)


def _after_fork_in_child() -> None:
  """A forked child has no watcher thread; its signals must not reach the parent's pipe."""
  global _watcher
  if _watcher is not None:
    read_fd, write_fd, _, _ = _watcher
    _watcher = None
    with contextlib.suppress(ValueError):
      signal.set_wakeup_fd(-1)
    os.close(read_fd)
    os.close(write_fd)


os.register_at_fork(after_in_child=_after_fork_in_child)
