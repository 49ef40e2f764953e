"""Ctrl-C and SIGTERM: one line, registered half-written files deleted, exit 130/143, never a crash."""

import os
import select
import signal
import subprocess
import sys
import textwrap
import time

from vasa_jax import cli, interrupt

# A command whose main thread then sits in native code that no signal interrupts, as it does
# during an XLA compile (a second lock of a held pthread mutex; ctypes releases the GIL).
_CHILD = textwrap.dedent("""
    import ctypes, os, sys
    from vasa_jax import cli, interrupt

    def main(args):
      open(args.partial, "w").write("half")
      interrupt.register(args.partial)
      os.makedirs(args.folder)
      interrupt.register(args.folder)
      open(args.done, "w").write("finished")  # Not registered: kept.
      libc = ctypes.CDLL(None)
      mutex = ctypes.create_string_buffer(64)  # PTHREAD_MUTEX_INITIALIZER is all zeros.
      libc.pthread_mutex_lock(mutex)
      print("blocked", flush=True)
      libc.pthread_mutex_lock(mutex)  # Never returns.

    parser = cli.make_parser("child", "a command stuck in native code")
    for name in ("partial", "folder", "done"):
      parser.add_argument(name)
    sys.exit(cli.run(main, parser))
""")


def _start(tmp_path, **popen):
  paths = [str(tmp_path / name) for name in ("out.partial.mp4", "incomplete", "done.txt")]
  proc = subprocess.Popen([sys.executable, "-c", _CHILD, *paths], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, **popen)
  ready, _, _ = select.select([proc.stdout], [], [], 120)
  if not ready:
    proc.kill()
    raise AssertionError(f"the child never got going: {proc.communicate()[1]}")
  assert proc.stdout.readline() == "blocked\n"
  return proc, paths


def test_signals_exit_at_once_from_native_code_and_delete_registered_files(tmp_path):
  for sig, status, message in [(signal.SIGINT, 130, "error: interrupted"),
                               (signal.SIGTERM, 143, "error: interrupted by SIGTERM")]:
    folder = tmp_path / sig.name
    folder.mkdir()
    proc, (partial, incomplete, done) = _start(folder)
    sent = time.monotonic()
    proc.send_signal(sig)
    try:
      _, err = proc.communicate(timeout=30)
    finally:
      proc.kill()
    assert proc.returncode == status, (sig, proc.returncode, err)
    assert time.monotonic() - sent < 5  # The main thread never got back to Python.
    assert err.strip().splitlines() == [message]
    assert not os.path.exists(partial) and not os.path.exists(incomplete)
    assert open(done).read() == "finished"


def test_a_signal_ignored_at_start_stays_ignored(tmp_path):
  # A background job of a non-interactive shell starts with SIGINT ignored.
  proc, (partial, _, _) = _start(tmp_path, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
  try:
    proc.send_signal(signal.SIGINT)
    time.sleep(1.0)
    assert proc.poll() is None and os.path.exists(partial)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert not os.path.exists(partial)
  finally:
    proc.kill()


def test_commands_run_in_process_leave_the_handlers_as_they_were():
  before = {sig: signal.getsignal(sig) for sig in interrupt.EXIT_STATUS}
  seen = {}

  def main(args):
    seen.update({sig: signal.getsignal(sig) for sig in interrupt.EXIT_STATUS})
    return 0

  assert cli.run(main, cli.make_parser("t", "test"), []) == 0
  assert all(handler is interrupt._on_signal for handler in seen.values())
  assert {sig: signal.getsignal(sig) for sig in interrupt.EXIT_STATUS} == before
  assert signal.set_wakeup_fd(-1) == -1  # No wakeup fd left behind.


def test_writers_register_their_half_written_outputs(tmp_path):
  from vasa_jax import media
  from vasa_jax.data import records
  with media.atomic_output(str(tmp_path / "talk.mp4")) as tmp:
    assert interrupt._paths.get(tmp) == os.getpid()
  assert tmp not in interrupt._paths and os.listdir(tmp_path) == ["talk.mp4"]
  with records.CorpusWriter(str(tmp_path / "corpus"), resolution=32, fps=25) as writer:
    folder = os.path.abspath(writer._tmp_dir)
    assert interrupt._paths.get(folder) == os.getpid()
  assert folder not in interrupt._paths
