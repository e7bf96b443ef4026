"""Run every notebook in notebooks/ and save it with its outputs, so that a reader sees the tables
and maps without running anything (GitHub renders them).

    .venv/bin/python scripts/render_notebooks.py            # all of them
    .venv/bin/python scripts/render_notebooks.py what_if    # one

tests/notebooks/test_notebooks.py runs each notebook again and fails when the text it prints no
longer matches what is committed: after a change to the cost model or the search, run this script
and commit the notebooks. Images are kept from this run but not compared (they differ by
matplotlib version); the text beside them is.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import nbclient
import nbformat

ROOT = Path(__file__).resolve().parents[1]


def execute(path: Path, workdir: Path):
    """The notebook at `path`, executed in `workdir` (where it writes its images)."""
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    for cell in nb.cells:  # no run-specific metadata in git (execution times, counts), no warnings
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.execution_count = None
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
            for out in cell.outputs:
                if "execution_count" in out:
                    out.execution_count = None
    return nb


def main(names: list[str]) -> None:
    paths = sorted((ROOT / "notebooks").glob("*.ipynb"))
    for path in [p for p in paths if not names or p.stem in names]:
        with tempfile.TemporaryDirectory() as tmp:
            nbformat.write(execute(path, Path(tmp)), path)
        print(f"wrote {path.relative_to(ROOT)} with its outputs")


if __name__ == "__main__":
    main(sys.argv[1:])
