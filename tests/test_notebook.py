"""notebooks/colab.ipynb runs, on CPU with the demo bundle: every cell but the install cell (tagged
`install`; the test runs against this checkout), and the video it makes carries the watermark."""

import os

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbclient/nbformat are in the test extra")
nbclient = pytest.importorskip("nbclient")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_colab_notebook_runs_on_cpu(tmp_path, monkeypatch):
  nb = nbformat.read(os.path.join(REPO, "notebooks", "colab.ipynb"), as_version=4)
  install = [c for c in nb.cells if "install" in c.get("metadata", {}).get("tags", [])]
  assert len(install) == 1 and "vasa_jax[cuda]" in install[0].source
  nb.cells = [c for c in nb.cells if c not in install]
  monkeypatch.setenv("PYTHONPATH", REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("VASA_JAX_STEPS", "4")
  nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                          resources={"metadata": {"path": str(tmp_path)}}).execute()
  out = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
  assert "watermark: FOUND" in out, out[-2000:]
  assert (tmp_path / "talk.mp4").stat().st_size > 10_000
  html = [o for c in nb.cells for o in c.get("outputs", []) if "text/html" in o.get("data", {})]
  assert html and "data:video/mp4;base64," in html[-1]["data"]["text/html"]
