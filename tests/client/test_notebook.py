"""The notebook tour (``docs/notebook-tour.ipynb``) runs cell by cell in a real Jupyter
kernel against a live portal with a real worker; any cell's error fails the test."""

from __future__ import annotations

import nbformat
from nbclient import NotebookClient

from tests.conftest import ROOT, api_token, make_user

TOUR = ROOT / "docs" / "notebook-tour.ipynb"


def outputs_text(cell) -> str:
    """What a cell printed or showed, as text (plain and HTML)."""
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        data = out.get("data", {})
        parts += [data.get("text/plain", ""), data.get("text/html", "")]
    return "\n".join(parts)


def test_the_notebook_tour_runs_against_a_live_portal(live, celery_worker, monkeypatch, tmp_path):
    # a physicist who is also an operator: the tour ends by reading provenance
    tourist = make_user("tourist", ["physicist", "operator"])
    monkeypatch.setenv("DSS_URL", live.url)
    monkeypatch.setenv("DSS_TOKEN", api_token(tourist))
    # the kernel imports this checkout's dss, whatever the venv has installed
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = nbformat.read(TOUR, as_version=4)
    assert not any(c.get("outputs") for c in notebook.cells if c.cell_type == "code"), (
        "the tour is kept without outputs"
    )
    NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()  # a cell that raises fails here, naming the cell and the error

    code = [c for c in notebook.cells if c.cell_type == "code"]
    shown = [outputs_text(c) for c in code]
    assert "user.tourist." in shown[0]
    assert "1,413 of 2,421 events (58.4%) pass n_muon >= 2" in shown[1]
    assert "bad_selection 11" in shown[2]
    assert any(o.get("data", {}).get("image/png") for o in code[3]["outputs"]), "no plot"
    assert "succeeded" in shown[4] and "1,413 of 1,413 events written" in shown[4]
    assert "adler32:" in shown[5]
    assert "('n_muon >= 3', " in shown[6] and "('n_muon >= 4', " in shown[6]
    assert "1413" in shown[7]
    assert "n_muon >= 2" in shown[8] and "activity" in shown[8]
