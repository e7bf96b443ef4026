"""One rank of the tp-families check: tiny Qwen2 (q/k/v biases), Qwen3 (per-head q/k norms) and
tied-embedding Llama models split tp:2 by `planner.executor.tensor_parallel`; each rank's completion
logits and shard-wise top-k against the same model whole, in this process.

Usage: torchrun --nproc-per-node 2 tests/executor/tp_families.py OUT_PREFIX (writes OUT_PREFIX.RANK.json).
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config, Qwen3Config

from planner.executor.data import Batch
from planner.executor.teacher import completion_logits
from planner.executor.tensor_parallel import TensorParallel

dist.init_process_group("gloo")
rank = dist.get_rank()
mesh = init_device_mesh("cpu", (2,))
common = dict(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
out = {}
for name, config in (("qwen2", Qwen2Config(**common)), ("qwen3", Qwen3Config(**common, head_dim=32)),
                     ("llama-tied", LlamaConfig(**common, tie_word_embeddings=True))):
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval().requires_grad_(False)
    ids = torch.randint(0, 512, (4, 16), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[:2, :4] = 0  # rank 0's rows: 4-token prompts, left-padded to the plan's 8
    with torch.no_grad():
        want = completion_logits(model, ids, mask, 8)[2 * rank:2 * rank + 2]  # this rank's 2 rows of the group's 4
    tp = TensorParallel(model, torch.device("cpu"), 8, mesh, 8)
    # each rank's micro-batch padded to its own longest sample (as the executor's data does): rank 0 has
    # 4-token prompts, rank 1 6-token completions; the group must still agree on one shape
    rows = slice(2 * rank, 2 * rank + 2)
    mine = (Batch(ids[rows, 4:], mask[rows, 4:], ids[rows, 8:]) if rank == 0 else
            Batch(ids[rows, :14], mask[rows, :14], ids[rows, 8:14]))
    if rank == 1:
        want = want[:, :6]
    got, top = tp.request(mine)(), tp.request_topk(mine, 16)()
    values, indices = want.topk(16, dim=-1)
    out[name] = {"logits": (got - want).abs().max().item(), "topk_values": (top.values - values).abs().max().item(),
                 "topk_indices_equal": torch.equal(top.indices.long(), indices)}
Path(f"{sys.argv[1]}.{rank}.json").write_text(json.dumps(out))
dist.barrier()  # no rank closes its connections while a peer still reads (see executor_helpers.torchrun)
dist.destroy_process_group()
