"""One rank of the colocated-TP check: a `VllmColocated` engine of tp 2 over both ranks; rank 0 asks
for prompt A (seed 11), rank 1 for prompt B (seed 22) and A again (seed 11): each rank gets its own
requests back (rank 1's second completion is rank 0's first, a wrong slice is not).

Usage: torchrun --nproc-per-node 2 tests/executor/vllm_tp_group.py OUT_PREFIX (writes OUT_PREFIX.RANK.json).
"""

import json
import sys

if __name__ == "__main__":  # vLLM's engine may start processes
    import torch
    import torch.distributed as dist

    from planner.executor.build import build_model
    from planner.executor.data import Batch
    from planner.executor.rollout.vllm_engine import VllmColocated
    from planner.inputs.load import load_model

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = build_model("tiny-student", load_model("tiny-student"), "fp32", 3)  # seeded: the same weights on both ranks
    engine = VllmColocated(model, 64, "fp32", torch.device("cpu"), 0, 2, 0.5, 2)
    A, B = [5, 6, 7, 8], [9, 10, 11, 12]
    prompts = [A] if rank == 0 else [B, A]
    seeds = [11] if rank == 0 else [22, 11]
    # prompt + 6 completion slots, as the executor's data hands a batch to the engine
    batches = [Batch(torch.tensor([p + [0] * 6]), torch.ones(1, 10, dtype=torch.long), torch.zeros(1, 6, dtype=torch.long)) for p in prompts]
    done = engine.generate_many(batches, 1.0, seeds)
    out = {"completions": [b.input_ids[0, 4:].tolist() for b in done], "prompts": [b.input_ids[0, :4].tolist() for b in done]}
    with open(f"{sys.argv[1]}.{rank}.json", "w") as f:
        json.dump(out, f)
    dist.barrier()
    dist.destroy_process_group()
