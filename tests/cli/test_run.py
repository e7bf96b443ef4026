"""`planner run` and `validate --run` without the executor's packages: one line with the install hint."""

import os
import subprocess
import sys

import yaml

from planner.cli import app

HINT = "pip install 'kd-planner[executor]'"


def _one_process_plan(root, tmp_path):
    d = yaml.safe_load((root / "examples" / "tiny-replicate-ddp.yaml").read_text())
    d |= {"gpus_per_node": 1, "grad_accum": d["workload"]["global_batch"] // d["micro_batch"]}
    d["teacher"]["ranks"] = d["student"]["ranks"] = [0]
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def test_run_without_transformers_prints_the_install_hint(root, tmp_path):
    """A `transformers` that fails to import comes first on the path (as if it were not installed)."""
    fake = tmp_path / "fake" / "transformers"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'transformers'\", name='transformers')\n")
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(fake.parent), str(root)])}
    done = subprocess.run([sys.executable, "-m", "planner", "run", str(_one_process_plan(root, tmp_path)), "--steps", "1"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and HINT in done.stderr and "transformers" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_validate_run_without_transformers_prints_the_install_hint(runner, root, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` raises ImportError
    r = runner.invoke(app, ["validate", str(_one_process_plan(root, tmp_path)), "--run"])
    assert r.exit_code == 1 and not isinstance(r.exception, Exception), r.exception
    assert HINT in r.stderr and "transformers" in r.stderr
