"""Every Colab tutorial runs top to bottom (smoke settings), so that none can rot."""

import glob
import os

import nbclient
import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "colab", "*.ipynb")))


def test_there_are_four_tutorials():
  assert [os.path.basename(p)[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
  # The notebooks read these: tiny settings, this checkout, and a scratch directory for runs.
  monkeypatch.setenv("METALEARN_SMOKE", "1")
  monkeypatch.setenv("METALEARN_REPO", ROOT)
  monkeypatch.setenv("METALEARN_RUNS", str(tmp_path))
  # The kernel inherits the tests' compilation cache (tests/conftest.py sets it in the
  # environment): the smoke train steps the notebooks build are compiled once.
  notebook = nbformat.read(path, as_version=4)
  assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
      "commit notebooks without outputs"
  client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                   resources={"metadata": {"path": os.path.dirname(path)}})
  client.execute()
