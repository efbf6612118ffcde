"""The example notebook (examples/quickstart.ipynb) runs from top to bottom on the current code: it trains the tiny
demo through the Python API, loads the run, predicts on arrays, exports and reloads (its last cell asserts the
reloaded model's scores equal the run's to the last bit)."""

from __future__ import annotations

import pytest

from conftest import ROOT


@pytest.mark.slow  # a kernel, and a tiny training run (about half a minute)
def test_the_quickstart_notebook_runs(tmp_path, monkeypatch):
    # the kernel inherits the environment: the demo LM and the tiny data it makes stay out of the session's
    # directories (tests/test_pretrain.py expects the demo LM missing there)
    monkeypatch.setenv("DMPF_MODEL_DIR", str(tmp_path / "dmpf-models"))
    monkeypatch.setenv("DMPF_DATA_DIR", str(tmp_path / "dmpf-data"))
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")

    notebook = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")  # stored clean
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = {i: cell.outputs for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"}
    assert not [o for outs in outputs.values() for o in outs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") or str(o.get("data", {}).get("text/plain", "")) for outs in outputs.values()
                     for o in outs)
    assert "runs/notebook-demo" in text and "'MAE'" in text
    assert "model.safetensors" in text and "# DMPF trained on synthetic" in text
    assert (tmp_path / "exported" / "notebook-demo" / "config.json").is_file()
    assert (tmp_path / "runs" / "notebook-demo" / "results.json").is_file()
