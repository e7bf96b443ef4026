"""The executor: run GKD training with exactly a plan's partitioning (`planner run PLAN` under torchrun).

A thin PyTorch program, one file per concern:

- `groups`: process groups and each rank's role, from the plan's rank lists;
- `build`: model configs, seeded random models (`--random-init`) and the tokenizer;
- `weights`: load a local safetensors checkpoint onto a meta-built model, only this rank's part;
- `models`: each rank's teacher and student, built, placed and loaded in the strategy's order;
- `recompute`: the workload's attention kernel and activation recomputation;
- `dataset`: a local JSONL, Parquet or `save_to_disk` dataset, read with `datasets`, as token rows;
- `data`: micro-batches padded to their longest sample, from those rows or synthetic seeded prompts;
- `generate`: on-policy student completions (with a KV cache unless the workload turns it off);
- `loss`: the generalized Jensen-Shannon divergence of GKD, in sequence chunks (full logits or renormalised top-k);
- `topk`: `teacher_output: topk`, the teacher's top-k values and indices instead of its logits;
- `cache`, `cache_pass`: `teacher_output: cached`, the teacher's top-k written once to disk and read back;
- `teacher`: replicate, shard (FSDP2), pipeline (torch.distributed.pipelining), remote (disaggregated);
- `student`: ddp, zero1 (ZeroRedundancyOptimizer), zero2 / zero3 / hsdp (FSDP2);
- `loop`: the training loop; `checkpoint`: torch.distributed.checkpoint; `metrics`: what is measured;
- `reference`: the same training in one process, no torch.distributed, for the tests.

The executor holds no cost logic: it only reads the plan.
"""
