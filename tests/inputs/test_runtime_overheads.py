"""Framework overheads live in the runtime, per backend; topologies hold hardware only."""

from planner.cost.bind import job_values
from planner.inputs.cluster import MOVED_TO_RUNTIME
from planner.inputs.load import bundled_dir, bundled_names, load_cluster, load_job, load_runtime
from planner.inputs.runtime import Overheads, Runtime
from planner.inputs.yamlio import read_mapping


def test_no_bundled_topology_carries_a_framework_overhead():
    for name in bundled_names("topologies"):
        data = read_mapping(bundled_dir("topologies") / f"{name}.yaml")
        assert not set(MOVED_TO_RUNTIME) & set(data["gpu"]), name
        load_cluster(name)


def test_the_backend_picks_the_overheads():
    """cpu-local (gloo) gets the CPU-fitted overheads of the runtime; a GPU topology (nccl) none."""
    job, rt = load_job("tiny-cpu"), load_runtime("kd-planner")
    cpu, gpu = job_values(job, load_cluster("cpu-local"), rt), job_values(job, load_cluster("dgx-h100"), rt)
    assert cpu["ov"] == rt.overheads_on("gloo").layer_overhead_us * 1e-6 > 0
    assert gpu["ov"] == gpu["ov_pp"] == gpu["ov_sh"] == gpu["ov_shb"] == 0.0
    assert gpu["ov_dec"] == rt.generation.layer_overhead_us * 1e-6  # decode's host time: the engine's, unless the backend says
    assert rt.overheads_on("nccl") == Overheads()


def test_every_overhead_is_described_in_the_schema():
    schema = Runtime.model_json_schema()
    assert "overheads" in schema["properties"]
    props = schema["$defs"]["Overheads"]["properties"]
    assert set(props) == set(Overheads.model_fields) and all(p.get("description") for p in props.values())
