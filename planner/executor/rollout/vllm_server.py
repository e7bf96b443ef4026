"""`rollout.engine: vllm`, `placement: dedicated`: vLLM OpenAI servers of the student, on GPUs of
their own outside the trainer's torch.distributed world, generate its on-policy completions.

- Servers: started outside the run (`planner export`, or by hand) as
  `VLLM_SERVER_DEV_MODE=1 python -m vllm.entrypoints.openai.api_server --model STUDENT ...
  --worker-extension-cls planner.executor.rollout.vllm_reload.Reload` (the extension reloads
  weights from a file; dev mode serves `/collective_rpc`, through which the trainer calls it, and
  `/reset_prefix_cache`). Student rank i asks replica `endpoints[i % replicas]`.
- Generation: one `/v1/completions` request per sample (so each sample draws with its own seed, as
  in the colocated engine: (seed of its micro-step) + its index), all of the step's on-policy
  samples in flight at once (the server batches them continuously): the prompt's token ids
  (padding removed), `max_tokens` = `min_tokens` = completion_len, `ignore_eos`, the loss
  temperature, top_p 1, top_k 0 (none), `return_token_ids` for the generated ids.
- Refresh: before a rollout that follows an optimizer step, every student rank gathers the full
  state dict (a collective where the student is sharded); the first student rank writes it as one
  safetensors file into a folder beside the run (a temporary folder on this node, or
  `KD_PLANNER_ROLLOUT_WEIGHTS_DIR`, which must be a folder the servers can read: on several nodes a
  shared file system), asks every server to reload it in place and to drop its prefix cache (KV
  blocks computed with the old weights), and the student ranks meet at a barrier, so no rank
  generates with the old weights. The first rollout refreshes too: the server loaded the
  checkpoint (or dummy weights under `--random-init`), not the trainer's weights. Timed as
  `weight_sync`.
"""

from __future__ import annotations

import os
import tempfile
import time
import urllib.error
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.distributed as dist

from planner.executor.data import IGNORE, Batch
from planner.executor.rollout.vllm_reload import EXTENSION
from planner.executor.served import endpoint_of, post, served_model


class VllmDedicated:
    """This student rank's client of the rollout servers; `refresh` and `generate_many` as `VllmColocated`."""

    def __init__(self, endpoints: list[str], dp_rank: int, group: dist.ProcessGroup | None, timeout_s: float = 600.0,
                 concurrency: int = 64):
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.base = endpoint_of(self.endpoints, dp_rank)
        self.model_id = served_model(self.base, wait_s=30.0, role="rollout")
        self.pusher, self.group, self.timeout = dp_rank == 0, group, timeout_s
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="rollout-http")
        self.folder = tempfile.TemporaryDirectory(prefix="planner-rollout-weights-", dir=os.environ.get("KD_PLANNER_ROLLOUT_WEIGHTS_DIR")) \
            if self.pusher else None
        self.stale = True  # the servers hold the checkpoint's weights, not (yet) the trainer's
        self.sync_s = 0.0
        self.reloads = 0  # first student rank: the servers' own count of reloads (the extension's), after the last refresh

    def _post(self, base: str, route: str, body: dict) -> dict:
        try:
            return post(f"{base}{route}", body, self.timeout)
        except urllib.error.HTTPError as e:
            hint = " (start the server with VLLM_SERVER_DEV_MODE=1 and --worker-extension-cls " + EXTENSION + ")" \
                if route in ("/collective_rpc", "/reset_prefix_cache") and e.code == 404 else ""
            raise RuntimeError(f"rollout server {base}{route}: HTTP {e.code}: {e.read()[:500]!r}{hint}") from None

    def refresh(self, model: torch.nn.Module) -> float:
        """Push the trainer's current weights to every server; seconds taken (every student rank waits for it)."""
        from safetensors.torch import save_file

        from planner.executor.rollout.vllm_engine import full_state_dict

        t0 = time.perf_counter()
        inner = model.module if hasattr(model, "module") else model
        state = full_state_dict(inner)  # every student rank: a collective when the student is sharded
        if self.pusher:
            path = Path(self.folder.name) / "model.safetensors"
            save_file({k: v.detach().to("cpu").contiguous() for k, v in state.items()}, str(path))
            self.reloads = min(self.pool.map(lambda base: self._reload(base, path), self.endpoints))  # the replicas at once
            path.unlink()
        del state
        if self.group is not None and dist.is_initialized():
            dist.barrier(group=self.group)
        self.stale = False
        dt = time.perf_counter() - t0
        self.sync_s += dt
        return dt

    def _reload(self, base: str, path: Path) -> int:
        """One server reloads the file (each of its tp workers) and drops its prefix cache; its reload count."""
        answer = self._post(base, "/collective_rpc", {"method": "planner_reload", "args": [str(path)]})
        self._reset_prefix_cache(base)
        return min(int(c) for c in answer["results"])  # one per worker, as strings

    def _reset_prefix_cache(self, base: str, tries: int = 10) -> None:
        """Drop the server's cached KV blocks (computed with the old weights); vLLM refuses while blocks
        are held by running requests (none should run between steps), so retry briefly, then fail."""
        for _ in range(tries):
            if self._post(base, "/reset_prefix_cache", {}).get("success", True):
                return
            time.sleep(0.5)
        raise RuntimeError(f"rollout server {base}: /reset_prefix_cache did not succeed after {tries} tries; its cached KV "
                           "blocks would be of the old weights (is another client generating on it?)")

    def generate(self, batch: Batch, temperature: float, seed: int) -> Batch:
        return self.generate_many([batch], temperature, [seed])[0]

    def generate_many(self, batches: list[Batch], temperature: float, seeds: list[int]) -> list[Batch]:
        """Each batch with its completion from this rank's server; sample i of a batch draws with
        seed (its seed + i), as `VllmColocated.generate_many`."""
        futures = []
        for batch, seed in zip(batches, seeds, strict=True):
            ids, mask = batch.input_ids[:, :batch.prompt_len], batch.attention_mask[:, :batch.prompt_len]
            n = batch.completion_len
            for i in range(ids.shape[0]):
                body = {"model": self.model_id, "prompt": ids[i][mask[i].bool()].tolist(), "max_tokens": n, "min_tokens": n,
                        "ignore_eos": True, "temperature": temperature, "top_p": 1.0, "top_k": 0, "seed": (seed + i) % (2**63),
                        "return_token_ids": True, "skip_special_tokens": False}
                futures.append(self.pool.submit(self._post, self.base, "/v1/completions", body))
        outs, done = iter(futures), []
        for batch in batches:
            ids, mask = batch.input_ids[:, :batch.prompt_len], batch.attention_mask[:, :batch.prompt_len]
            rows = []
            for _ in range(ids.shape[0]):
                tokens = next(outs).result()["choices"][0].get("token_ids")
                if tokens is None or len(tokens) != batch.completion_len:
                    raise RuntimeError(f"rollout server {self.base}: expected {batch.completion_len} generated token ids, got "
                                       f"{'none' if tokens is None else len(tokens)} (a vLLM without `return_token_ids`?)")
                rows.append(tokens)
            completion = torch.tensor(rows, dtype=ids.dtype, device=ids.device)
            new_mask = torch.cat([mask, torch.ones_like(completion)], dim=1)
            done.append(Batch(torch.cat([ids, completion], dim=1), new_mask, completion.masked_fill(completion < 0, IGNORE), batch.index))
        return done

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        if self.folder is not None:
            self.folder.cleanup()
