"""`planner run --rollout-url`: the dedicated rollout servers' addresses, checked before any process
meets the others (one line each, no traceback); the run itself is tests/executor/test_vllm_dedicated.py."""

import pytest
import yaml

from planner.cli import app


def _plan(root, tmp_path, dedicated: bool):
    """One trainer rank (both models); with `dedicated`, its rollout on the second GPU."""
    d = yaml.safe_load((root / "examples" / "tiny-replicate-ddp.yaml").read_text())
    d["teacher"]["ranks"] = d["student"]["ranks"] = [0]
    d["workload"] |= {"lmbda": 1.0, "global_batch": d["micro_batch"] * d["grad_accum"]}
    if dedicated:
        d["rollout"] = {"engine": "vllm", "placement": "dedicated", "ranks": [1]}
    else:
        d["gpus_per_node"] = 1
    path = tmp_path / ("dedicated.yaml" if dedicated else "colocated.yaml")
    path.write_text(yaml.safe_dump(d))
    return path


@pytest.mark.parametrize("dedicated, urls, words", [
    (True, [], "rollout.endpoints: dedicated rollout needs its vLLM servers' URLs; give --rollout-url"),
    (True, ["127.0.0.1:8000"], "--rollout-url: 127.0.0.1:8000: give a base URL, http://HOST:PORT"),
    (False, ["http://127.0.0.1:8000"], "--rollout-url: the plan's rollout.placement is colocated"),
])
def test_rollout_urls_are_checked_in_one_line(runner, root, tmp_path, dedicated, urls, words):
    args = ["run", str(_plan(root, tmp_path, dedicated)), "--steps", "1", "--random-init"]
    for u in urls:
        args += ["--rollout-url", u]
    r = runner.invoke(app, args)
    assert r.exit_code == 1, (r.exception, r.stderr)
    assert r.stderr.count(words) == 1 and "Traceback" not in r.stderr, r.stderr
