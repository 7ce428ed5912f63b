"""Every notebook in notebooks/ runs top to bottom without a cell error, and is committed without outputs.

Parametrized over the files, so a new notebook is tested as soon as it exists. The kernel starts in the repo
root (the notebooks also put the checkout on sys.path themselves, for a Jupyter started in notebooks/).
"""

import pathlib

import pytest

nbformat = pytest.importorskip("nbformat", reason="notebook tests need the notebooks extra (nbformat)")
nbclient = pytest.importorskip("nbclient", reason="notebook tests need the notebooks extra (nbclient)")

REPO = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path):
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    )
    client.execute()  # raises CellExecutionError (with the cell and its traceback) on the first failing cell


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (
                f"{path.name} cell {index} has outputs; clear them before committing "
                "(in Jupyter: Edit > Clear Outputs of All Cells)"
            )
