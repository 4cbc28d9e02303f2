"""Every notebook is thin: one literal `parameters` cell, short cells, no logic, no outputs."""

import ast
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
MAX_CODE_CELLS = 14
MAX_CELL_LINES = 15


def _code_cells(path):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_shape(path):
    cells = _code_cells(path)
    tagged = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    names = set()
    for node in ast.parse(tagged[0].source).body:
        assert isinstance(node, ast.Assign | ast.AnnAssign), "parameters cell holds assignments only"
        value = node.value
        ast.literal_eval(value)  # literals only: raises otherwise
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names.update(t.id for t in targets)
    assert {"output_dir", "seed"} <= names
    assert len(cells) <= MAX_CODE_CELLS
    for cell in cells:
        assert not cell.get("outputs"), "stored without outputs"
        assert cell.get("execution_count") is None
        assert len(cell.source.splitlines()) <= MAX_CELL_LINES, cell.source[:80]
        for node in ast.walk(ast.parse(cell.source)):
            assert not isinstance(node, ast.FunctionDef | ast.ClassDef), "no def/class in notebooks"
