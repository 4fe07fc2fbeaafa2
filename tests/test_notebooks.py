"""The notebooks as committed: the expected set, each stripped (no outputs, no execution counts, no saved
widget state) and set up to run under nbmake. Running them is nbmake's job (`pytest --nbmake notebooks`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXPECTED = {
    "01_quickstart.ipynb",
    "02_finetune_lora.ipynb",
    "03_qlora_and_sft.ipynb",
    "04_evaluate_providers.ipynb",
    "05_service.ipynb",
    "06_evaluate.ipynb",
    "07_preference.ipynb",
}


def _load(name: str) -> dict:
    return json.loads((NOTEBOOKS / name).read_text(encoding="utf-8"))


def test_the_notebooks_are_the_seven_documented():
    assert {p.name for p in NOTEBOOKS.glob("*.ipynb")} == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_is_committed_stripped(name):
    notebook = _load(name)
    assert notebook["nbformat"] == 4
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    assert "widgets" not in notebook["metadata"], "saved widget state: run notebooks/strip.py"
    for index, cell in enumerate(notebook["cells"]):
        where = f"{name} cell {index}: run notebooks/strip.py"
        assert "widgets" not in cell.get("metadata", {}), where
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], where
            assert cell["execution_count"] is None, where


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_opens_with_a_description_then_parameters(name):
    cells = _load(name)["cells"]
    assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# ")
    code = [c for c in cells if c["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"].get("tags", []), f"{name}: the first code cell is PARAMETERS"
    source = "\n".join("".join(c["source"]) for c in code)
    assert "WORKBENCH_HOME" in source, f"{name} must keep its state in its own home"
