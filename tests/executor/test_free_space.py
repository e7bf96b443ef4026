"""Before the first step the run checks that its disk holds what it will write (issue 25 item 1):
the final save (the student's state dict) and two checkpoints at once; folders on one disk fit
together. `planner.executor.loop.train` calls it with the built student's sizes."""

import shutil

import pytest

pytest.importorskip("torch")

from planner.executor import save  # noqa: E402
from planner.inputs.errors import InputError  # noqa: E402


def test_a_disk_too_small_is_one_line_naming_the_flag_and_both_figures(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(InputError) as e:
        save.check_free_space([("--output-dir", tmp_path / "out", free + 10**9)])
    line = str(e.value)
    assert "\n" not in line and line.startswith(f"--output-dir: {tmp_path / 'out'}: ") and "GB free on its disk" in line


def test_folders_on_one_disk_must_fit_together(tmp_path):
    half = shutil.disk_usage(tmp_path).free * 0.6
    save.check_free_space([("--output-dir", tmp_path / "out", int(half))])  # alone it fits
    with pytest.raises(InputError, match="--output-dir: .* and --checkpoint-dir "):
        save.check_free_space([("--output-dir", tmp_path / "out", int(half)), ("--checkpoint-dir", tmp_path / "ckpt" / "deep", int(half))])


def test_a_folder_not_made_yet_is_measured_on_its_nearest_parent(tmp_path):
    save.check_free_space([("--checkpoint-dir", tmp_path / "a" / "b" / "c", 1)])
    assert not (tmp_path / "a").exists()  # nothing is created


def test_state_bytes_counts_every_parameter_in_its_dtype():
    import torch
    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2, bias=False).to(torch.bfloat16))
    assert save.state_bytes(m) == (3 * 4 + 4) * 4 + 4 * 2 * 2


@pytest.mark.slow
def test_a_run_whose_output_disk_is_too_small_stops_before_the_first_step(tmp_path):
    """On a 1 MiB tmpfs (the tiny student's state is 3.5 MB) `planner run` stops in one line naming
    --output-dir, before any step: no metrics, nothing written there. Needs a tmpfs mount (root)."""
    import subprocess

    from executor_helpers import tiny_plan, torchrun

    disk = tmp_path / "small"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (not root): the check itself is tested above")
    try:
        plan = tiny_plan(tmp_path, "replicate-ddp")
        res = torchrun(["-m", "planner", "run", str(plan), "--steps", "2", "--random-init", "--no-progress",
                        "--output-dir", str(disk / "out"), "--metrics-out", str(tmp_path / "m.json")], check=False)
        assert res.returncode != 0
        lines = [x for x in res.stderr.splitlines() if "--output-dir" in x and "free on its disk" in x]
        assert len(lines) == 1, res.stderr[-2000:]
        assert not (tmp_path / "m.json").exists() and not any(p for p in disk.iterdir() if not p.name.endswith(".kd-planner.lock"))
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
