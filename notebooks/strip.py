"""Strip notebooks before committing: no outputs, no execution counts, no saved widget state.

    python notebooks/strip.py                 # every notebook in notebooks/, in place
    python notebooks/strip.py path.ipynb ...  # the ones named
    python notebooks/strip.py --check         # change nothing; exit 1 and list those not stripped

Cell tags (the `parameters` tag among them) and the notebook's kernelspec stay. The JSON is written
the way JupyterLab writes it (nbformat, one-space indent), so a stripped notebook diffs cleanly.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Notebook metadata that a run or a frontend adds: widget state (it can hold typed values), and cell
# metadata recording execution times, scrolling and collapsing.
NOTEBOOK_KEYS = ("widgets",)
CELL_KEYS = ("execution", "collapsed", "scrolled", "jupyter", "ExecuteTime")


def stripped(notebook: dict) -> dict:
    """The notebook with outputs, execution counts and run-time metadata removed."""
    notebook = json.loads(json.dumps(notebook))  # a copy
    for key in NOTEBOOK_KEYS:
        notebook.get("metadata", {}).pop(key, None)
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        for key in CELL_KEYS:
            cell.get("metadata", {}).pop(key, None)
    return notebook


def dumps(notebook: dict) -> str:
    return json.dumps(notebook, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: every one in notebooks/)")
    parser.add_argument("--check", action="store_true", help="only report notebooks that need stripping")
    args = parser.parse_args(argv)
    paths = args.paths or sorted(HERE.glob("*.ipynb"))
    dirty = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        clean = stripped(json.loads(text))
        if clean == json.loads(text):
            continue
        dirty.append(path)
        if not args.check:
            path.write_text(dumps(clean), encoding="utf-8")
    for path in dirty:
        print(f"{'not stripped' if args.check else 'stripped'}: {path}")
    return 1 if args.check and dirty else 0


if __name__ == "__main__":
    sys.exit(main())
