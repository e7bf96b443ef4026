"""`teacher.engine: vllm-server`: the teacher behind vLLM OpenAI servers, outside the trainer's world.

Each student rank sends its micro-batch, one token-id prompt per sample (prompt + completion, the
padding left out), to the completions endpoint of its server (`endpoints[dp_rank % replicas]`)
with `prompt_logprobs: k` and `max_tokens: 1`, and builds the loss's `TopK` input from the answer:
[b, C, k] values (in `logits_dtype`) and int32 ids, the k most likely teacher tokens at each
completion position. Padded completion positions get zeros (the loss masks them out).

vLLM's prompt log-probs are log-softmax values at temperature 1 (its default `raw_logprobs`). The
loss renormalises the teacher's top-k at temperature T, log_softmax(values / T) over the k ids;
log-probs differ from the logits by one constant per token (log Z), which divides by T and cancels
in that softmax, so they are used as they come: the same loss as the in-process top-k teacher's
logits (tests/executor/test_vllm_teacher.py checks it against `TopKTeacher`).

The request runs in a thread: `request` returns at once and its `wait` blocks, so the server
scores micro-step k+1 while the student trains on k, as a disaggregated teacher rank does.

The servers are started outside the run (`planner export`, or by hand), as
`python -m vllm.entrypoints.openai.api_server --model REF --host HOST --port PORT
--tensor-parallel-size TP --max-logprobs K --max-model-len L [--enforce-eager on CPU]`.
"""

from __future__ import annotations

import time
import urllib.error
from concurrent.futures import ThreadPoolExecutor

import torch

from planner.executor.data import Batch
from planner.executor.loss import TopK
from planner.executor.served import endpoint_of, post, served_model

__all__ = ["Served", "endpoint_of", "served_model", "topk_from_answer"]


def topk_from_answer(answer: dict, prompts: list[list[int]], starts: list[int], width: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[b, width, k] log-probs (fp32) and ids from a completions answer: sample i's completion
    position j is prompt position starts[i] + j of its prompt_logprobs (entry t scores token t)."""
    b = len(prompts)
    values, ids = torch.zeros(b, width, k), torch.arange(k, dtype=torch.int32).repeat(b, width, 1)
    for choice in answer["choices"]:
        i = choice["index"]
        rows = choice["prompt_logprobs"]
        for j, t in enumerate(range(starts[i], len(prompts[i]))):
            best = sorted(((v["logprob"], int(tok)) for tok, v in rows[t].items()), reverse=True)[:k]  # k, or k+1 with the token itself
            if len(best) < k:
                raise RuntimeError(f"teacher server returned {len(best)} prompt log-probs, expected {k}; start it with --max-logprobs {k} or more")
            values[i, j] = torch.tensor([v for v, _ in best])
            ids[i, j] = torch.tensor([t for _, t in best], dtype=torch.int32)
    return values, ids


class Served:
    """The student rank's side of a served teacher: `request(batch)` -> wait() -> `TopK`."""

    def __init__(self, base: str, k: int, dtype: torch.dtype, device: torch.device, timeout_s: float = 600.0):
        self.base, self.k, self.dtype, self.device, self.timeout = base.rstrip("/"), k, dtype, device, timeout_s
        self.model_id = served_model(self.base, wait_s=30.0)
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="teacher-http")
        self.seconds = 0.0  # time spent in HTTP round trips (overlapping the student's work)

    def request(self, batch: Batch):
        width = batch.completion_len
        ids, mask = batch.input_ids.cpu(), batch.attention_mask.cpu().bool()
        prompts, starts = [], []
        for i in range(ids.shape[0]):
            real = ids[i][mask[i]].tolist()  # left-padded prompt, right-padded completion: the real tokens are contiguous
            n_comp = int(mask[i, batch.prompt_len:].sum())
            prompts.append(real)
            starts.append(len(real) - n_comp)
        body = {"model": self.model_id, "prompt": prompts, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": self.k}
        future = self.pool.submit(self._ask, body, prompts, starts, width)

        def wait() -> TopK:
            values, idx = future.result()
            return TopK(values.to(self.device, self.dtype), idx.to(self.device))
        return wait

    def _ask(self, body, prompts, starts, width):
        t0 = time.perf_counter()
        try:
            answer = post(f"{self.base}/v1/completions", body, self.timeout)
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"teacher server {self.base}: HTTP {e.code}: {e.read()[:500]!r}") from None
        out = topk_from_answer(answer, prompts, starts, width, self.k)
        self.seconds += time.perf_counter() - t0
        return out

    def close(self) -> None:
        self.pool.shutdown(wait=True)

