"""Every notebook runs top to bottom, and the outputs committed with it are what it prints now
(scripts/render_notebooks.py writes them)."""

import importlib.util
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
_spec = importlib.util.spec_from_file_location("render_notebooks", ROOT / "scripts" / "render_notebooks.py")
render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render)


def text_outputs(nb) -> list[list[tuple[str, str]]]:
    """Per code cell, what it printed (stdout, however the kernel chunked it) and displayed as text
    (images and warnings on stderr left out)."""
    cells = []
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        printed = "".join(o.text for o in c.get("outputs", []) if o.output_type == "stream" and o.name == "stdout")
        outs = [("stdout", printed)] if printed else []
        for o in c.get("outputs", []):
            if o.output_type == "stream":
                continue
            elif o.output_type in ("execute_result", "display_data"):
                outs += [(k, v if isinstance(v, str) else "".join(v)) for k, v in sorted(o.data.items()) if not k.startswith("image/")]
            else:
                outs.append((o.output_type, o.get("ename", "")))
        cells.append(outs)
    return cells


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_its_committed_outputs_are_current(path, tmp_path):
    committed = nbformat.read(path, as_version=4)
    nb = render.execute(path, tmp_path)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    fresh = text_outputs(nb)
    assert any(fresh), "the notebook prints nothing"
    assert text_outputs(committed) == fresh, f"{path.name}: committed outputs are stale; run scripts/render_notebooks.py {path.stem}"


def test_notebooks_define_no_formulas():
    for path in NOTEBOOKS:
        src = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        assert "import sympy" not in src and "def flops" not in src and "lambdify" not in src
